"""Images a production user gives: every command that reads images checks them all up front,
decoding each in full, and refuses a bad one with one line naming the file, before any work
and before memory grows.

Classes tried: truncated files (JPEG, PNG, BMP, TIFF, WebP at several cuts), headers that
declare huge images (decompression bombs, over our limit or PIL's), extreme aspect ratios,
sides of 0, entries that are not regular files (folders, named pipes, broken links, link
loops, devices), files that cannot be opened (EACCES), bytes that are no image, PIL's
warnings (the bomb warning and others), and long names (bounded quoting). Through the
library (:mod:`twins_deploy.preprocess`) and the real entry points: ``twins-predict``,
``twins-validate --images``, ``twins-export --images`` and INT8 ``--calib``.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import helpers_cli
import twins_deploy.pipeline as pipeline
import twins_deploy.predict as predict_module
from twins_deploy.cli.export import main as export_main
from twins_deploy.cli.predict import main as predict_main
from twins_deploy.cli.validate import main as validate_main
from helpers_cli import call
from twins_deploy.errors import InputShapeError
from twins_deploy.exporters.int8 import MIN_CALIB_IMAGES, calibration_set
from twins_deploy.preprocess import (
    MAX_ASPECT_RATIO,
    MAX_IMAGE_PIXELS,
    check_image_folder,
    check_size,
    image_files,
    load_image,
    pixel_limit,
    preprocess_image,
)
from twins_deploy.registry import get_config

PRE = get_config("pcpvt_s").preprocess
EXPORT = ["--model", "pcpvt_s", "--img-size", "32", "-q"]


# -- making images ----------------------------------------------------------------------------------
def _image_bytes(fmt: str, size: tuple[int, int] = (80, 64), seed: int = 0) -> bytes:
    """A real image of ``size`` (W, H) in ``fmt``; noise, so every format keeps many bytes of data."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _good(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP",
           ".tif": "TIFF", ".tiff": "TIFF"}[path.suffix.lower()]
    path.write_bytes(_image_bytes(fmt, size, seed))
    return path


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few bytes, with an empty IDAT
    (a decompression bomb's header: decoding it would allocate width * height * 3 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _folder(tmp: Path, name: str, bad: str, content: bytes | None = None) -> Path:
    """A folder of two good images and ``bad`` (written with ``content`` if given)."""
    d = tmp / name
    d.mkdir()
    _good(d / "a_good.jpg")
    _good(d / "b_good.png", seed=1)
    if content is not None:
        (d / bad).write_bytes(content)
    return d


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail instead of hanging (opening a FIFO blocks until a writer comes)."""
    def alarm(signum, frame):
        raise AssertionError(f"hung for {seconds} s (a FIFO was opened?)")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def refusal(fn, *args) -> str:
    """The one line ``fn(*args)`` refuses with."""
    with pytest.raises(InputShapeError) as e:
        fn(*args)
    line = str(e.value)
    assert "\n" not in line and len(line) < 500, line
    return line


def assert_one_error(rc: int, err: str, *needles: str) -> str:
    """Exit 2, one ``error:`` line naming ``needles``, no traceback, no raw PIL warning
    (the tools' own ``warning:`` lines about the machine may come before it)."""
    line = helpers_cli.assert_one_error(rc, err, 2, ignoring=("warning: ",))
    assert "DecompressionBomb" not in err, err
    for n in needles:
        assert n in line, err
    return line


@pytest.fixture(scope="module")
def onnx(tmp_path_factory) -> Path:
    """A small real artifact (pcpvt_s at 32x32, seeded random weights)."""
    out = tmp_path_factory.mktemp("images-artifact")
    assert export_main([*EXPORT, "--out-dir", str(out), "--no-validate"]) == 0
    return next(out.glob("*.onnx"))


@pytest.fixture
def no_work(monkeypatch):
    """Any runner opened or model built fails the test: a refusal must come before the work."""
    def fail(*a, **k):
        raise AssertionError("work started before the images were checked")

    monkeypatch.setattr(predict_module, "open_runner", fail)
    monkeypatch.setattr(pipeline, "open_runner", fail)
    monkeypatch.setattr(pipeline, "build_model", fail)


# -- truncated and corrupt files --------------------------------------------------------------------
@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif"),
                                        ("WEBP", ".webp")])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.98])
def test_truncated_images_are_refused_by_the_up_front_check(tmp_path, fmt, suffix, keep):
    data = _image_bytes(fmt)
    d = _folder(tmp_path, "imgs", f"cut{suffix}", data[:int(len(data) * keep)])
    line = refusal(check_image_folder, d)
    assert f"cut{suffix}" in line and "truncated or corrupt" in line


