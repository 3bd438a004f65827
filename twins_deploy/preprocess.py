"""Images -> the model's input, as the manifest's preprocessing describes it (timm's eval
transform): used to validate on photographs and to run an artifact on images."""
from __future__ import annotations

import math
import os
import re
import struct
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from twins_deploy.artifacts import path_kind
from twins_deploy.errors import InputShapeError, quoted
from twins_deploy.registry import INTERPOLATIONS, Preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def normalise(images01: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> the model's normalised input."""
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((images01 - mean) / std).astype(np.float32)


def _resample(name: str) -> int:

    if name not in INTERPOLATIONS:
        raise InputShapeError(f"unknown interpolation {quoted(name)} in the preprocessing "
                              f"(known: {', '.join(INTERPOLATIONS)})")
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


# -- reading images: every refusal before memory grows ------------------------------------------
# The largest image read, in pixels: 8192 x 8192 (64 MiP). Decoded RGB that is 192 MiB (its RGB
# conversion as much again), and a classifier sees 224-512 px, so no use needs more; a 50 MP
# camera's photograph (8688 x 5792) still passes. PIL's own limit (Image.MAX_IMAGE_PIXELS,
# 89.5 MP by default, a DecompressionBombWarning above it, an error above twice it) applies
# when it is lower, so PIL never gets to warn: over either limit is our one-line refusal.
MAX_IMAGE_PIXELS = 8192 * 8192
# The most elongated image read, long side : short side. The eval transform resizes the
# short side to img_size / crop_pct *before* the center crop, so the long side grows by the
# aspect ratio: at 224 px a 50:1 image becomes 248 x 12,400 (9 MB), a 1 x 20,000 one
# 248 x 4,960,000 (3.7 GB) that the crop then throws away. Panoramas stay under 50:1
# (a 360-degree panorama is 2:1 to 12:1).
MAX_ASPECT_RATIO = 50

# What PIL's plugins raise on a file that is not a usable image: unknown formats
# (UnidentifiedImageError, an OSError), damaged or truncated data (OSError, SyntaxError,
# ValueError, EOFError, struct.error), and what its parsers raise on hostile headers.
_PIL_FAILURES: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
    ZeroDivisionError, OverflowError, NotImplementedError, Image.DecompressionBombError,
    Image.DecompressionBombWarning)
_reported_warnings: set[tuple[str, str]] = set()


def image_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises on a file that is not a usable image: unknown formats, damaged data,
    and images over its pixel limit (``DecompressionBombError``: a small file that would
    decode to gigabytes, which is no ``OSError``; ``DecompressionBombWarning``, which
    :func:`load_image` turns into an error)."""

    return _PIL_FAILURES


def pixel_limit() -> int:
    """The most pixels an image may have: :data:`MAX_IMAGE_PIXELS`, or PIL's
    ``Image.MAX_IMAGE_PIXELS`` where that is lower (None there: PIL's check is off, ours stays)."""
    pil = Image.MAX_IMAGE_PIXELS
    return MAX_IMAGE_PIXELS if pil is None else min(MAX_IMAGE_PIXELS, int(pil))


def _refuse(path: str | os.PathLike[str], why: str) -> InputShapeError:
    return InputShapeError(f"cannot read image {quoted(str(path))}: {why}")


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} megapixels" if n >= 100_000 else f"{n} pixels"


def _limit_text() -> str:
    limit = pixel_limit()
    return f"{_megapixels(limit)} (8192x8192)" if limit == MAX_IMAGE_PIXELS else \
        f"{_megapixels(limit)} (PIL's Image.MAX_IMAGE_PIXELS)"


def check_size(path: str | os.PathLike[str], width: int, height: int) -> None:
    """Refuse an image whose header declares a side of 0, more than :func:`pixel_limit`
    pixels, or an aspect ratio beyond :data:`MAX_ASPECT_RATIO` (before anything is decoded)."""
    if width <= 0 or height <= 0:
        raise _refuse(path, f"it is {width}x{height} pixels: a side of 0")
    limit = pixel_limit()
    if width * height > limit:
        raise _refuse(path, f"it is {width}x{height} pixels ({_megapixels(width * height)}), which exceeds limit "
                            f"of {_limit_text()}")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise _refuse(path, f"it is {width}x{height} pixels, an aspect ratio of {ratio:.0f}:1, which exceeds limit "
                            f"of {MAX_ASPECT_RATIO}:1 (resizing its short side to the model's input would make "
                            "the long side huge)")


def _bomb_line(path: str | os.PathLike[str], e: BaseException) -> InputShapeError:
    """PIL's decompression-bomb warning or error, as our size refusal."""
    m = re.search(r"\((\d+) pixels\)", str(e))
    size = f"it has {_megapixels(int(m.group(1)))}" if m else f"it is too large (PIL: {quoted(str(e), 120)})"
    return _refuse(path, f"{size}, which exceeds limit of {_limit_text()} (a decompression bomb?)")


