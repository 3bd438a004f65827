"""INT8 with explicit Q/DQ, judged on a trained model: the tiny SVT trained on scikit-learn's
digits (tests/train_digits.py, checkpoint committed in tests/data/), calibrated on 256 images
of its training split and judged on the 450 held-out ones, in every CPU INT8 route.

One export (both Q/DQ forms from one calibration) is shared by the tests; the bad-input
cases fail before any work and are cheap.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from digits import folder_labels, label_of, load_folder
from helpers_cli import assert_one_error, call, snapshot
from helpers_trt import skip_without_int8_dot
from twins_deploy.bench.harness import BenchConfig
from twins_deploy.bench.machine import int8_cpu_warning
from twins_deploy.cli.export import main as export_main
from twins_deploy.cli.validate import main as validate_main
from twins_deploy.engines.opening import open_runner
from twins_deploy.engines.routes import ROUTES, get_route, route_for
from twins_deploy.errors import InputShapeError, OptionError
from twins_deploy.exporters.int8 import MIN_CALIB_IMAGES, calibration_set
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.factory import create_model
from twins_deploy.manifest import read_manifest
from twins_deploy.pipeline import ArtifactRequest, CalibRequest, WeightsRequest, make_artifacts
from twins_deploy.precision import resolve_precision

MODEL_ARGS = ["--model", "svt_t", "--num-classes", "10", "--img-size", "32"]
STEM = "svt_t_int8_32x32"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits_dir, digits_model_path):
    """One INT8 export of the trained model: calibrated on digits_dir.calib, validated on .test.
    Without VNNI the CPU's INT8 kernels saturate (see int8_cpu_warning): the export's own
    validation then refuses the graphs, as it should, and these tests cannot judge them."""
    skip_without_int8_dot()
    out = tmp_path_factory.mktemp("int8") / "out"
    rc = export_main([*MODEL_ARGS, "--weights", str(digits_model_path), "--precision", "int8",
                      "--calib", str(digits_dir.calib), "--images", str(digits_dir.test), "--out-dir", str(out), "-q"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def fp32_logits(digits_dir, digits_model_path):
    """FP32 PyTorch logits of the held-out images, and their labels."""
    x, y = load_folder(digits_dir.test)
    model = create_model("svt_t", weights=str(digits_model_path), num_classes=10).eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy(), x, y


def _manifest(out: Path, form: str) -> dict:
    return json.loads((out / f"{STEM}-{form}.onnx.json").read_text())


# -- what the export writes ------------------------------------------------------------------------
@pytest.mark.parametrize("form,zero_points", [
    ("s8s8", ["INT8"]),                    # TensorRT's rules: signed, FP32 biases
    ("u8s8", ["INT32", "INT8", "UINT8"]),  # ONNX Runtime's: uint8 activations, int8 weights, int32 biases
])
def test_both_forms_are_written_with_what_made_them(exported, digits_dir, form, zero_points):
    m = _manifest(exported, form)
    source = json.loads((exported / "svt_t_fp32_32x32.onnx.json").read_text())
    calib = calibration_set(digits_dir.calib)
    q = m["quant"]
    assert m["precision"] == "int8" and q["form"] == form
    assert q["calibration"]["images"] == 256 and q["calibration"]["sha256"] == calib.sha256
    assert q["calibration"]["method"] == "minmax"
    assert q["quantizer_version"] == onnxruntime.__version__ and "quantize_static" in q["quantizer"]
    assert q["source_onnx"] == {"file": "svt_t_fp32_32x32.onnx", "sha256": source["sha256"]}
    assert m["validation"]["passed"] and m["validation"]["precision"] == "int8"
    # judged on the held-out images alone (INT8 ranges are calibrated on images, not noise)
    assert {s["case"].split()[0] for s in m["validation"]["stats"]} == {"images"}
    graph = onnx.load(str(exported / f"{STEM}-{form}.onnx"))
    assert m["onnx"]["opset"] == 17 == graph.opset_import[0].version  # what TensorRT 8.6 parses
    assert q["qdq"]["zero_point_types"] == zero_points and q["qdq"]["quantize_nodes"] > 20


def test_the_tensorrt_form_follows_tensorrt_explicit_quantization_rules(exported):
    """Signed INT8, every zero point 0, scales > 0, activation scales per tensor, weight
    scales per output channel (TensorRT's IQuantizeLayer rules; UINT8 is rejected)."""
    g = onnx.load(str(exported / f"{STEM}-s8s8.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    weights = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims and len(i.dims) >= 2}
    per_channel = 0
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale, zp = inits[n.input[1]], inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any() and (scale > 0).all()
        if n.op_type == "QuantizeLinear" and n.input[0] not in weights:
            assert scale.size == 1, f"{n.name}: activation scale must be per tensor"
        per_channel += scale.size > 1
    assert per_channel > 10  # weight DQs carry one scale per output channel


# -- accuracy on the trained model -------------------------------------------------------------
@pytest.mark.parametrize("route,form", [
    ("ort-int8", "u8s8"), ("openvino-int8", "s8s8"),
    ("ort-int8", "s8s8"),  # TensorRT's graph, run on the CPU: its accuracy is checked without a GPU
])
def test_int8_keeps_top1_within_one_point_of_fp32(exported, fp32_logits, route, form):
    if get_route(route).extra == "openvino":
        pytest.importorskip("openvino", reason="the OpenVINO route needs pip install 'twins-deploy[openvino]'")
    ref, x, y = fp32_logits
    runner = open_runner(exported / f"{STEM}-{form}.onnx", route=route)
    with runner:
        got = np.concatenate([runner.infer(x[i:i + 32])[0] for i in range(0, len(x), 32)])
    fp32_top1, int8_top1 = (ref.argmax(1) == y).mean(), (got.argmax(1) == y).mean()
    agreement = (ref.argmax(1) == got.argmax(1)).mean()
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert fp32_top1 >= 0.9  # the committed checkpoint is a trained model
    assert abs(fp32_top1 - int8_top1) <= 0.01, (fp32_top1, int8_top1)
    assert agreement >= 0.98 and cos.mean() >= 0.99, (agreement, cos.mean())


def test_bad_calibration_fails_the_export_and_keeps_its_report(tmp_path, digits_dir, digits_model_path, capsys):
    """Negative control: ranges from black images clip every real activation. The export's
    INT8 validation on held-out images must catch it (exit 1), the report kept."""
    black = tmp_path / "black"
    black.mkdir()
    for i in range(MIN_CALIB_IMAGES):
        Image.new("L", (8, 8), 0).save(black / f"{i:03d}.png")
    out = tmp_path / "out"
    rc, _, err = call(export_main, [*MODEL_ARGS, "--weights", str(digits_model_path), "--precision", "int8",
                                    "--calib", str(black), "--images", str(digits_dir.test), "--out-dir", str(out),
                                    "-q"], capsys)
    assert rc == 1 and "failed validation" in err
    m = read_manifest(out / f"{STEM}-u8s8.onnx")
    assert m.passed is False and m.quant.calibration["images"] == MIN_CALIB_IMAGES


# -- re-checking and reuse ---------------------------------------------------------------------
def test_twins_validate_judges_int8_with_int8_criteria(exported, digits_dir, digits_model_path, tmp_path, capsys):
    report = tmp_path / "r.json"
    rc, out, _ = call(validate_main, [str(exported / f"{STEM}-u8s8.onnx"), "--weights", str(digits_model_path),
                                      "--images", str(digits_dir.test), "--report", str(report), "-q"], capsys)
    r = json.loads(report.read_text())
    assert rc == 0 and r["precision"] == "int8" and r["candidate"] == "ort-int8"
    assert r["thresholds"]["min_cosine"] == 0.99 and r["thresholds"]["min_top1"] == 0.98
    assert r["decisive_samples"] > 300 and r["top1_judged"] >= 0.98 and "PASS" in out
    # a trained model's INT8 graph without images: refused (noise exceeds its calibrated ranges)
    rc, _, err = call(validate_main, [str(exported / f"{STEM}-u8s8.onnx"), "--weights", str(digits_model_path)],
                      capsys)
    assert_one_error(rc, err, 2, "judged on images")
    # the same artifact on a route that runs no INT8 graph: refused in one line
    rc, _, err = call(validate_main, [str(exported / f"{STEM}-u8s8.onnx"), "--backend", "ort-cpu"], capsys)
    assert_one_error(rc, err, 2, "onnx-int8")


def test_a_second_run_reuses_both_forms_and_another_calibration_rebuilds(exported, digits_dir, digits_model_path,
                                                                         tmp_path):
    out = tmp_path / "out"
    shutil.copytree(exported, out)

    def request(count: int) -> ArtifactRequest:
        return ArtifactRequest(ExportSpec("svt_t", img_size=(32, 32)), precision="int8", out_dir=out,
                               weights=WeightsRequest(str(digits_model_path), num_classes=10), on_existing="reuse",
                               images=str(digits_dir.test), calib=CalibRequest(str(digits_dir.calib), count))

    again = make_artifacts(request(256))
    assert again.onnx.reused and all(a.reused for a in again.companions) and again.source.reused
    other = make_artifacts(request(64))  # another calibration set: the INT8 graphs are made again
    assert not other.onnx.reused and other.source.reused
    assert other.onnx.manifest.quant.calibration["images"] == 64


# -- bad input: one line, nothing written ------------------------------------------------------
@pytest.fixture(scope="module")
def calib_dirs(tmp_path_factory, digits_dir):
    root = tmp_path_factory.mktemp("calib-bad")
    (root / "empty").mkdir()
    few = root / "few"
    few.mkdir()
    for p in sorted(digits_dir.calib.iterdir())[:5]:
        shutil.copy(p, few / p.name)
    broken = root / "broken"
    shutil.copytree(digits_dir.calib, broken)
    (broken / "zz_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    overlap = root / "overlap"
    overlap.mkdir()
    for p in sorted(digits_dir.test.iterdir())[:3]:
        shutil.copy(p, overlap / p.name)
    (root / "a_file.png").write_bytes(b"not a folder")
    return root


@pytest.mark.parametrize("extra,needle", [
    (["--precision", "int8"], "needs calibration images: --calib DIR"),
    (["--calib", "{calib}"], "needs --precision int8"),
    (["--precision", "int8", "--calib", "{root}/empty"], "no images"),
    (["--precision", "int8", "--calib", "{root}/missing"], "is not a directory"),
    (["--precision", "int8", "--calib", "{root}/a_file.png"], "is not a directory"),
    (["--precision", "int8", "--calib", "{root}/few"], f"at least {MIN_CALIB_IMAGES}"),
    (["--precision", "int8", "--calib", "{root}/broken"], "cannot read image"),
    (["--precision", "int8", "--calib", "{test}", "--images", "{root}/overlap"], "must differ"),
    (["--precision", "int8", "--calib", "{calib}", "--calib-count", "8"], "--calib-count"),
    (["--precision", "int8", "--calib", "{calib}", "--io-fp16"], "--io-fp16"),
    (["--precision", "int8", "--calib", "{calib}", "--weights", "{ckpt}"], "judged on images"),
    (["--precision", "int8", "--calib", "{calib}", "--weak-fp16", "--fmt", "trt"], "--weak-fp16"),
])
def test_bad_int8_input_is_one_line_and_writes_nothing(extra, needle, calib_dirs, digits_dir, digits_model_path,
                                                       tmp_path, capsys):
    args = [a.format(root=calib_dirs, calib=digits_dir.calib, test=digits_dir.test, ckpt=digits_model_path)
            for a in extra]
    out = tmp_path / "out"
    before = snapshot(calib_dirs)
    rc, _, err = call(export_main, [*MODEL_ARGS, *args, "--out-dir", str(out)], capsys)
    err = "\n".join(ln for ln in err.splitlines() if not ln.startswith("warning: this CPU has none of"))  # no VNNI
    assert_one_error(rc, err, 2, needle)
    assert not out.exists() or not any(out.iterdir())
    assert snapshot(calib_dirs) == before


def test_calibration_images_overlapping_the_evaluation_ones_are_refused(digits_dir, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(digits_dir.calib, mixed)
    shutil.copy(next(digits_dir.test.iterdir()), mixed / "from_test.png")
    with pytest.raises(InputShapeError, match="1 of the .* calibration images are also in --images"):
        calibration_set(mixed, count=10_000, evaluation=digits_dir.test)
    assert calibration_set(digits_dir.calib, evaluation=digits_dir.test).sha256  # disjoint: accepted


# -- the route table, precision and the benchmark ---------------------------------------------------
def test_int8_rows_of_the_route_table():
    int8 = {n: r for n, r in ROUTES.items() if r.precision == "int8"}
    assert set(int8) == {"ort-int8", "openvino-int8", "trt-int8"}
    assert {r.int8_form for r in int8.values()} == {"u8s8", "s8s8"} and ROUTES["trt-int8"].int8_form == "s8s8"
    assert all(r.consumes in (("onnx-int8",), ("plan-int8",)) for r in int8.values())
    assert not any("onnx-int8" in r.consumes for n, r in ROUTES.items() if n not in int8)


def test_default_route_of_an_int8_graph_is_onnx_runtime_int8(exported):
    assert route_for(read_manifest(exported / f"{STEM}-s8s8.onnx")).name == "ort-int8"


@pytest.mark.parametrize("major,flags,strong", [(8, ("INT8", "FP16"), False), (9, (), True), (10, (), True),
                                                (11, (), False)])
def test_int8_precision_plan_per_tensorrt_line(major, flags, strong):
    plan = resolve_precision("int8", trt_major=major)
    assert (plan.route, plan.graph, plan.source.graph) == ("qdq", "int8", "fp32")
    assert plan.builder_flags(major) == flags and plan.strongly_typed_network(major) == strong


def test_bench_int8_routes_need_calibration_images(tmp_path):
    with pytest.raises(OptionError, match="ort-int8 run INT8 graphs, calibrated on images: pass --calib"):
        BenchConfig(models=("svt_t",), backends=("ort-cpu", "ort-int8"), batches=(1,), out=tmp_path)
    with pytest.raises(OptionError, match="svt_t has no timm counterpart"):
        BenchConfig(models=("svt_t",), backends=("ort-cpu",), batches=(1,), out=tmp_path, compare=("timm-onnx",))
    with pytest.raises(OptionError, match="none is among --backends"):
        BenchConfig(models=("svt_t",), backends=("ort-cpu",), batches=(1,), out=tmp_path, calib=str(tmp_path))


def test_bench_opens_each_int8_route_on_its_form(digits_dir, tmp_path):
    from twins_deploy.bench.backends import subject_artifact, twins_subject

    subject = twins_subject("svt_t", (32, 32), 2, tmp_path / ".artifacts", calib=str(digits_dir.calib))
    forms = {r: subject_artifact(subject, r).manifest.quant.form for r in ("ort-int8", "openvino-int8")}
    assert forms == {"ort-int8": "u8s8", "openvino-int8": "s8s8"}


def test_cpu_without_vnni_is_warned_about_not_refused():
    assert "avx512_vnni" in int8_cpu_warning(["avx2", "avx512f"])
    assert int8_cpu_warning(["avx2", "avx512_vnni"]) is None and int8_cpu_warning(["avx_vnni"]) is None
    assert int8_cpu_warning([]) is None  # flags unreadable: nothing claimed


def test_twins_predict_runs_an_int8_graph(exported, digits_dir, capsys):
    from twins_deploy.cli.predict import main as predict_main

    images = sorted(digits_dir.test.iterdir())[:8:2]
    rc, out, _ = call(predict_main, [str(exported / f"{STEM}-u8s8.onnx"), *map(str, images), "--json", "--top-k", "1"],
                      capsys)
    assert rc == 0
    got = {Path(g["image"]).name: g["top"][0]["class"] for g in json.loads(out)}
    assert got == {p.name: label_of(p) for p in images}  # the trained model reads these digits right


def test_an_int8_graph_is_served_like_fp32_in_a_triton_repository(exported, digits_dir, digits_model_path, tmp_path):
    from twins_deploy.serving.triton_repo import TritonRepoOptions

    out = tmp_path / "out"
    shutil.copytree(exported, out)
    req = ArtifactRequest(ExportSpec("svt_t", img_size=(32, 32), batch=BatchRange(1, 8, 32)), precision="int8",
                          out_dir=out, weights=WeightsRequest(str(digits_model_path), num_classes=10),
                          on_existing="reuse", images=str(digits_dir.test), calib=CalibRequest(str(digits_dir.calib)),
                          triton=TritonRepoOptions(repo=tmp_path / "repo"))
    arts = make_artifacts(req)
    entry = arts.triton_entry
    assert (entry / "1" / "model.onnx").read_bytes() == arts.onnx.path.read_bytes()
    assert 'platform: "onnxruntime_onnx"' in (entry / "config.pbtxt").read_text()
    assert folder_labels(digits_dir.test).shape == (450,)