def test_a_truncated_jpeg_passes_pils_verify_but_not_our_check(tmp_path):
    """The old check (``verify()``: header and structure only) let a truncated JPEG through."""
    data = _image_bytes("JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:len(data) // 2 + 300])
    with Image.open(path) as im:
        im.verify()  # PIL's structural check is satisfied...
    assert "truncated or corrupt" in refusal(load_image, path)  # ...a full decode is not


def test_corrupt_pixel_data_is_refused(tmp_path):
    data = bytearray(_image_bytes("PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40:idat + 400] = b"\x00" * 360  # the zlib stream damaged, the length kept
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(data))
    assert "damaged.png" in refusal(preprocess_image, path, (32, 32), PRE)


def test_truncated_image_fails_predict_before_the_runner_opens(onnx, tmp_path, capsys, no_work):
    data = _image_bytes("JPEG")
    d = _folder(tmp_path, "photos", "cut.jpg", data[:len(data) // 2])
    rc, out, err = call(predict_main, [str(onnx), str(d)], capsys)
    assert_one_error(rc, err, "cut.jpg", "truncated or corrupt")
    rc, out, err = call(predict_main, [str(onnx), str(d / "a_good.jpg"), str(d / "cut.jpg")], capsys)
    assert_one_error(rc, err, "cut.jpg", "truncated or corrupt")


def test_truncated_image_fails_validate_and_export_up_front(onnx, tmp_path, capsys, no_work):
    data = _image_bytes("PNG")
    d = _folder(tmp_path, "photos", "z_cut.png", data[:len(data) // 3])
    rc, _, err = call(validate_main, [str(onnx), "--images", str(d)], capsys)
    assert_one_error(rc, err, "z_cut.png", "truncated or corrupt")
    out = tmp_path / "out"
    rc, _, err = call(export_main, [*EXPORT, "--out-dir", str(out), "--images", str(d)], capsys)
    assert_one_error(rc, err, "z_cut.png", "truncated or corrupt")
    assert not out.exists() or not any(out.iterdir())


def test_truncated_images_stay_refused():
    """PIL's LOAD_TRUNCATED_IMAGES (which makes a truncated image decode as grey) is never
    switched on by importing the tools."""
    import twins_deploy.cli.bench  # noqa: F401
    import twins_deploy.cli.export  # noqa: F401
    import twins_deploy.cli.validate  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# -- sizes: bombs, extreme aspect ratios, sides of 0 ---------------------------------------------------
@pytest.mark.parametrize("w,h", [(100_000, 100_000), (20_000, 20_000), (9_000, 9_000), (8193, 8192),
                                 (2**31 - 1, 2)])
def test_huge_headers_are_refused_before_decoding(tmp_path, monkeypatch, w, h):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(w, h))

    def no_decode(self, *a, **k):
        raise AssertionError("decoded an image that its header already refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    line = refusal(load_image, path)
    assert "huge.png" in line and "exceeds limit" in line and "67.1 megapixels" in line


def test_the_largest_allowed_image_is_read(tmp_path):
    """The limit itself is no refusal (8192 x 8192; a black PNG of it is small)."""
    path = tmp_path / "max.png"
    Image.new("L", (8192, 8192)).save(path)
    with load_image(path) as im:
        assert im.size == (8192, 8192) and im.mode == "RGB"
    assert pixel_limit() == MAX_IMAGE_PIXELS == 8192 * 8192


def test_refusals_leave_memory_where_it_was(tmp_path):
    """The issue's case: an extreme aspect ratio drove memory to GiBs (a 1 x 20000 image
    resized so its short side is 248 px is 248 x 4,960,000 pixels, 3.7 GB); a bomb's header
    would be 10.8 GB decoded. In a fresh process: each refused, peak memory grown < 200 MiB."""
    (tmp_path / "bomb.png").write_bytes(_png_header(60_000, 60_000))
    Image.new("RGB", (1, 20_000)).save(tmp_path / "tall.png")
    Image.new("RGB", (20_000, 1)).save(tmp_path / "wide.png")
    code = textwrap.dedent(f"""
        import resource
        from twins_deploy.preprocess import preprocess_image
        from twins_deploy.registry import get_config
        pre = get_config("pcpvt_s").preprocess
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for name in ("bomb.png", "tall.png", "wide.png"):
            try:
                preprocess_image({str(tmp_path)!r} + "/" + name, (224, 224), pre)
                print("accepted", name)
            except Exception as e:
                print(type(e).__name__, e)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    *lines, grown = run.stdout.strip().splitlines()
    assert len(lines) == 3, run.stdout + run.stderr
    for line, name in zip(lines, ("bomb.png", "tall.png", "wide.png")):
        assert line.startswith("InputShapeError") and name in line and "exceeds limit" in line, line
    assert float(grown) < 200, f"{float(grown):.0f} MiB"


@pytest.mark.parametrize("w,h,ok", [(1, 20_000, False), (20_000, 1, False), (51, 1, False), (1, 51, False),
                                    (4000, 79, False), (50, 1, True), (1, 50, True), (4000, 80, True)])
def test_aspect_ratio_beyond_fifty_to_one_is_refused(tmp_path, w, h, ok):
    path = tmp_path / f"strip_{w}x{h}.png"
    Image.new("RGB", (w, h), (200, 10, 10)).save(path)
    if ok:
        assert preprocess_image(path, (32, 32), PRE).shape == (1, 3, 32, 32)
    else:
        line = refusal(preprocess_image, path, (32, 32), PRE)
        assert path.name in line and f"{w}x{h}" in line and f"limit of {MAX_ASPECT_RATIO}:1" in line


def test_extreme_aspect_is_refused_by_predict(onnx, tmp_path, capsys, no_work):
    d = _folder(tmp_path, "photos", "strip.png")
    Image.new("RGB", (1, 20_000)).save(d / "strip.png")
    rc, _, err = call(predict_main, [str(onnx), str(d)], capsys)
    assert_one_error(rc, err, "strip.png", "1x20000", "exceeds limit")


@pytest.mark.parametrize("w,h", [(0, 10), (10, 0), (0, 0)])
def test_a_side_of_zero_is_refused(tmp_path, w, h):
    path = tmp_path / "flat.png"
    path.write_bytes(_png_header(w, h))
    assert "flat.png" in refusal(load_image, path)
    assert "a side of 0" in refusal(check_size, path, w, h)  # formats PIL opens at 0 meet our own check


# -- PIL's warnings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [40, 50, 200])  # 1600 px: PIL warns; 2500, 40000: PIL's error
def test_decompression_bomb_warning_and_error_become_our_refusal(tmp_path, monkeypatch, recwarn, capsys, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns over 1000 pixels, errs over 2000
    path = tmp_path / "bomb.png"
    Image.new("RGB", (side, side)).save(path)
    line = refusal(load_image, path)
    assert "bomb.png" in line and "exceeds limit of 1000 pixels (PIL's Image.MAX_IMAGE_PIXELS)" in line
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert "DecompressionBomb" not in capsys.readouterr().err


def test_decompression_bomb_through_predict_is_one_line(onnx, tmp_path, monkeypatch, recwarn, capsys, no_work):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    d = _folder(tmp_path, "photos", "bomb.png")  # the good ones are 48x40 = 1920 pixels: a warning each
    Image.new("RGB", (30, 30)).save(d / "bomb.png")
    rc, _, err = call(predict_main, [str(onnx), str(d)], capsys)
    assert_one_error(rc, err, "a_good.jpg", "exceeds limit")
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_our_limit_stays_when_pils_check_is_off(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "big.png"
    path.write_bytes(_png_header(10_000, 10_000))
    assert pixel_limit() == MAX_IMAGE_PIXELS
    assert "exceeds limit of 67.1 megapixels" in refusal(load_image, path)


def test_other_pil_warnings_become_one_line_of_ours_once(tmp_path, monkeypatch, recwarn, capsys):
    real_load = ImageFile.ImageFile.load

    def load(self, *a, **k):
        if self.tile:  # as PIL's plugins: a warning while decoding, none once decoded
            warnings.warn("Possibly corrupt EXIF data.\nSecond line", UserWarning)
        return real_load(self, *a, **k)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    path = _good(tmp_path / "exif.jpg")
    preprocess_image(path, (32, 32), PRE)
    preprocess_image(path, (32, 32), PRE)  # the late second read says nothing again
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: image ") and "exif.jpg" in err, err
    assert "Possibly corrupt EXIF" in err and not len(recwarn)


# -- entries that are not regular files; files that cannot be opened -----------------------------------
def _special(d: Path, kind: str) -> Path:
    p = d / "x.png"
    if kind == "folder":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "broken link":
        p.symlink_to(d / "gone.png")
    elif kind == "link loop":
        p.symlink_to(p)
    elif kind == "device":
        p.symlink_to("/dev/zero")  # read forever if opened
    return p


SPECIAL = {"folder": "a folder", "fifo": "a named pipe", "broken link": "a broken symlink",
           "link loop": "a symlink loop", "device": "a device"}


@pytest.mark.parametrize("kind", list(SPECIAL))
def test_entries_that_are_not_files_are_refused_without_opening(tmp_path, kind):
    d = _folder(tmp_path, "imgs", "x.png")
    _special(d, kind)
    with no_hang():
        line = refusal(image_files, d)
        assert "x.png" in line and SPECIAL[kind] in line
        line = refusal(load_image, d / "x.png")
        assert "x.png" in line and SPECIAL[kind] in line


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_special_entries_through_the_tools(onnx, tmp_path, capsys, kind, no_work):
    d = _folder(tmp_path, "imgs", "x.png")
    _special(d, kind)
    with no_hang():
        for main, args in ((predict_main, [str(onnx), str(d)]),
                           (validate_main, [str(onnx), "--images", str(d)]),
                           (export_main, [*EXPORT, "--out-dir", str(tmp_path / "out"), "--images", str(d)])):
            rc, _, err = call(main, args, capsys)
            assert_one_error(rc, err, "x.png", SPECIAL[kind])
        rc, _, err = call(predict_main, [str(onnx), str(d / "x.png")], capsys)  # given directly
        assert_one_error(rc, err, "x.png")


def test_unreadable_image_is_one_line(tmp_path, monkeypatch):
    """EACCES (simulated: the tests may run as root, which reads anything)."""
    path = _good(tmp_path / "secret.jpg")
    real_open = Image.open

    def denied(fp, *a, **k):
        if str(fp) == str(path):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", denied)
    line = refusal(check_image_folder, tmp_path)
    assert "secret.jpg" in line and "Permission denied" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_image_file_mode(tmp_path):
    path = _good(tmp_path / "secret.jpg")
    path.chmod(0)
    assert "Permission denied" in refusal(load_image, path)


# -- bytes that are no image ------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"hello, not an image\n", bytes(range(256)) * 40,
                                     b"<html><body>404</body></html>", b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
                                     b"\xff\xd8\xff\xe0 truncated jpeg", b"II*\x00" + b"\xff" * 64,
                                     b"BM" + b"\x00" * 60],
                         ids=["empty", "text", "bytes", "html", "png magic", "jpeg magic", "tiff magic", "bmp magic"])
def test_bytes_that_are_no_image_are_one_line(tmp_path, content):
    d = _folder(tmp_path, "imgs", "fake.jpg", content)
    line = refusal(check_image_folder, d)
    assert "fake.jpg" in line and line.startswith("cannot read image")


def test_an_onnx_model_named_like_an_image_through_predict(onnx, tmp_path, capsys, no_work):
    fake = tmp_path / "model.png"
    fake.write_bytes(onnx.read_bytes())
    rc, _, err = call(predict_main, [str(onnx), str(fake)], capsys)
    assert_one_error(rc, err, "model.png", "not an image")


# -- good images of every kind still pass; bounded lines; calibration --------------------------------
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16", "1", "LA"])
def test_images_of_every_mode_are_read(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".tif" if mode == "I;16" else ".png"
    path = tmp_path / f"m{suffix}"
    Image.new(mode, (37, 23)).save(path)
    x = preprocess_image(path, (32, 32), PRE)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all()


def test_error_lines_quote_long_names_bounded(tmp_path):
    d = tmp_path
    for _ in range(3):
        d = d / ("n" * 100)
    d.mkdir(parents=True)
    (d / "cut.jpg").write_bytes(_image_bytes("JPEG")[:500])
    line = refusal(check_image_folder, d)
    assert "characters)" in line and len(line) < 400


@pytest.fixture
def calib_dir(tmp_path) -> Path:
    d = tmp_path / "calib"
    d.mkdir()
    for i in range(MIN_CALIB_IMAGES):
        _good(d / f"{i:03d}.png", (12, 10), seed=i)
    return d


@pytest.mark.parametrize("bad", ["truncated", "fifo", "aspect", "bomb"])
def test_calibration_images_are_checked_up_front(calib_dir, bad):
    target = calib_dir / "005.png"
    target.unlink()
    if bad == "truncated":
        target.write_bytes(_image_bytes("PNG")[:300])
    elif bad == "fifo":
        os.mkfifo(target)
    elif bad == "aspect":
        Image.new("RGB", (1, 5000)).save(target)
    else:
        target.write_bytes(_png_header(50_000, 50_000))
    with no_hang():
        line = refusal(calibration_set, calib_dir)
    assert "005.png" in line


def test_good_calibration_folder_is_accepted(calib_dir):
    calib = calibration_set(calib_dir)
    assert len(calib.files) == MIN_CALIB_IMAGES and calib.available == MIN_CALIB_IMAGES


def test_calib_option_refuses_a_truncated_image_before_export(calib_dir, tmp_path, capsys, no_work):
    data = _image_bytes("JPEG")
    (calib_dir / "zz.jpg").write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    rc, _, err = call(export_main, [*EXPORT, "--precision", "int8", "--calib", str(calib_dir),
                                    "--out-dir", str(out)], capsys)
    assert_one_error(rc, err, "zz.jpg", "truncated or corrupt")
    assert not out.exists() or not any(out.iterdir())
