"""The trained test model (svt_t on scikit-learn's digits) and its data folders.

INT8 accuracy tests judge quantized copies against this checkpoint on these folders, so
both must stay what they were: the checkpoint loads strictly, its FP32 accuracy through the
project's preprocessing is the one recorded when it was trained (a drift in the image
pipeline shows up here first), calibration never sees a test image, and the split is fixed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from digits import CALIB_SIZE, NUM_CLASSES, TEST_SIZE, index_of, load_folder, write_digits
from twins_deploy import WeightsUnavailableError, count_params, create_model, get_config, list_models


def _hashes(folder: Path) -> dict[str, str]:
    return {hashlib.sha256(f.read_bytes()).hexdigest(): f.name for f in sorted(folder.iterdir())}


def test_checkpoint_loads_strictly(digits_model_path):
    model = create_model("svt_t", weights=digits_model_path, num_classes=NUM_CLASSES)
    assert model.weights_info.source == "file"
    assert count_params(model) == 620_778


def test_fp32_accuracy_matches_the_recorded_one(digits_dir, digits_model_path):
    with safe_open(str(digits_model_path), "pt") as f:
        meta = f.metadata()
    model = create_model("svt_t", weights=digits_model_path, num_classes=NUM_CLASSES)
    x, y = load_folder(digits_dir.test)
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    acc = float((pred == y).mean())
    assert len(y) == int(meta["test_size"]) == TEST_SIZE
    assert acc >= 0.9
    assert abs(acc - float(meta["fp32_test_top1"])) <= 0.005, (acc, meta["fp32_test_top1"])


def test_calibration_never_sees_a_test_image(digits_dir):
    calib, test, train = (_hashes(d) for d in (digits_dir.calib, digits_dir.test, digits_dir.train))
    assert len(calib) == CALIB_SIZE and len(test) == TEST_SIZE and len(train) == 1347
    assert not set(calib) & set(test)  # no shared content
    assert set(calib) <= set(train)  # calibration images come from the training split
    calib_idx = {index_of(n) for n in calib.values()}
    test_idx = {index_of(n) for n in test.values()}
    train_idx = {index_of(n) for n in train.values()}
    assert not calib_idx & test_idx and not train_idx & test_idx
    assert train_idx | test_idx == set(range(1797))


def test_split_is_stratified_and_deterministic(digits_dir, tmp_path):
    again = write_digits(tmp_path)
    for split in ("train", "calib", "test"):
        assert _hashes(getattr(again, split)) == _hashes(getattr(digits_dir, split)), split
    _, y = load_folder(digits_dir.test)
    counts = np.bincount(y, minlength=NUM_CLASSES)
    assert counts.min() >= 43 and counts.max() <= 46  # 450 over ~180 per class: 43..46 each


def test_svt_t_is_a_test_model_without_published_weights():
    assert "svt_t" not in list_models() and "svt_t" in list_models(include_test=True)
    assert get_config("svt_t").preprocess.input_size == (3, 32, 32)
    with pytest.raises(WeightsUnavailableError, match="svt_t .*no published weights.*--weights"):
        create_model("svt_t", pretrained=True)


def test_svt_t_matches_timm_keys():
    """ws == 1 is global attention in timm (q/kv keys), not 1x1 windows."""
    timm_twins = pytest.importorskip("timm.models.twins", reason="timm is the test-time reference")
    cfg = get_config("svt_t")
    ref = timm_twins.Twins(img_size=32, patch_size=4, embed_dims=cfg.embed_dims, depths=cfg.depths,
                           num_heads=cfg.num_heads, mlp_ratios=cfg.mlp_ratios, sr_ratios=cfg.sr_ratios,
                           wss=cfg.wss)
    ours = create_model("svt_t")
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert count_params(ours) == cfg.num_params
