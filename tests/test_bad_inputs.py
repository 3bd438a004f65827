"""Every bad input the command-line tools accept, against the README's contract:

exit code 2 for bad input (3 for a missing backend, 130 for Ctrl-C), exactly one
``error:`` line on stderr, no traceback without ``--verbose``, nothing new or
half-written left behind, and existing files untouched.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import twins_deploy.artifacts as artifacts
import twins_deploy.pipeline as pipeline
from twins_deploy import create_model
from twins_deploy.cli.bench import main as bench_main
from twins_deploy.cli.export import main as export_main
from twins_deploy.cli.inspect import main as inspect_main
from twins_deploy.cli.predict import main as predict_main
from twins_deploy.cli.validate import main as validate_main
from twins_deploy.engines.runners.onnxrt import OrtRunner
import helpers_export
from helpers_cli import assert_one_error, call, held_elsewhere, snapshot

SMALL = ["--model", "pcpvt_s", "--img-size", "32", "--min-batch", "1", "--opt-batch", "2", "--max-batch", "2", "-q"]
STEM = "pcpvt_s_fp32_32x32"


# -- files of the wrong kind and in the wrong place --------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few bytes (a decompression bomb's
    header: PIL refuses it on opening, before any pixel is decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One of each kind of bad file, plus a real (small, validated) artifact."""
    d = tmp_path_factory.mktemp("bad")
    real = d / "real"
    assert export_main([*SMALL, "--out-dir", str(real)]) == 0
    f = {"onnx": real / f"{STEM}.onnx", "dir": d / "a_dir"}
    f["dir"].mkdir()
    (d / "empty").mkdir()
    f["empty_dir"] = d / "empty"
    f["text"] = d / "notes.pth"
    f["text"].write_text("101 definitely not a checkpoint\n")
    f["zero"] = d / "zero.pth"
    f["zero"].write_bytes(b"")
    f["png"] = d / "picture.pth"
    import matplotlib.cbook as cbook

    shutil.copy(cbook.get_sample_data("logo2.png", asfileobj=False), f["png"])
    f["onnx_as_ckpt"] = d / "model.pth"
    shutil.copy(f["onnx"], f["onnx_as_ckpt"])
    good = d / "good.pth"
    torch.save(create_model("pcpvt_s").state_dict(), good)
    f["truncated"] = d / "truncated.pth"
    f["truncated"].write_bytes(good.read_bytes()[:4096])
    f["other_variant"] = d / "svt_s.safetensors"
    save_file(create_model("svt_s").state_dict(), str(f["other_variant"]))
    f["code"] = d / "evil.pth"

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(f["code"], "wb") as fh:
        pickle.dump({"state_dict": Exploit()}, fh)
    f["readme_dir"] = d / "readme_only"
    f["readme_dir"].mkdir()
    (f["readme_dir"] / "README.txt").write_text("no images here\n")
    f["corrupt_dir"] = d / "corrupt"
    f["corrupt_dir"].mkdir()
    (f["corrupt_dir"] / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    f["bomb_dir"] = d / "bomb"
    f["bomb_dir"].mkdir()
    (f["bomb_dir"] / "huge.png").write_bytes(_png_header(20000, 20000))
    f["a_file"] = d / "a_file"
    f["a_file"].write_text("x")
    return f


EXPORT_CASES = {
    "unknown model": (["--model", "svt_x"], "did you mean"),
    "weights: text file": (["--weights", "{text}"], "not a checkpoint"),
    "weights: empty file": (["--weights", "{zero}"], "not a checkpoint"),
    "weights: an image": (["--weights", "{png}"], "not a checkpoint"),
    "weights: an ONNX model": (["--weights", "{onnx_as_ckpt}"], "not a checkpoint"),
    "weights: a folder": (["--weights", "{dir}"], "not a file"),
    "weights: truncated torch file": (["--weights", "{truncated}"], "not a readable"),
    "weights: another variant": (["--weights", "{other_variant}"], "looks like svt_s"),
    "weights: pickled code": (["--weights", "{code}"], "refused by the safe loader"),
    "weights and pretrained": (["--weights", "{text}", "--pretrained"], "not allowed with"),
    "images: a file": (["--images", "{a_file}"], "not a directory"),
    "images: empty folder": (["--images", "{empty_dir}"], "no images"),
    "images: no image files": (["--images", "{readme_dir}"], "no images"),
    "images: unreadable image": (["--images", "{corrupt_dir}"], "cannot read image"),
    "images: decompression bomb": (["--images", "{bomb_dir}"], "exceeds limit"),
    "out-dir: a file": (["--out-dir", "{a_file}"], "is a file, not a folder"),
    "out-dir: under a file": (["--out-dir", "{a_file}/sub"], "a_file' is a file, not a folder"),
    "img-size 0": (["--img-size", "0"], "impossible"),
    "img-size 31": (["--img-size", "31"], "impossible"),
    "img-size negative": (["--img-size", "-5"], "impossible"),
    "img-size text": (["--img-size", "abc"], "not N or HxW"),
    "img-size 3 numbers": (["--img-size", "224x224x3"], "not N or HxW"),
    "img-size huge": (["--img-size", "22400"], "larger than 4096"),
    "batch 0": (["--batch", "0"], "must be >= 1"),
    "batch negative": (["--batch", "-1"], "must be >= 1"),
    "batch huge": (["--batch", "5000"], "must be <= 4096"),
    "min-batch 0": (["--min-batch", "0"], "must be >= 1"),
    "opt above max": (["--opt-batch", "40"], "min <= opt <= max"),
    "min above max": (["--min-batch", "9", "--opt-batch", "9", "--max-batch", "4"], "min <= opt <= max"),
    "opset 16": (["--opset", "16"], "outside 17..20"),
    "opset 99": (["--opset", "99"], "outside 17..20"),
    "opset text": (["--opset", "x"], "invalid int"),
    "workspace 0": (["--fmt", "trt", "--workspace", "0"], "must be > 0"),
    "workspace negative": (["--fmt", "trt", "--workspace", "-1"], "must be > 0"),
    "workspace nan": (["--fmt", "trt", "--workspace", "nan"], "not a finite number"),
    "workspace inf": (["--fmt", "trt", "--workspace", "inf"], "not a finite number"),
    "opt-level 6": (["--opt-level", "6"], "invalid choice"),
    "timing cache: a folder": (["--fmt", "trt", "--timing-cache", "{dir}"], "is a folder; give a file path"),
    "timing cache: under a file": (["--fmt", "trt", "--timing-cache", "{a_file}/c.cache"], "is a file, not a folder"),
    "num-classes 0": (["--num-classes", "0"], "must be >= 1"),
    "seed negative": (["--seed", "-1"], "must be >= 0"),
    "seed too large": (["--seed", str(2**33)], "must be <= 4294967295"),
    "atol 0": (["--atol", "0"], "must be > 0"),
    "atol nan": (["--atol", "nan"], "not a finite number"),
    "min-cosine 2": (["--min-cosine", "2"], "must be <= 1"),
    "min-top1 1.5": (["--min-top1", "1.5"], "must be <= 1"),
    "min-top1 negative": (["--min-top1", "-0.1"], "must be >= 0"),
    "min-hw 16": (["--fmt", "trt", "--dynamic-hw", "--min-hw", "16"], "impossible"),
    "max-hw below the export size": (["--fmt", "trt", "--dynamic-hw", "--max-hw", "100"], "does not contain"),
    "min-hw without an engine": (["--min-hw", "64"], "need --fmt trt and --dynamic-hw"),
    "io-fp16 with fp32": (["--io-fp16"], "needs the FP16 graph"),
    "weak-fp16 with fp32": (["--fmt", "trt", "--weak-fp16"], "only applies to --precision fp16"),
    "weak-fp16 without an engine": (["--precision", "fp16", "--weak-fp16"], "needs --fmt trt"),
    "unknown format": (["--fmt", "tflite"], "invalid choice"),
    "unknown precision": (["--precision", "fp8"], "invalid choice"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_export_refuses_bad_input_with_one_line_and_leaves_nothing(case, files, tmp_path, capsys):
    args, needle = EXPORT_CASES[case]
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("untouched")
    before = snapshot(tmp_path), snapshot(files["onnx"].parent.parent)
    out = tmp_path / "new" / "out"
    if "--model" not in args:
        args = ["--model", "pcpvt_s", *args]
    if "--out-dir" not in args:
        args += ["--out-dir", str(out)]
    rc, _, err = call(export_main, [*args, "-q"], capsys)
    assert_one_error(rc, err, 2, needle)
    assert not (tmp_path / "new").exists()
    assert (snapshot(tmp_path), snapshot(files["onnx"].parent.parent)) == before


@pytest.mark.parametrize("where", ["artifact", "manifest"])
def test_a_folder_where_the_output_goes_is_refused_before_any_work(where, tmp_path, monkeypatch, capsys):
    """--force replaces files; a folder in the way would be moved aside and lost from view."""
    def no_work(*a, **k):
        raise AssertionError("work started although the output path is a folder")

    monkeypatch.setattr(pipeline, "create_model", no_work)
    out = tmp_path / "out"
    folder = out / (f"{STEM}.onnx" if where == "artifact" else f"{STEM}.onnx.json")
    folder.mkdir(parents=True)
    (folder / "inside.txt").write_text("the user's")
    before = snapshot(tmp_path)
    rc, _, err = call(export_main, [*SMALL, "--out-dir", str(out), "--force"], capsys)
    assert_one_error(rc, err, 2, "is a folder, where the output file goes")
    assert snapshot(tmp_path) == before


def _manifest(files) -> dict:
    return json.loads(Path(f"{files['onnx']}.json").read_text())


def _edited(files, where: str, value: object) -> dict:
    """The real manifest with one value (``a.b.c``) replaced."""
    m = _manifest(files)
    *parents, key = where.split(".")
    node = m
    for k in parents:
        node = node[k]
    node[key] = value
    return m


def _write_raw_manifest(path: Path, text: str) -> Path:
    Path(f"{path}.json").write_text(text)
    return path


def _artifact_copy(files, tmp_path: Path, onnx_bytes: bytes | None = None, manifest: object = None) -> Path:
    path = tmp_path / files["onnx"].name
    path.write_bytes(files["onnx"].read_bytes() if onnx_bytes is None else onnx_bytes)
    text = json.dumps(_manifest(files) if manifest is None else manifest)
    if manifest is not False:
        Path(f"{path}.json").write_text(text)
    return path


VALIDATE_CASES = {
    "missing artifact": (lambda f, t: [str(t / "nope.onnx")], "does not exist"),
    "a folder": (lambda f, t: [str(f["dir"])], "is a folder, not a file"),
    "the manifest for its artifact": (lambda f, t: [str(f["onnx"]) + ".json"], "is the manifest of"),
    "no manifest": (lambda f, t: [str(_artifact_copy(f, t, manifest=False))], "no manifest"),
    "manifest not JSON": (lambda f, t: [str(_artifact_copy(f, t, manifest="{"))], "not a twins-deploy manifest"),
    "manifest truncated": (lambda f, t: [str(_write_raw_manifest(_artifact_copy(f, t), '{"schema": 2, "ki'))],
                           "is not valid JSON"),
    "manifest a list": (lambda f, t: [str(_artifact_copy(f, t, manifest=[1, 2]))], "not a twins-deploy manifest"),
    "manifest of a future schema": (lambda f, t: [str(_artifact_copy(f, t, manifest={**_manifest(f), "schema": 99}))],
                                    "schema 99"),
    "manifest without its spec": (lambda f, t: [str(_artifact_copy(
        f, t, manifest={k: v for k, v in _manifest(f).items() if k != "spec"}))], "lacks 'spec'"),
    "manifest of kind trt without an engine": (
        lambda f, t: [str(_artifact_copy(f, t, manifest={**_manifest(f), "kind": "trt"}))], "describes no TensorRT engine"),
    "manifest of another kind": (lambda f, t: [str(_artifact_copy(f, t, manifest={**_manifest(f), "kind": "tflite"}))],
                                 "kind must be one of"),
    "corrupt ONNX file": (lambda f, t: [str(_artifact_copy(f, t, onnx_bytes=b"\x08garbage"))], "cannot load"),
    **{f"manifest value: {where} = {value!r}": (
        lambda f, t, where=where, value=value: [str(_artifact_copy(f, t, manifest=_edited(f, where, value)))], needle)
       for where, value, needle in [
           ("spec.img_size", [-5, 7], "impossible for Twins"), ("spec.img_size", [224], "must be (H, W)"),
           ("spec.img_size", ["a", "b"], "two whole numbers"), ("spec.batch.max", "2", "whole numbers"),
           ("preprocess.mean", [0.5], "mean and std must be 3 finite numbers"),
           ("preprocess.std", [0, 0, 0], "std > 0"), ("preprocess.interpolation", "magic", "interpolation 'magic'"),
           ("preprocess.crop_pct", 0, "crop_pct must be in (0, 1]"), ("validation", 5, "validation must be an object"),
           ("weights.source", "bogus", "weights source must be one of"), ("outputs", [], "list of tensor names"),
       ]},
    "batch 0": (lambda f, t: [str(f["onnx"]), "--batch", "0"], "must be >= 1"),
    "batch outside the range": (lambda f, t: [str(f["onnx"]), "--batch", "9"], "outside the artifact's range 1..2"),
    "empty batch list": (lambda f, t: [str(f["onnx"]), "--batch", ","], "holds no batch size"),
    "weights for a random-weights artifact": (lambda f, t: [str(f["onnx"]), "--weights", str(f["other_variant"])],
                                              "seeded random weights"),
    "images: empty folder": (lambda f, t: [str(f["onnx"]), "--images", str(f["empty_dir"])], "no images"),
    "report is a folder": (lambda f, t: [str(f["onnx"]), "--report", str(f["dir"])], "is a directory"),
    "report folder missing": (lambda f, t: [str(f["onnx"]), "--report", str(t / "no" / "r.json")], "does not exist"),
    "report is the artifact": (lambda f, t: [str(f["onnx"]), "--report", str(f["onnx"])], "the artifact's own file"),
    "report is the manifest": (lambda f, t: [str(f["onnx"]), "--report", str(f["onnx"]) + ".json"],
                               "the artifact's own manifest"),
    "report would replace another file": (lambda f, t: [str(f["onnx"]), "--report", str(f["text"])],
                                          "is not a validation report"),
    "atol negative": (lambda f, t: [str(f["onnx"]), "--atol", "-1"], "must be > 0"),
}


@pytest.mark.parametrize("case", sorted(VALIDATE_CASES))
def test_validate_refuses_bad_input_with_one_line(case, files, tmp_path, capsys):
    args = VALIDATE_CASES[case][0](files, tmp_path)
    before = snapshot(tmp_path), snapshot(files["onnx"].parent)
    rc, _, err = call(validate_main, [*args, "-q"], capsys)
    assert_one_error(rc, err, 2, VALIDATE_CASES[case][1])
    assert (snapshot(tmp_path), snapshot(files["onnx"].parent)) == before


def test_a_report_replaces_an_earlier_report_only(files, tmp_path, capsys):
    """The control for the refusals above: a report already there is replaced."""
    report = tmp_path / "r.json"
    for _ in range(2):
        rc, _, err = call(validate_main, [str(files["onnx"]), "--batch", "1", "--report", str(report), "-q"], capsys)
        assert rc == 0, err
        assert json.loads(report.read_text())["passed"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def _other_onnx(hw: int) -> bytes:
    """A valid ONNX model whose input is Nx3xHWxHW (not the artifact's size)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, hw, hw])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, hw, hw])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "other", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("tool", ["validate", "predict"])
def test_another_model_in_the_artifacts_place_is_named_not_a_runtime_traceback(tool, files, tmp_path, capsys):
    art = _artifact_copy(files, tmp_path, onnx_bytes=_other_onnx(48))
    args = [str(art), "--batch", "1"] if tool == "validate" else [str(art), str(files["png"])]
    rc, _, err = call(validate_main if tool == "validate" else predict_main, args, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("[", " "))]  # no progress lines
    assert rc == 2 and "Traceback" not in err, err
    changed = f"warning: {art.name} differs from the file its manifest describes (sha256 differs"
    assert [ln for ln in lines[:-1] if ln.startswith(changed)], err  # said before the failure it explains
    assert lines[-1].startswith("error: input of shape ") and "does not fit the model's 'input' (Nx3x48x48" in lines[-1]


@pytest.mark.parametrize("runner", ["ort", "openvino"])
def test_runners_refuse_inputs_the_graph_cannot_take(runner, files):
    """The library API: a wrong rank, channel count or fixed H/W is InputShapeError, not the
    runtime's own exception from inside its graph."""
    from twins_deploy.engines.runners.onnxrt import OrtRunner
    from twins_deploy.errors import InputShapeError

    if runner == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is an optional extra")
        from twins_deploy.engines.runners.openvino import OpenVinoRunner as Runner
    else:
        Runner = OrtRunner
    with Runner(files["onnx"]) as r:
        assert r.infer(np.zeros((2, 3, 32, 32), np.float32))[0].shape == (2, 1000)
        for shape in [(1, 4, 32, 32), (1, 3, 48, 48), (3, 32, 32)]:
            with pytest.raises(InputShapeError, match=r"does not fit the model's 'input' \(Nx3x32x32"):
                r.infer(np.zeros(shape, np.float32))


@pytest.mark.parametrize("kind", ["missing", "dir", "zero", "text", "png", "plan"])
def test_inspect_refuses_what_is_not_onnx(kind, files, tmp_path, capsys):
    path = {"missing": tmp_path / "nope.onnx", "dir": files["dir"], "zero": tmp_path / "zero.onnx",
            "text": files["text"], "png": files["png"], "plan": tmp_path / "engine.plan"}[kind]
    if kind == "zero":
        path.write_bytes(b"")
    if kind == "plan":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    rc, out, err = call(inspect_main, [str(path)], capsys)
    assert_one_error(rc, err, 2)
    assert out == ""


BENCH_CASES = {
    "batch 0": (["--batch", "0"], "must be >= 1"),
    "batch empty": (["--batch", ""], "holds no batch size"),
    "batch text": (["--batch", "a"], "not an integer"),
    "unknown backend": (["--backends", "torch,tensorflow"], "unknown backend(s) tensorflow"),
    "no backend": (["--backends", ","], "at least one model, backend"),
    "min-iters 0": (["--min-iters", "0"], "must be >= 1"),
    "min-time negative": (["--min-time", "-1"], "must be >= 0"),
    "warmup negative": (["--warmup", "-1"], "must be >= 0"),
    "threads 0": (["--threads", "0"], "must be >= 1"),
    "img-size 16": (["--img-size", "16"], "impossible"),
    "unknown model": (["--model", "svt_s,vit_b"], "unknown model 'vit_b'"),
    "out is a file": (["--out", "{a_file}"], "is a file, not a folder"),
    "unknown preset": (["--preset", "fastest"], "invalid choice"),
    "rerender a file that is no result": (["--rerender", "{text}"], "is not a twins-bench result"),
    "name climbing out of --out": (["--name", "../../escape"], "may hold only letters"),
    "name an absolute path": (["--name", "/tmp/escape"], "may hold only letters"),
    "name hidden": (["--name", ".hidden"], "may not start with '.'"),
    # the comparisons (formerly python -m twins_deploy.cli.cpu_compare / onnx_compare) are presets
    "cpu-compare rounds 0": (["--preset", "cpu-compare", "--rounds", "0"], "must be >= 1"),
    "cpu-compare name climbing": (["--preset", "cpu-compare", "--name", "../x"], "may hold only"),
    "cpu-compare unknown model": (["--preset", "cpu-compare", "--model", "vit_b"], "unknown model 'vit_b'"),
    "onnx-vs-timm min-time negative": (["--preset", "onnx-vs-timm", "--min-time", "-1"], "must be >= 0"),
    "onnx-vs-timm unknown model": (["--preset", "onnx-vs-timm", "--model", "svt_s,vit_b"], "unknown model 'vit_b'"),
    "compare unknown": (["--compare", "timm-onnx,vgg"], "--compare takes swin_t, timm-onnx"),
    "compare empty": (["--compare", ","], "--compare takes"),
    "rounds text": (["--rounds", "two"], "not an integer"),
    "out inside the package": (["--out", "{package}/results"], "lies inside the package source"),
}


@pytest.mark.parametrize("case", sorted(BENCH_CASES))
def test_bench_refuses_bad_input_with_one_line(case, files, tmp_path, capsys):
    import twins_deploy.bench

    package = Path(twins_deploy.bench.__file__).parent
    args, needle = BENCH_CASES[case]
    args = [a.format(package=package, **{k: str(v) for k, v in files.items()}) for a in args]
    out = tmp_path / "bench"
    if "--out" not in args:
        args += ["--out", str(out)]
    def source(root: Path) -> dict:  # Python's own bytecode cache aside
        return {k: v for k, v in snapshot(root).items() if "__pycache__" not in Path(k).parts}

    before, in_package = snapshot(tmp_path), source(package)
    rc, _, err = call(bench_main, [*args, "-q"], capsys)
    assert_one_error(rc, err, 2, needle)
    assert snapshot(tmp_path) == before and not out.exists() and source(package) == in_package


def _backbone_copy(files, tmp_path: Path) -> Path:
    m = _manifest(files)
    m["model"]["features"] = True
    return _artifact_copy(files, tmp_path, manifest=m)


PREDICT_CASES = {
    "missing artifact": (lambda f, t: [str(t / "nope.onnx"), str(f["png"])], "does not exist"),
    "the manifest for its artifact": (lambda f, t: [str(f["onnx"]) + ".json", str(f["png"])], "is the manifest of"),
    "backbone artifact": (lambda f, t: [str(_backbone_copy(f, t)), str(f["png"])], "is a backbone"),
    "missing image": (lambda f, t: [str(f["onnx"]), str(t / "nope.jpg")], "neither an image nor a folder"),
    "corrupt image": (lambda f, t: [str(f["onnx"]), str(f["corrupt_dir"] / "photo.jpg")], "cannot read image"),
    "decompression bomb": (lambda f, t: [str(f["onnx"]), str(f["bomb_dir"] / "huge.png")], "exceeds limit"),
    "folder with a decompression bomb": (lambda f, t: [str(f["onnx"]), str(f["bomb_dir"])], "exceeds limit"),
    "empty folder": (lambda f, t: [str(f["onnx"]), str(f["empty_dir"])], "no images"),
    "top-k 0": (lambda f, t: [str(f["onnx"]), str(f["png"]), "--top-k", "0"], "must be >= 1"),
    "no images": (lambda f, t: [str(f["onnx"])], "the following arguments are required"),
}


@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
def test_predict_refuses_bad_input_with_one_line(case, files, tmp_path, capsys):
    args = PREDICT_CASES[case][0](files, tmp_path)
    rc, out, err = call(predict_main, args, capsys)
    assert_one_error(rc, err, 2, PREDICT_CASES[case][1])
    assert out == ""


# -- Ctrl-C at every step --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported_graph(files):
    """The small model's exported graph, so the interrupt tests need not export again."""
    return helpers_export.exported_graph(files["onnx"])


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


class _Interrupting:
    """Stands in for ONNX Runtime and interrupts validation, as Ctrl-C would."""

    name, output_names = "interrupting", ["logits"]

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self):
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        return None


def _interrupt_install(monkeypatch, n: int) -> None:
    """Ctrl-C as the install moves its n-th new file into place (1: the artifact, after any
    old files were moved aside; 2: the manifest, after the new artifact is in place)."""
    real, calls = os.replace, []

    def replace(src, dst):
        if str(src).endswith(".partial"):
            calls.append(dst)
            if len(calls) == n:
                raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace)


STEPS = {
    "building the model": lambda mp, g: mp.setattr(pipeline, "create_model", _interrupt),
    "exporting": lambda mp, g: mp.setattr(pipeline, "export_onnx", _interrupt),
    "after writing the file": lambda mp, g: mp.setattr(pipeline, "inspect_onnx", _interrupt),
    # the route table opens ort-cpu through the Runner class's from_route
    "validating": lambda mp, g: mp.setattr(OrtRunner, "from_route", classmethod(lambda cls, *a: _Interrupting())),
    "installing the artifact": lambda mp, g: _interrupt_install(mp, 1),
    "installing the manifest": lambda mp, g: _interrupt_install(mp, 2),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new out-dir", "overwriting with --force"])
@pytest.mark.parametrize("step", sorted(STEPS))
def test_ctrl_c_at_any_step_leaves_what_was_there(step, existing, exported_graph, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: exported_graph)
    STEPS[step](monkeypatch, exported_graph)
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / f"{STEM}.onnx").write_bytes(b"the old model")
        (out / f"{STEM}.onnx.json").write_text('{"old": true}')
    before = snapshot(tmp_path)
    rc, _, err = call(export_main, [*SMALL, "--out-dir", str(out), "--force"], capsys)
    assert rc == 130 and err.strip() == "interrupted; no partial artifact was left behind"
    assert snapshot(tmp_path) == before


def test_the_same_export_interrupted_nowhere_installs_both_files(exported_graph, tmp_path, monkeypatch, capsys):
    """The control for the test above: with no interruption the same run installs the pair."""
    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: exported_graph)
    out = tmp_path / "out"
    rc, _, err = call(export_main, [*SMALL, "--out-dir", str(out)], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [f"{STEM}.onnx", f"{STEM}.onnx.json"]


@pytest.mark.parametrize("step, existing", [("[2/3] export", False), ("[3/3] validate", True)],
                         ids=["while exporting, new out-dir", "while validating, overwriting with --force"])
def test_sigterm_cleans_up_as_ctrl_c_does(step, existing, tmp_path):
    """``timeout``, ``kill`` and cancelled CI jobs send SIGTERM: the real console script, stopped
    at a step, exits 143 and leaves the out-dir as it found it (no staged ``.partial`` files)."""
    import signal

    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / f"{STEM}.onnx").write_bytes(b"the old model")
        (out / f"{STEM}.onnx.json").write_text('{"old": true}')
    before = snapshot(tmp_path)
    script = Path(sys.executable).parent / "twins-export"
    proc = subprocess.Popen([str(script), *[a for a in SMALL if a != "-q"], "--out-dir", str(out), "--force"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if line.startswith(step):
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stderr.read()
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert any(ln.startswith(step) for ln in seen), "".join(seen)
    assert rc == 143 and rest.strip().splitlines()[-1] == "terminated by SIGTERM; no partial artifact was left behind", rest
    assert snapshot(tmp_path) == before


def test_a_reader_that_goes_away_ends_the_output_quietly(files):
    """``twins-inspect --json | head -1``: the pipe closes before we write; exit 141 as
    Unix tools do, with no BrokenPipeError traceback or 'Exception ignored' on stderr."""
    script = Path(sys.executable).parent / "twins-inspect"
    proc = subprocess.Popen([str(script), str(files["onnx"]), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first byte
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == "", err


# -- two runs into one --out-dir ---------------------------------------------------------------------------
def test_a_second_run_into_a_busy_out_dir_fails_at_once(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with held_elsewhere(out):  # another run holds the directory
        rc, _, err = call(export_main, [*SMALL, "--out-dir", str(out)], capsys)
    assert_one_error(rc, err, 2, "is writing into")
    with artifacts.output_dir(out):  # and the lock was released by both (the killed holder's note replaced)
        pass
    assert list(out.iterdir()) == []


# -- the real console scripts ---------------------------------------------------------------------------
def test_console_scripts_print_one_line_and_verbose_shows_the_traceback(tmp_path):
    script = Path(sys.executable).parent / "twins-export"
    res = subprocess.run([str(script), "--model", "svt_x", "--out-dir", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and res.stderr.startswith("error: unknown model")
    res = subprocess.run([str(script), "--model", "svt_x", "--verbose"], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" in res.stderr and "UnknownModelError" in res.stderr
