"""ONNX export: all six variants, FP16, dynamic batch and H/W, backbone outputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from twins_deploy import create_model
from twins_deploy.exporters.inspect import inspect_onnx
from twins_deploy.exporters.spec import BatchRange
from twins_deploy.exporters.onnx_export import ort_session

from conftest import ALL_VARIANTS
from helpers_export import export_to, photo_dir


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_every_variant_exports_fp32_and_validates(tmp_path, name):
    path, manifest = export_to(tmp_path, name)
    val = manifest["validation"]
    assert val["passed"], val["failures"]
    logits = [s for s in val["stats"] if s["output"] == "logits"]
    assert {s["shape"][0] for s in logits} == {1, 2, 3}  # validated across the dynamic range
    assert max(s["max_abs"] for s in logits) <= 1e-4
    report = inspect_onnx(path)
    assert report.roll_free and all(v.compatible for v in report.trt)
    assert report.op_census.get("LayerNormalization", 0) > 0  # opset 17: one node per LN
    assert "Shape" not in report.op_census and "Pad" not in report.op_census  # static H/W folds
    assert report.num_params == manifest["model"]["config"]["num_params"]
    assert manifest["sha256"] and manifest["input"]["dynamic_axes"] == {0: "batch"}


@pytest.mark.parametrize("name", ["svt_s", "pcpvt_s"])
def test_fp16_graph_keeps_layernorm_and_io_fp32(tmp_path, name):
    path, manifest = export_to(tmp_path, name, precision="fp16")
    val = manifest["validation"]
    assert val["passed"], val["failures"]
    assert min(s["min_cosine"] for s in val["stats"]) >= 0.999
    assert val["top1_agreement"] >= 0.99
    assert max(s["max_abs"] for s in val["stats"]) > 1e-5  # really computed in FP16
    m = onnx.load(path)
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert m.graph.input[0].type.tensor_type.elem_type == f32
    assert m.graph.output[0].type.tensor_type.elem_type == f32
    inits = {i.name: i for i in m.graph.initializer}
    ln = [n for n in m.graph.node if n.op_type == "LayerNormalization"]
    assert ln and all(inits[n.input[1]].data_type == f32 for n in ln)
    matmul_w = [inits[i] for n in m.graph.node if n.op_type == "MatMul" for i in n.input if i in inits]
    assert matmul_w and all(t.data_type == f16 for t in matmul_w)
    assert manifest["onnx"]["export"]["fp16"]["io"] == "fp32"


def test_fp16_io_fp16_option(tmp_path):
    path, manifest = export_to(tmp_path, "pcpvt_s", precision="fp16", io_fp16=True)
    m = onnx.load(path)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert manifest["validation"]["passed"] and manifest["input"]["dtype"] == "float16"


def _torch_out(model, x):
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def test_dynamic_batch_runs_at_1_3_8(tmp_path):
    path, _ = export_to(tmp_path, "svt_s", batch=BatchRange(1, 4, 8))
    model = create_model("svt_s")
    sess = ort_session(path)
    for b in (1, 3, 8):
        x = np.random.default_rng(b).standard_normal((b, 3, 224, 224), dtype=np.float32)
        got = sess.run(None, {"input": x})[0]
        assert got.shape == (b, 1000)
        assert np.abs(got - _torch_out(model, x)[0]).max() <= 1e-4


def test_dynamic_hw_is_correct_at_other_sizes_including_padding(tmp_path):
    """Exported at 224 (no padding anywhere), run where every stage pads.

    Tracing timm at 224 freezes its no-pad branch and breaks at 256x320; ours must not.
    """
    path, manifest = export_to(tmp_path, "svt_s", dynamic_hw=True)
    assert manifest["validation"]["passed"]
    assert any("256x288" in s["case"] for s in manifest["validation"]["stats"])
    model = create_model("svt_s")
    sess = ort_session(path)
    for hw in ((224, 224), (256, 320), (230, 301)):  # 256x320 pads both axes at every stage
        x = np.random.default_rng(hw[0]).standard_normal((2, 3, *hw), dtype=np.float32)
        got = sess.run(None, {"input": x})[0]
        assert np.abs(got - _torch_out(model, x)[0]).max() <= 1e-4, hw
    assert inspect_onnx(path).op_census.get("Pad", 0) == 9  # one per LSA block, pads computed


def test_features_outputs_match_pytorch(tmp_path):
    path, manifest = export_to(tmp_path, "svt_s", features=True, dynamic_hw=True)
    assert manifest["outputs"] == ["stage1", "stage2", "stage3", "stage4"]
    assert manifest["validation"]["passed"]
    model = create_model("svt_s", features=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 256, 320), dtype=np.float32)
    got = ort_session(path).run(None, {"input": x})
    want = _torch_out(model, x)
    for g, w, stride in zip(got, want, (4, 8, 16, 32)):
        assert g.shape == w.shape == (2, g.shape[1], 256 // stride, 320 // stride)
        assert np.abs(g - w).max() <= 1e-4 * max(1.0, np.abs(w).max())
    _shape_information_is_complete(path, channels=(64, 128, 256, 512))
    _polygraphy_line_runs(path)


def _shape_information_is_complete(path, channels):
    """What static readers (TensorRT's parser, OpenVINO, onnx2torch) see: every value has a
    known rank and no anonymous dimension, the channels are concrete, each LayerNorm's last
    dimension is its width, and inferring again with data propagation changes nothing."""
    m = onnx.load(path)
    values = list(m.graph.value_info) + list(m.graph.output)
    assert len(m.graph.value_info) > 500
    for v in values:
        t = v.type.tensor_type
        assert t.HasField("shape"), v.name
        assert all(d.HasField("dim_value") or d.dim_param for d in t.shape.dim), v.name
    assert [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim][:2] for o in m.graph.output] == \
        [["batch", c] for c in channels]
    by_name = {v.name: v for v in values}
    for n in (n for n in m.graph.node if n.op_type == "LayerNormalization"):
        width = by_name[n.input[0]].type.tensor_type.shape.dim[-1]
        assert width.dim_value in channels, n.name
    again = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True, data_prop=True)
    assert again.graph.value_info == m.graph.value_info and again.graph.output == m.graph.output


def _polygraphy_line_runs(path):
    """twins-inspect's Polygraphy line (shapes from the manifest) runs where Polygraphy's
    default 1x3x1x1 input fails on a dynamic-H/W model."""
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    from twins_deploy.commands import polygraphy_commands
    from twins_deploy.manifest import read_manifest

    polygraphy = Path(sys.executable).parent / "polygraphy"
    if not polygraphy.exists():
        pytest.skip("polygraphy is not installed (pip install .[test])")
    line = shlex.split(polygraphy_commands(path, read_manifest(path))["onnxruntime"])
    ok = subprocess.run([str(polygraphy), *line[1:]], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "PASSED" in ok.stdout + ok.stderr, ok.stdout[-2000:] + ok.stderr[-2000:]
    default = subprocess.run([str(polygraphy), "run", str(path), "--onnxrt"], capture_output=True, text=True, timeout=300)
    assert default.returncode != 0


def test_real_photographs_validate(tmp_path):
    photos = photo_dir(tmp_path)
    _, manifest = export_to(tmp_path / "out", "pcpvt_s", images=str(photos))
    cases = {s["case"] for s in manifest["validation"]["stats"]}
    assert "images 0..2 of 3" in cases
    assert manifest["validation"]["passed"]


def test_fixed_batch_and_non_default_size_naming(tmp_path):
    photos = photo_dir(tmp_path)  # 3 photos into a batch-2 graph: the last chunk is filled up
    path, manifest = export_to(tmp_path / "o", "pcpvt_s", batch=BatchRange.fixed(2), img_size=(256, 320),
                               images=str(photos))
    assert path.name == "pcpvt_s_fp32_256x320_b2.onnx"
    assert manifest["input"]["shape"] == [2, 3, 256, 320]
    assert manifest["validation"]["passed"]
    cases = [s["case"] for s in manifest["validation"]["stats"]]
    assert "images 0..1 of 3" in cases and "images 2..2 of 3 (+1 repeated to fill batch 2)" in cases


def test_a_fixed_batch_is_stated_on_every_output_with_dynamic_hw(tmp_path):
    """With dynamic H/W the tracer leaves the outputs' batch symbolic; a fixed-batch graph
    must say 2 there, as its input does and as its Triton config does."""
    from twins_deploy.manifest import Manifest
    from twins_deploy.serving.triton_repo import TritonRepoOptions, model_for

    path, manifest = export_to(tmp_path, "svt_s", batch=BatchRange.fixed(2), dynamic_hw=True, features=True,
                               img_size=(64, 64))
    assert manifest["validation"]["passed"]
    m = onnx.load(path)
    graph_dims = {o.name: [d.dim_value if d.HasField("dim_value") else -1 for d in o.type.tensor_type.shape.dim]
                  for o in list(m.graph.input) + list(m.graph.output)}
    assert [dims[0] for dims in graph_dims.values()] == [2] * 5
    sess = ort_session(path)
    assert [o.shape[0] for o in sess.get_outputs()] == [2] * 4
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 128), dtype=np.float32)
    assert [o.shape[0] for o in sess.run(None, {"input": x})] == [2] * 4
    config = model_for(Manifest.from_dict(manifest), TritonRepoOptions(repo=tmp_path / "repo"))
    assert {t.name: list(t.dims) for t in config.inputs + config.outputs} == graph_dims


def test_fmt_trt_without_tensorrt_says_so_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    """Where TensorRT (or a GPU) is missing, --fmt trt stops at once: exit 3, one error line
    naming what is missing and how to install it; nothing built, exported or written."""
    from twins_deploy.cli.export import main as export_main
    from twins_deploy.engines.trt.preflight import preflight
    import twins_deploy.pipeline as pipeline

    found = preflight(build=True, workspace_gib=4.0)
    if not found.problems:
        pytest.skip("TensorRT and a GPU are here: the missing path cannot be shown")

    def no_work(*a, **k):
        raise AssertionError("work started before the preflight refused TensorRT")

    monkeypatch.setattr(pipeline, "build_model", no_work)
    monkeypatch.setattr(pipeline, "export_onnx", no_work)
    out = tmp_path / "o"
    rc = export_main(["--model", "svt_s", "--fmt", "trt", "--precision", "fp16", "--out-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(found.problems) >= 1
    if len(found.problems) == 1:
        assert err == [f"error: TensorRT cannot run here: {found.problems[0]}"]
    assert err[0].startswith("error: TensorRT cannot run here:") and "pip install" in " ".join(err)
    assert not out.exists()
