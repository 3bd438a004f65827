"""Shared fixtures: timm reference models with every parameter randomised.

timm's own init leaves all biases at zero, which would hide window-padding mistakes
(padded tokens' keys/values equal the qkv bias), so every reference model here gets
random values everywhere from :func:`twins_deploy.randomize_` with its own seed.
"""
from __future__ import annotations

import functools

import pytest
import torch

from twins_deploy import Twins, get_config, randomize_

ALL_VARIANTS = ["pcpvt_s", "pcpvt_b", "pcpvt_l", "svt_s", "svt_b", "svt_l"]
REF_SEED = 1234


@functools.lru_cache(maxsize=2)
def timm_reference(name: str) -> torch.nn.Module:
    timm = pytest.importorskip("timm", reason="timm is the test-time reference (pip install .[test])")
    model = timm.create_model(get_config(name).timm_name, pretrained=False).eval()
    return randomize_(model, REF_SEED)


def ours_from(ref: torch.nn.Module, name: str, **kw) -> Twins:
    model = Twins(get_config(name), **kw).eval()
    sd = ref.state_dict()
    if kw.get("features"):
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    model.load_state_dict(sd, strict=True)
    return model


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def svt_s_triton_repo(tmp_path_factory):
    """``twins-export --model svt_s --triton-repo REPO`` (batch 1..4), once per test session:
    (artifact, repository) for the repository tests and the real-server tests."""
    from twins_deploy.cli.export import main as export_main

    root = tmp_path_factory.mktemp("triton")
    args = ["--model", "svt_s", "--min-batch", "1", "--opt-batch", "2", "--max-batch", "4",
            "--out-dir", str(root / "out"), "--triton-repo", str(root / "repo"), "-q"]
    assert export_main(args) == 0
    return root / "out" / "svt_s_fp32.onnx", root / "repo"


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """scikit-learn's digits as PNG folders (.train 1347, .calib 256 of train, .test 450;
    tests/digits.py), written once per session for every accuracy test."""
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn (pip install .[test])")
    from digits import write_digits

    return write_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def digits_model_path():
    """The committed svt_t checkpoint trained on the digits (tests/train_digits.py)."""
    from pathlib import Path

    return Path(__file__).parent / "data" / "svt_t_digits.safetensors"
