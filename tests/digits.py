"""scikit-learn's handwritten digits as PNG folders, read back through the project's own
preprocessing: the offline data set that judges a trained model (and its INT8 copies).

``load_digits()`` ships inside the scikit-learn wheel (1797 grey 8x8 images, 10 classes), so
nothing is downloaded. Images are written as files, not handed over as arrays, because
``twins-validate --images`` and INT8 calibration read files: training, the accuracy tests
and the tools then see the very same tensors (PIL's bilinear 8->32 resize included), and a
change to the preprocessing shows up as an accuracy change instead of passing unnoticed.

Layout of :func:`write_digits` (file names ``<dataset index>_<label>.png``)::

    root/train/  all 1347 images of the training split
    root/calib/  256 of them (a stratified, fixed subset): calibration never sees test images
    root/test/   the 450 held-out images
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from twins_deploy.preprocess import image_files, load_image_folder
from twins_deploy.registry import Preprocess, get_config

MODEL = "svt_t"
NUM_CLASSES = 10
TEST_SIZE = 450
CALIB_SIZE = 256
SEED = 0  # random_state of both splits


@dataclass(frozen=True)
class DigitsDirs:
    """The three image folders written by :func:`write_digits`."""

    root: Path
    train: Path
    calib: Path
    test: Path


def _dataset() -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 8, 8) as uint8 0..255 (sklearn's 0..16 scaled by 255/16) and labels (N,)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return np.round(x.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8), y.astype(np.int64)


def split_indices() -> dict[str, np.ndarray]:
    """Dataset indices of train (1347), calib (256, a subset of train) and test (450),
    sorted; stratified by label and fixed by ``SEED``."""
    from sklearn.model_selection import train_test_split

    _, y = _dataset()
    train, test = train_test_split(np.arange(len(y)), test_size=TEST_SIZE, stratify=y, random_state=SEED)
    calib, _ = train_test_split(train, train_size=CALIB_SIZE, stratify=y[train], random_state=SEED)
    return {"train": np.sort(train), "calib": np.sort(calib), "test": np.sort(test)}


def write_digits(root: str | os.PathLike[str]) -> DigitsDirs:
    """Write the three folders of PNGs (8x8, greyscale) under ``root``."""
    images, labels = _dataset()
    dirs = DigitsDirs(Path(root), Path(root, "train"), Path(root, "calib"), Path(root, "test"))
    for split, idx in split_indices().items():
        folder: Path = getattr(dirs, split)
        folder.mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(images[i]).save(folder / f"{i:05d}_{labels[i]}.png")
    return dirs


def label_of(path: str | os.PathLike[str]) -> int:
    """The label a file name carries (``00042_7.png`` -> 7)."""
    return int(Path(path).stem.rsplit("_", 1)[1])


def index_of(path: str | os.PathLike[str]) -> int:
    """The dataset index a file name carries (``00042_7.png`` -> 42)."""
    return int(Path(path).stem.rsplit("_", 1)[0])


def folder_labels(folder: str | os.PathLike[str]) -> np.ndarray:
    """Labels of a folder's images, in the sorted order the project's loaders read them."""
    return np.array([label_of(f) for f in image_files(folder)], dtype=np.int64)


def load_folder(folder: str | os.PathLike[str], pre: Preprocess | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A folder as the model sees it: ``x`` float32 (N, 3, 32, 32) from
    :func:`twins_deploy.preprocess.load_image_folder` (what ``twins-validate --images`` runs),
    and ``y`` int64 (N,) from the file names."""
    pre = pre or get_config(MODEL).preprocess
    x, names = load_image_folder(folder, pre.input_size[1:], pre)
    return x, np.array([label_of(n) for n in names], dtype=np.int64)