def _decode(path: str | os.PathLike[str], im: Image.Image) -> Image.Image:
    """``im`` (opened, header only) checked for size, decoded in full and in RGB."""
    try:
        check_size(path, *im.size)
        im.load()
        return im if im.mode == "RGB" else im.convert("RGB")
    except InputShapeError:  # check_size's own line (a ValueError, like PIL's failures)
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb_line(path, e) from None
    except OSError as e:
        if e.errno is not None:  # the file itself: EIO, ...
            raise _refuse(path, f"{e.strerror or e}") from None
        raise _refuse(path, f"it is truncated or corrupt: {quoted(str(e) or type(e).__name__)}") from None
    except _PIL_FAILURES as e:
        raise _refuse(path, f"it is truncated or corrupt: {quoted(str(e) or type(e).__name__)}") from None


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """``path`` decoded in full and converted to RGB, or one :class:`InputShapeError` line
    naming the file. In order, so that nothing hangs and memory never grows on a bad file:

    1. its kind, without opening it (:func:`twins_deploy.artifacts.path_kind`): a folder, a
       named pipe, a device, a socket or a broken link is refused (opening a FIFO blocks);
    2. its header only (``Image.open``): not an image, or a size over :func:`check_size`'s
       limits (side of 0, over :func:`pixel_limit` pixels, aspect over :data:`MAX_ASPECT_RATIO`);
       PIL's decompression-bomb warning is raised as an error here and refused, never printed;
    3. every pixel (``load``): a truncated or corrupt file is refused here, not halfway
       through a run (PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False).

    Other warnings PIL gives while reading (corrupt EXIF, odd metadata) are printed once per
    file as our own ``warning: image ...`` line on stderr."""
    kind = path_kind(path)
    if kind != "a file":
        raise _refuse(path, "there is no such file" if kind == "missing" else f"it is {kind}, not an image file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise _bomb_line(path, e) from None
        except UnidentifiedImageError:
            raise _refuse(path, "not an image (PIL cannot identify its format)") from None
        except OSError as e:
            if e.errno is not None:  # the file itself: EACCES, EISDIR, EIO, ...
                raise _refuse(path, f"{e.strerror or e}") from None
            raise _refuse(path, f"it is truncated or corrupt: {quoted(str(e))}") from None
        except _PIL_FAILURES as e:
            raise _refuse(path, f"it is truncated or corrupt: {quoted(str(e) or type(e).__name__)}") from None
        try:
            rgb = _decode(path, im)
        except BaseException:
            im.close()
            raise
        if rgb is not im:
            im.close()
    for w in caught:
        key = (os.path.abspath(path), str(w.message))
        if key not in _reported_warnings:
            _reported_warnings.add(key)
            print(f"warning: image {quoted(str(path))}: {quoted(str(w.message))}", file=sys.stderr, flush=True)
    return rgb


def transform(im: Image.Image, hw: tuple[int, int], pre: Preprocess) -> np.ndarray:
    """An RGB PIL image -> the model's (1, 3, H, W) float32 input, by timm's eval transform."""
    size = resized_size((im.height, im.width), hw, pre.crop_pct)
    if size != (im.height, im.width):  # torchvision returns the image as is
        im = im.resize((size[1], size[0]), _resample(pre.interpolation))
    arr = center_crop(np.asarray(im), hw)
    images01 = np.ascontiguousarray(arr.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)
    return normalise(images01, pre)


def preprocess_image(path: str | os.PathLike[str], hw: tuple[int, int], pre: Preprocess) -> np.ndarray:
    """One image file -> the model's input: a ``(1, 3, H, W)`` float32 batch, normalised.

    ``path``: an image file PIL reads (JPEG, PNG, BMP, WebP, TIFF, ...); ``hw``: the model's
    input size ``(H, W)`` (``manifest.spec.img_size``); ``pre``: the preprocessing recorded
    in the manifest (``manifest.preprocess``: mean, std, interpolation, crop_pct).

    timm's eval transform (crop mode "center"), pixel for pixel: convert to RGB, resize by
    :func:`resized_size` (the short side to ``size / crop_pct``) with PIL's ``interpolation``,
    :func:`center_crop` to ``hw``, scale to [0, 1], subtract ``mean``, divide by ``std``.
    The file is read by :func:`load_image`: a missing, unreadable, truncated or corrupt file,
    or one too large (over :func:`pixel_limit` pixels) or too elongated (aspect over
    :data:`MAX_ASPECT_RATIO`), raises :class:`~twins_deploy.errors.InputShapeError` with one
    line naming the file."""

    with load_image(path) as im:
        return transform(im, hw, pre)


def image_files(directory: str | os.PathLike[str], what: str = "--images") -> list[Path]:
    """The image files in ``directory`` (sorted, non-recursive, by suffix); none is an error
    (``what``: the option that named the folder, for the message). An entry with an image's
    name that is not a regular file (a folder, a named pipe, a device, a broken link) is
    refused, never opened."""
    d = Path(directory)
    kind = path_kind(d)
    if kind != "a folder":
        raise InputShapeError(f"{what} {quoted(str(d))} is not a directory "
                              f"({'there is no such folder' if kind == 'missing' else 'it is ' + kind})")
    try:
        candidates = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise InputShapeError(f"{what} {quoted(str(d))} cannot be read: {e.strerror or e}") from None
    for p in candidates:
        kind = path_kind(p)
        if kind != "a file":
            raise _refuse(p, f"it is {kind}, not an image file (in {what} {quoted(str(d))})")
    if not candidates:
        raise InputShapeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {what} {quoted(str(d))}")
    return candidates


def check_images(files: Iterable[str | os.PathLike[str]]) -> None:
    """Every image read in full (:func:`load_image`), so a bad file fails with one line
    before any work instead of in the middle of validation or calibration."""
    for f in files:
        load_image(f).close()


def check_image_folder(directory: str | os.PathLike[str], what: str = "--images") -> list[Path]:
    """The folder's images (:func:`image_files`), each decoded in full (:func:`check_images`)."""

    files = image_files(directory, what)
    check_images(files)
    return files


def load_image_folder(directory: str | os.PathLike[str], hw: tuple[int, int], pre: Preprocess,
                      limit: int | None = None) -> tuple[np.ndarray, list[str]]:
    """All images in ``directory`` (sorted, non-recursive) as one normalised batch."""
    files = image_files(directory)[:limit]
    return np.concatenate([preprocess_image(f, hw, pre) for f in files]), [f.name for f in files]
