"""Manifests read back are checked for bounds as well as types (issue 21).

A manifest is a file anyone can edit, copy or damage. Whatever it holds, the tools that read
it (twins-validate, twins-predict, twins-inspect, the library) answer with one line naming
the field: exit code 2, no traceback, nothing allocated from its numbers, no hang on a FIFO,
no file read beyond 16 MiB, no 20 MB string echoed into the line. The control of every case
is the untampered copy, which passes.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import helpers_cli
from helpers_export import export_to
from twins_deploy.cli.inspect import main as inspect_main
from twins_deploy.cli.predict import main as predict_main
from twins_deploy.cli.validate import main as validate_main
from twins_deploy.errors import ArtifactError, InputShapeError
from twins_deploy.exporters.spec import MAX_BATCH, MAX_CLASSES, BatchRange, ExportSpec
from twins_deploy.manifest import MAX_DEPTH, MAX_MANIFEST_BYTES, Manifest, read_manifest, reuse_verdict

MAX_LINE = 1000  # an error line quotes user data only up to a bounded length
BIG = "x" * 20_000_000  # 20 MB: must never be echoed whole (a file this size is refused unread)
LONG = "x" * 10_000_000  # 10 MB: read (under the 16 MiB cap), then refused by its length


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    """A real (tiny) exported artifact: svt_t at 32x32, batch 1..2, validated."""
    path, _ = export_to(tmp_path_factory.mktemp("mb"), "svt_t", img_size=(32, 32), batch=BatchRange(1, 2, 2))
    return path


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.new("RGB", (40, 36), (120, 30, 200)).save(p)
    return p


def original(art: Path) -> dict:
    return json.loads(Path(f"{art}.json").read_text())


def edited(art: Path, where: str, value: object) -> dict:
    """The real manifest with the value at ``a.b.c`` replaced (``[i]`` indexes a list)."""
    m = copy.deepcopy(original(art))
    *parents, key = where.split(".")
    node = m
    for k in parents:
        node = node[k]
    if key.endswith("]"):
        key, i = key[:-1].split("[")
        node[key][int(i)] = value
    else:
        node[key] = value
    return m


def copy_with(art: Path, tmp: Path, manifest: object = None, raw: str | bytes | None = None) -> Path:
    """The artifact copied into ``tmp`` beside a manifest: ``manifest`` as JSON, or ``raw`` text."""
    path = tmp / art.name
    path.write_bytes(art.read_bytes())
    mp = Path(f"{path}.json")
    if raw is not None:
        mp.write_bytes(raw.encode() if isinstance(raw, str) else raw)
    else:
        mp.write_text(json.dumps(original(art) if manifest is None else manifest))
    return path


class Hang(Exception):
    pass


def run(main, args: list[str], capsys, limit_s: int = 60) -> tuple[int, str, float]:
    """A console script's main in-process, under an alarm: a hang fails the test."""
    def alarm(*_):
        raise Hang(f"{args} still running after {limit_s} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(limit_s)
    t0 = time.perf_counter()
    try:
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    _, err = capsys.readouterr()
    return rc, err, time.perf_counter() - t0


def assert_one_error(rc: int, err: str, needle: str = "", code: int = 2) -> str:
    line = helpers_cli.assert_one_error(rc, err, code, needle)
    assert len(line) < MAX_LINE, line[:3000]
    return line


def test_the_untampered_manifest_passes(art, tmp_path, capsys):
    """The control: the same copy, untouched, validates (so every refusal below is the edit's)."""
    rc, err, _ = run(validate_main, [str(copy_with(art, tmp_path)), "--batch", "1", "-q"], capsys)
    assert rc == 0, err
    m = read_manifest(art)
    assert json.loads(json.dumps(m.to_dict())) == original(art)  # identity and sha256 survive the checks
    assert reuse_verdict(art, m, require_validated=True)[0] is not None


# -- fields x bad values, through twins-validate ------------------------------------------------------
INT_BAD = [10**12, 2**63, 0, -1, -(10**9), "2", True, False, 1.5, None, [2], {"v": 2}, 1e400]
FIELDS = {  # field: (values it must refuse, what the line says)
    "spec.batch.max": (INT_BAD, "batch sizes must be whole numbers 1..4096"),
    "spec.batch.min": (INT_BAD, "batch sizes must be whole numbers"),
    "spec.batch.opt": (INT_BAD, "batch sizes must be whole numbers"),
    "input.batch.max": (INT_BAD, "batch sizes must be whole numbers"),
    "model.num_classes": (INT_BAD, f"1..{MAX_CLASSES}"),
    "spec.opset": ([10**12, 0, -1, 16, 999, "17", True, 17.0, None], "the opset must be"),
    "weights.seed": ([2**40, -1, "0", True, 0.5, []], "the seed must be"),
    "size_bytes": ([2**60, -1, "1", True, 1.5], "the size must be"),
    "onnx.nodes": ([2**40, -1, "315", False, None], "the node count must be"),
    "spec.img_size[0]": ([10**9, 4097, 0, -32, 31, "32", True, 32.0, None], 'field "spec.img_size"'),
    "spec.img_size[1]": ([10**9, 0, -1, False], 'field "spec.img_size"'),
    "preprocess.input_size[1]": ([10**9, 0, -1, "32", True], 'field "preprocess.input_size"'),
    "input.shape[2]": ([10**9, 0, -1, True, 1.5, None], 'field "input.shape[2]"'),
    "input.shape[1]": ([4, 0, 10**9], 'field "input.shape[1]"'),
    "preprocess.mean[0]": ([float("nan"), 1e300, "0.5", True, None], "mean and std must be 3 finite numbers"),
    "preprocess.crop_pct": ([0, -0.5, 1.5, True, "0.9", None], "crop_pct must be in (0, 1]"),
    "precision_plan.io_fp16": ([1, 0, "false", None], "must be true or false"),
    "spec.dynamic_hw": ([1, "yes", None], "must be true or false"),
    "model.features": ([0, "no", None], "must be true or false"),
    "validation.passed": (["yes", 1, None], "must be true or false"),
    "kind": ([1, None, "x" * 5000, "ONNX"], "the kind must be one of"),
    "precision_plan.requested": (["int4", 16, None], "precision must be one of"),
    "input.dtype": (["float64", None, 32], "the input type must be one of"),
    "weights.source": (["url", None, 3], "weights source must be one of"),
    "spec.model": (["", None, 7, "m" * 2000], 'field "spec.model"'),
    "input.name": (["", None, 7, "n" * 2000], 'field "input.name"'),
    "weights.path": (["p" * 5000, 7, ["a"]], 'field "weights.path"'),
    "sha256": (["abc", "G" * 64, 7, "a" * 5000], "must be a sha256"),
    "outputs": ([[], "logits", ["a"] * 5, [""], [7], ["o" * 2000]], "list of tensor names"),
    "spec": ([None, [], "spec", 0], 'field "spec"'),
    "spec.batch": ([None, [1, 2, 2], 2], 'field "spec.batch"'),
    "preprocess": ([None, [], 1], 'field "preprocess"'),
    "tools": ([[], "x", 3], 'field "tools"'),
    "tools.torch": ([3, ["2"], "v" * 2000], 'field "tools.torch"'),
    "onnx.op_census": ([[], {"Add": -1}, {"Add": "65"}, {"Add": 10**12}], 'field "onnx.op_census'),
    "input.dynamic_axes": ([{"7": "batch"}, {"x": "batch"}, {"0": 0}, []], 'field "input.dynamic_axes'),
    "model.config.embed_dims": ([[10**12, 1, 1, 1], [32], "32", [0, 64, 96, 128]], 'field "model.config.embed_dims'),
    "schema": ([True, "2", 2.0, 99, None], "is not one this twins-deploy reads"),
}
CASES = [(f, v, needle) for f, (values, needle) in FIELDS.items() for v in values]


@pytest.mark.parametrize("field,value,needle", CASES, ids=[f"{f}={str(v)[:20]}" for f, v, _ in CASES])
def test_validate_refuses_a_bad_field_with_one_line(field, value, needle, art, tmp_path, capsys):
    path = copy_with(art, tmp_path, edited(art, field, value))
    rc, err, dt = run(validate_main, [str(path), "--batch", "1", "-q"], capsys)
    line = assert_one_error(rc, err, needle)
    assert line.startswith("error: manifest "), line
    assert dt < 20, f"{dt:.1f} s to refuse a manifest"


@pytest.mark.parametrize("field", ["spec.batch.max", "model.num_classes", "spec.img_size[0]"])
def test_zero_and_negative_are_refused_not_defaulted(field, art, tmp_path):
    """0 and -1 are named, never replaced by a default (`x or 1000`)."""
    for value in (0, -1):
        path = copy_with(art, tmp_path, edited(art, field, value))
        with pytest.raises(ArtifactError, match=rf'field "{field.split("[")[0]}" is \[?{value}\b'):
            read_manifest(path)


@pytest.mark.parametrize("field", ["spec.model", "model.name", "weights.note", "created", "input.name", "artifact",
                                   "preprocess.interpolation", "validation.summary", "onnx.export.simplifier",
                                   "engine_of_nobody", "tools.torch"])
@pytest.mark.parametrize("text,needle", [(LONG, "a text of 10,000,000 characters"), (BIG, "bytes are read")])
def test_a_huge_string_anywhere_is_not_echoed(field, text, needle, art, tmp_path, capsys):
    m = original(art)
    if field == "engine_of_nobody":  # an unknown top-level key: still bounded
        m[field] = text
    else:
        m = edited(art, field, text)
    rc, err, _ = run(validate_main, [str(copy_with(art, tmp_path, m)), "--batch", "1", "-q"], capsys)
    assert_one_error(rc, err, needle)
    assert len(err) < MAX_LINE


def test_a_long_key_is_not_echoed(art, tmp_path, capsys):
    m = original(art)
    m["validation"]["k" * 3_000_000] = 1
    rc, err, _ = run(validate_main, [str(copy_with(art, tmp_path, m)), "--batch", "1", "-q"], capsys)
    assert_one_error(rc, err, "has a key of 3,000,000 characters")


@pytest.mark.parametrize("where", ["validation", "model.config", "onnx.export", "top"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 900, 100_000])
def test_deep_nesting_is_refused_without_a_recursion_traceback(where, depth, art, tmp_path, capsys):
    text = json.dumps(original(art) if where == "top" else edited(art, where, "@@"))
    nest = "[" * depth + "]" * depth
    raw = text.replace('"@@"', nest) if where != "top" else f'{{"x": {nest}, {text[1:]}'
    rc, err, dt = run(validate_main, [str(copy_with(art, tmp_path, raw=raw)), "--batch", "1", "-q"], capsys)
    assert_one_error(rc, err, f"nested deeper than {MAX_DEPTH} levels")
    assert dt < 20


# -- the file itself ----------------------------------------------------------------------------------
def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(b'{"schema": 2')
        f.truncate(size)


FILE_CASES = {
    "a folder": (lambda mp: mp.mkdir(), "is a folder, not a file"),
    "a FIFO": (lambda mp: os.mkfifo(mp), "is a named pipe (FIFO), not a file"),
    "a symlink loop": (lambda mp: mp.symlink_to(mp), "symlink loop"),
    "a broken symlink": (lambda mp: mp.symlink_to(mp.parent / "gone.json"), "broken symlink"),
    "100 MB sparse": (lambda mp: _sparse(mp, 100 << 20), "at most 16,777,216 bytes are read"),
    "just over the cap": (lambda mp: _sparse(mp, MAX_MANIFEST_BYTES + 1), "at most 16,777,216 bytes are read"),
    "empty": (lambda mp: mp.write_bytes(b""), "is not valid JSON"),
    "not UTF-8": (lambda mp: mp.write_bytes(b'{"schema": "\xff\xfe"}'), "not UTF-8 text"),
    "binary": (lambda mp: mp.write_bytes(os.urandom(4096)), "manifest "),
    "5000-digit integer": (lambda mp: mp.write_text('{"schema": ' + "9" * 5000 + "}"), "is not valid JSON"),
    "a JSON string": (lambda mp: mp.write_text(json.dumps(LONG)), "not a JSON object"),
    "a JSON number": (lambda mp: mp.write_text("1e999"), "not a JSON object"),
    "a list of 200000 items": (lambda mp: mp.write_text(json.dumps({"schema": 2, "l": [0] * 200_000})),
                               "has 200,000 entries"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_a_manifest_file_of_the_wrong_kind_or_size_is_one_line(case, art, tmp_path, capsys):
    path = copy_with(art, tmp_path)
    mp = Path(f"{path}.json")
    mp.unlink()
    make, needle = FILE_CASES[case]
    make(mp)
    rc, err, dt = run(validate_main, [str(path), "--batch", "1", "-q"], capsys, limit_s=30)
    assert_one_error(rc, err, needle)
    assert dt < 10, f"{dt:.1f} s"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_manifest_is_one_line(art, tmp_path, capsys):
    path = copy_with(art, tmp_path)
    mp = Path(f"{path}.json")
    mp.chmod(0)
    try:
        rc, err, _ = run(validate_main, [str(path), "--batch", "1", "-q"], capsys)
    finally:
        mp.chmod(0o600)
    assert_one_error(rc, err, "Permission denied")


# -- the other commands that read manifests -------------------------------------------------------
PREDICT_CASES = [("model.num_classes", 10**12), ("model.num_classes", 0), ("spec.batch.max", 10**9),
                 ("spec.img_size", [10**6, 10**6]), ("preprocess.input_size", [3, 10**6, 32]),
                 ("preprocess.std", [1e-300, 0, 1]), ("spec.model", BIG), ("model.features", "no")]


@pytest.mark.parametrize("field,value", PREDICT_CASES, ids=[f"{f}={str(v)[:20]}" for f, v in PREDICT_CASES])
def test_predict_refuses_absurd_manifests_before_allocating(field, value, art, png, tmp_path, capsys):
    path = copy_with(art, tmp_path, edited(art, field, value))
    rc, err, dt = run(predict_main, [str(path), str(png)], capsys)
    assert_one_error(rc, err, "manifest ")
    assert dt < 20


def test_predict_control(art, png, tmp_path, capsys):
    rc, err, _ = run(predict_main, [str(copy_with(art, tmp_path)), str(png), "--top-k", "2"], capsys)
    assert rc == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("field,value", [("spec.batch.max", 10**9), ("model.num_classes", -5), ("kind", BIG),
                                         ("schema", True)])
def test_inspect_warns_in_one_bounded_line_and_still_inspects_the_graph(field, value, art, tmp_path, capsys):
    """twins-inspect reads the graph itself; a bad manifest beside it costs only its Polygraphy lines."""
    path = copy_with(art, tmp_path, edited(art, field, value))
    rc, err, _ = run(inspect_main, [str(path)], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 0 and "Traceback" not in err, err[:3000]
    assert len(lines) == 1 and lines[0].startswith("warning: manifest ") and len(lines[0]) < MAX_LINE, err[:3000]


# -- the hostile files, through the installed command: time and memory ----------------------------------
@pytest.mark.parametrize("case", ["20 MB string", "100000 levels", "100 MB sparse"])
def test_the_command_stays_bounded_in_time_and_memory(case, art, tmp_path):
    path = copy_with(art, tmp_path)
    mp = Path(f"{path}.json")
    if case == "20 MB string":
        mp.write_text(json.dumps(edited(art, "spec.model", BIG)))
    elif case == "100000 levels":
        mp.write_text(json.dumps(edited(art, "validation", "@@")).replace('"@@"', "[" * 100_000 + "]" * 100_000))
    else:
        _sparse(mp, 100 << 20)
    script = Path(sys.executable).with_name("twins-validate")
    t0 = time.perf_counter()
    with open(tmp_path / "stderr", "w+") as err:
        proc = subprocess.Popen([str(script), str(path), "--batch", "1", "-q"], stdout=subprocess.DEVNULL, stderr=err)
        # the child's own high-water mark (VmHWM starts afresh at exec; ru_maxrss would carry
        # over the whole test process's peak through fork), read until it exits
        peak_kib = 0
        while proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, IndexError):  # gone, or a zombie without VmHWM
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak_kib = max(peak_kib, int(status.split("VmHWM:")[1].split()[0]))
            assert time.perf_counter() - t0 < 180, "the command ran past 180 s"
            time.sleep(0.01)
        err.seek(0)
        stderr = err.read()
    dt = time.perf_counter() - t0
    peak_mib = peak_kib / 1024
    assert_one_error(proc.returncode, stderr, "manifest ")
    assert dt < 120 and 0 < peak_mib < 3000, (dt, peak_mib)  # 0: the child was never seen


# -- the library: the same bounds where artifacts are made --------------------------------------------
def test_the_cli_and_the_manifest_share_one_batch_bound():
    from twins_deploy.cli import common

    assert common.MAX_BATCH == MAX_BATCH


@pytest.mark.parametrize("kw,needle", [
    (dict(batch=BatchRange(1, 1, MAX_BATCH)), "more than a tensor can hold"),   # 4096 x 3 x 4096 x 4096
    (dict(batch=BatchRange(1, 1, 43)), "more than a tensor can hold"),
])
def test_export_spec_refuses_an_input_no_tensor_holds(kw, needle):
    with pytest.raises(InputShapeError, match=needle):
        ExportSpec(model="svt_s", img_size=(4096, 4096), **kw)
    ExportSpec(model="svt_s", img_size=(4096, 4096), batch=BatchRange(1, 1, 42))  # the control: 2,113,929,216


def test_batch_range_refuses_beyond_max_batch():
    with pytest.raises(InputShapeError, match="larger than 4096"):
        BatchRange(1, 1, MAX_BATCH + 1)
    with pytest.raises(InputShapeError, match="whole numbers"):
        BatchRange(1, 1, True)  # type: ignore[arg-type]
    assert BatchRange(1, 1, MAX_BATCH).max == MAX_BATCH


def test_from_dict_refuses_what_is_not_an_object():
    for bad in (None, [], "m", 3):
        with pytest.raises(ArtifactError, match="not a JSON object"):
            Manifest.from_dict(bad)  # type: ignore[arg-type]


def test_a_plan_manifest_without_its_engine_or_with_an_absurd_profile(art):
    m = original(art)
    with pytest.raises(ArtifactError, match="describes no TensorRT engine"):
        Manifest.from_dict({**m, "kind": "trt"})
    engine = {"trt_version": "10.13.0", "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"},
              "profile": {"input": "input", "min": [1, 3, 32, 32], "opt": [2, 3, 32, 32], "max": [2, 3, 32, 32]},
              "build_options": {}, "source_onnx": {}}
    assert Manifest.from_dict({**m, "kind": "trt", "onnx": None, "engine": engine}).is_plan  # the control
    for key, shape, needle in [("max", [10**9, 3, 32, 32], "engine.profile.max[0]"),
                               ("max", [2, 3, 10**6, 32], "engine.profile.max[2]"),
                               ("min", [0, 3, 32, 32], "engine.profile.min[0]"),
                               ("opt", [3, 3, 32, 32], "min <= opt <= max"), ("max", [2, 3, 32], "engine.profile.max")]:
        bad = copy.deepcopy(engine)
        bad["profile"][key] = shape
        with pytest.raises(ArtifactError, match=needle.replace("[", r"\[")):
            Manifest.from_dict({**m, "kind": "trt", "onnx": None, "engine": bad})
