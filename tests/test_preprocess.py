"""Image preprocessing is timm's eval transform, pixel for pixel, without timm at run time."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from twins_deploy.preprocess import center_crop, preprocess_image, resized_size
from twins_deploy.registry import Preprocess, get_config

timm_factory = pytest.importorskip("timm.data.transforms_factory", reason="timm is the test-time reference")

# Image sizes with odd aspect ratios, both orientations, sizes below the crop (torchvision
# pads those), near-square off-by-one shapes, the three export sizes the tests use, and
# strips near the most elongated image read (50:1, preprocess.MAX_ASPECT_RATIO).
IMAGE_SIZES = [(224, 224), (300, 451), (451, 300), (257, 333), (100, 50), (50, 100), (640, 13), (13, 640),
               (249, 249), (250, 251)]
TARGETS = [(224, 224), (256, 320), (320, 256), (230, 301)]


def _timm(path, hw, pre: Preprocess) -> np.ndarray:
    t = timm_factory.transforms_imagenet_eval(img_size=hw, crop_pct=pre.crop_pct, crop_mode=pre.crop_mode,
                                              interpolation=pre.interpolation, mean=pre.mean, std=pre.std)
    with Image.open(path) as im:
        return t(im.convert("RGB")).numpy()[None]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}x{t[1]}")
def test_noise_images_match_timm_exactly(tmp_path, target):
    pre = get_config("svt_s").preprocess
    rng = np.random.default_rng(target[0])
    for ih, iw in IMAGE_SIZES:
        path = tmp_path / f"noise_{ih}x{iw}.png"  # noise: the worst case for any resampling difference
        Image.fromarray(rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)).save(path)
        ours, ref = preprocess_image(path, target, pre), _timm(path, target, pre)
        assert ours.shape == ref.shape == (1, 3, *target)
        assert np.abs(ours - ref).max() <= 1e-6, (ih, iw)


def test_photographs_and_other_modes_match_timm(tmp_path):
    import matplotlib.cbook as cbook

    pre = get_config("pcpvt_s").preprocess
    gray = tmp_path / "gray.png"
    Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("L").save(gray)
    for path in (cbook.get_sample_data("grace_hopper.jpg", asfileobj=False),
                 cbook.get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False),
                 cbook.get_sample_data("logo2.png", asfileobj=False), gray):  # RGBA, palette, grayscale
        for target in ((224, 224), (230, 301)):
            assert np.abs(preprocess_image(path, target, pre) - _timm(path, target, pre)).max() <= 1e-6


def test_resize_rules_are_torchvision_and_timm_ones():
    # square target: the long side is truncated (torchvision Resize(int)): 248 * 451 / 300 = 372.8
    assert resized_size((300, 451), (224, 224), 0.9) == (248, 372)
    assert resized_size((451, 300), (224, 224), 0.9) == (372, 248)
    # non-square target: both sides over the smaller ratio, rounded (timm ResizeKeepRatio)
    assert resized_size((300, 451), (256, 320), 0.9) == (284, 427)
    # crop at round((H - h) / 2) with Python's rounding, and zero padding when too small
    arr = np.arange(5 * 4 * 1).reshape(5, 4, 1)
    assert center_crop(arr, (2, 2))[..., 0].tolist() == [[9, 10], [13, 14]]  # rows from round(1.5) = 2, cols from 1
    padded = center_crop(np.ones((1, 1, 1)), (3, 2))
    assert padded[..., 0].tolist() == [[0, 0], [1, 0], [0, 0]]
