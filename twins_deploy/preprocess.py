"""Images -> the model's input, as the manifest's preprocessing describes it (timm's eval
transform): used to validate on photographs and to run an artifact on images."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from twins_deploy.errors import ArtifactError, InputShapeError
from twins_deploy.registry import INTERPOLATIONS, Preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def normalise(images01: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> the model's normalised input."""
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((images01 - mean) / std).astype(np.float32)


def _resample(name: str) -> int:

    if name not in INTERPOLATIONS:
        raise InputShapeError(f"unknown interpolation {name!r} in the preprocessing (known: {', '.join(INTERPOLATIONS)})")
    return int(getattr(Image.Resampling, name.upper()))


def resized_size(image_hw: tuple[int, int], out_hw: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """The (H, W) timm's eval transform resizes an image to before its center crop.

    The target is ``floor(size / crop_pct)`` per side. For a square target timm uses
    torchvision's ``Resize(int)``: the short side becomes the target and the long side is
    *truncated* (``int(target * long / short)``). For a non-square target it uses its
    ``ResizeKeepRatio``: both sides divided by the smaller of the two ratios, *rounded*.
    """
    ih, iw = image_hw
    th, tw = (math.floor(s / crop_pct) for s in out_hw)
    if th == tw:
        if iw <= ih:
            return int(th * ih / iw), th
        return th, int(th * iw / ih)
    ratio = min(ih / th, iw / tw)
    return round(ih / ratio), round(iw / ratio)


def center_crop(arr: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """torchvision's ``CenterCrop`` on an (H, W, C) array: zero-pad a side that is too small
    (the extra pixel after), then crop at ``round((H - h) / 2)`` (Python's rounding)."""
    h, w = out_hw
    ih, iw = arr.shape[:2]
    if h > ih or w > iw:
        top, left = max(h - ih, 0), max(w - iw, 0)
        arr = np.pad(arr, ((top // 2, (top + 1) // 2), (left // 2, (left + 1) // 2), (0, 0)))
        ih, iw = arr.shape[:2]
    y, x = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
    return arr[y:y + h, x:x + w]


def image_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises on a file that is not a usable image: unknown formats, damaged data,
    and images over its pixel limit (``DecompressionBombError``: a small file that would
    decode to gigabytes), which is no ``OSError``."""

    return (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)


def preprocess_image(path: str | os.PathLike[str], hw: tuple[int, int], pre: Preprocess) -> np.ndarray:
    """timm's eval transform (crop mode "center"), pixel for pixel: RGB, resize by
    :func:`resized_size` with PIL, :func:`center_crop`, scale to [0, 1], normalise.
    Returns a (1, 3, H, W) float32 batch."""

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            size = resized_size((im.height, im.width), hw, pre.crop_pct)
            if size != (im.height, im.width):  # torchvision returns the image as is
                im = im.resize((size[1], size[0]), _resample(pre.interpolation))
            arr = center_crop(np.asarray(im), hw)
    except image_errors() as e:
        raise ArtifactError(f"cannot read image {str(path)!r}: {e}") from None
    images01 = np.ascontiguousarray(arr.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)
    return normalise(images01, pre)


def image_files(directory: str | os.PathLike[str], what: str = "--images") -> list[Path]:
    """The image files in ``directory`` (sorted, non-recursive); none is an error (``what``:
    the option that named the folder, for the message)."""
    d = Path(directory)
    if not d.is_dir():
        raise InputShapeError(f"{what} {str(d)!r} is not a directory")
    try:
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as e:
        raise InputShapeError(f"{what} {str(d)!r} cannot be read: {e.strerror or e}") from None
    if not files:
        raise InputShapeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {what} {str(d)!r}")
    return files


def check_image_folder(directory: str | os.PathLike[str], what: str = "--images") -> list[Path]:
    """The folder's images, each proven readable (header and structure, no decoding), so a
    bad file fails before any work instead of in the middle of validation."""

    files = image_files(directory, what)
    for f in files:
        try:
            with Image.open(f) as im:
                im.verify()
        except image_errors() as e:
            raise InputShapeError(f"cannot read image {str(f)!r}: {e}") from None
    return files


def load_image_folder(directory: str | os.PathLike[str], hw: tuple[int, int], pre: Preprocess,
                      limit: int | None = None) -> tuple[np.ndarray, list[str]]:
    """All images in ``directory`` (sorted, non-recursive) as one normalised batch."""
    files = image_files(directory)[:limit]
    return np.concatenate([preprocess_image(f, hw, pre) for f in files]), [f.name for f in files]
