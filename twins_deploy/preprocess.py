"""Images -> the model's input, as the manifest's preprocessing describes it (timm's eval
transform): used to validate on photographs and to run an artifact on images."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from twins_deploy.errors import ArtifactError, InputShapeError
from twins_deploy.registry import Preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def normalise(images01: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> the model's normalised input."""
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((images01 - mean) / std).astype(np.float32)


def _resample(name: str) -> int:
    from PIL import Image

    return {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR,
            "nearest": Image.NEAREST}.get(name, Image.BICUBIC)


def preprocess_image(path: str | os.PathLike[str], hw: tuple[int, int], pre: Preprocess) -> np.ndarray:
    """timm's eval transform: resize the short side to size/crop_pct, center-crop, normalise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            h, w = hw
            scale_h, scale_w = math.floor(h / pre.crop_pct), math.floor(w / pre.crop_pct)
            ratio = max(scale_h / im.height, scale_w / im.width)
            size = (max(w, round(im.width * ratio)), max(h, round(im.height * ratio)))
            im = im.resize(size, _resample(pre.interpolation))
            left, top = (im.width - w) // 2, (im.height - h) // 2
            im = im.crop((left, top, left + w, top + h))
            arr = np.asarray(im, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise ArtifactError(f"cannot read image {str(path)!r}: {e}") from None
    return normalise(arr, pre)


def image_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The image files in ``directory`` (sorted, non-recursive); none is an error."""
    d = Path(directory)
    if not d.is_dir():
        raise InputShapeError(f"--images {str(d)!r} is not a directory")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputShapeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(d)!r}")
    return files


def load_image_folder(directory: str | os.PathLike[str], hw: tuple[int, int], pre: Preprocess,
                      limit: int | None = None) -> tuple[np.ndarray, list[str]]:
    """All images in ``directory`` (sorted, non-recursive) as one normalised batch."""
    files = image_files(directory)[:limit]
    return np.concatenate([preprocess_image(f, hw, pre) for f in files]), [f.name for f in files]
