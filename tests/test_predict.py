"""twins-predict: the manifest's preprocessing, the PyTorch model's top-5, ImageNet names."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from twins_deploy import create_model
from twins_deploy.cli.export import main as export_main
from twins_deploy.cli.predict import main as predict_main
from twins_deploy.predict import imagenet_labels, predict
from twins_deploy.preprocess import preprocess_image
from twins_deploy.registry import get_config

from helpers_export import photo_dir


@pytest.fixture(scope="module")
def fixed_batch_artifact(tmp_path_factory):
    """A fixed batch of 2: three photographs need a batch of 2 and one filled-up batch."""
    out = tmp_path_factory.mktemp("predict")
    assert export_main(["--model", "pcpvt_s", "--img-size", "64", "--batch", "2", "--seed", "3",
                        "--out-dir", str(out), "--no-validate", "-q"]) == 0
    return out / "pcpvt_s_fp32_64x64_b2.onnx", photo_dir(out)


def test_predictions_are_the_pytorch_models_top5(fixed_batch_artifact):
    path, photos = fixed_batch_artifact
    preds = predict(path, [photos])
    assert [p.image.rsplit("/", 1)[-1] for p in preds] == ["Minduka_Present_Blue_Pack.png", "grace_hopper.jpg",
                                                            "logo2.png"]
    model = create_model("pcpvt_s", seed=3)
    pre = get_config("pcpvt_s").preprocess
    for p in preds:
        with torch.no_grad():
            logits = model(torch.from_numpy(preprocess_image(p.image, (64, 64), pre)))[0].double()
        prob = torch.softmax(logits, 0).numpy()
        want = np.argsort(-prob)[:5]
        assert [c for c, _, _ in p.top] == want.tolist()
        assert [pr for _, pr, _ in p.top] == pytest.approx(prob[want].tolist(), abs=1e-5)
        assert [lab for _, _, lab in p.top] == [imagenet_labels()[i] for i in want]


def test_cli_prints_top_k_and_json(fixed_batch_artifact, capsys):
    path, photos = fixed_batch_artifact
    assert predict_main([str(path), str(photos / "grace_hopper.jpg"), "--top-k", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 1 and len(data[0]["top"]) == 3
    assert sum(t["probability"] for t in data[0]["top"]) <= 1.0
    assert predict_main([str(path), str(photos / "logo2.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("logo2.png") and len(lines) == 6 and "%" in lines[1]


def test_imagenet_labels_are_the_thousand_classes():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0].startswith("tench") and labels[207] == "golden retriever"
