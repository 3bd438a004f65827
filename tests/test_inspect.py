"""The roll-free and TensorRT-compatibility checks must catch graphs that break them."""
from __future__ import annotations

import io
import json

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from twins_deploy.cli.inspect import main as inspect_main
from twins_deploy.exporters.inspect import inspect_onnx


def _graph(nodes, opset=17, inputs=("x",), outputs=("y",), domains=()):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, [1, 8]) for i in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
    )
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(g, opset_imports=imports, ir_version=8)


# timm's Swin traces Python checks on tensors (the TracerWarnings are timm's, about its own graph)
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_swin_export_is_not_roll_free():
    timm = pytest.importorskip("timm")
    swin = timm.create_model("swin_tiny_patch4_window7_224", exportable=True).eval()
    buf = io.BytesIO()
    torch.onnx.export(swin, (torch.randn(1, 3, 224, 224),), buf, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    report = inspect_onnx(onnx.load_from_string(buf.getvalue()))
    assert not report.roll_free
    assert any("Concat of 2 Slices" in f for f in report.roll_findings)


def test_hand_made_roll_pattern_is_found_but_shape_math_is_not():
    starts0, ends0 = helper.make_tensor("s0", TensorProto.INT64, [1], [6]), helper.make_tensor("e0", TensorProto.INT64, [1], [8])
    starts1, ends1 = helper.make_tensor("s1", TensorProto.INT64, [1], [0]), helper.make_tensor("e1", TensorProto.INT64, [1], [6])
    axes = helper.make_tensor("ax", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Slice", ["x", "s0", "e0", "ax"], ["a"], name="tail"),
        helper.make_node("Slice", ["x", "s1", "e1", "ax"], ["b"], name="head"),
        helper.make_node("Concat", ["a", "b"], ["y"], axis=1, name="shift"),
        # shape arithmetic of the same form on an int64 tensor is not a roll
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Slice", ["shp", "s1", "s0"], ["p"]),
        helper.make_node("Slice", ["shp", "s1", "s0"], ["q"]),
        helper.make_node("Concat", ["p", "q"], ["shape2"], axis=0, name="shapecat"),
    ]
    m = _graph(nodes, outputs=("y", "shape2"))
    m.graph.initializer.extend([starts0, ends0, starts1, ends1, axes])
    findings = inspect_onnx(m).roll_findings
    assert len(findings) == 1 and findings[0].startswith("shift")


def test_unsupported_and_custom_ops_are_named_per_version():
    nodes = [helper.make_node("Unique", ["x"], ["u"], name="uniq"),
             helper.make_node("Gelu", ["x"], ["g"], name="gelu20"),
             helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", name="plugin")]
    report = inspect_onnx(_graph(nodes, opset=20, outputs=("u", "g", "y"), domains=("com.example",)))
    by = {v.version: v for v in report.trt}
    assert not any(v.compatible for v in report.trt)
    assert any("uniq (Unique)" in p for p in by["10.x"].problems)
    assert any("plugin (com.example::FancyOp)" in p and "plugin" in p for p in by["11.x"].problems)
    assert any("opset 20 outside 9..17" in p for p in by["8.6"].problems)
    assert any("gelu20 (Gelu)" in p for p in by["8.6"].problems)
    assert not any("Gelu" in p for p in by["10.x"].problems)


def test_dynamic_pad_axes_are_flagged():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["pads"], to=TensorProto.INT64),
             helper.make_node("Pad", ["x", "pads", "", "s"], ["y"], name="dynpad")]
    report = inspect_onnx(_graph(nodes, opset=18))
    assert any("dynpad (Pad): Pad 'axes' must be a constant" in p for v in report.trt for p in v.problems)


def test_cli_json_and_exit_codes(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    onnx.save(_graph([helper.make_node("Unique", ["x"], ["y"], name="uniq")]), bad)
    assert inspect_main([str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["op_census"] == {"Unique": 1} and data["trt"][0]["compatible"] is False
    good = tmp_path / "good.onnx"
    onnx.save(_graph([helper.make_node("Relu", ["x"], ["y"])]), good)
    assert inspect_main([str(good)]) == 0
    assert "TensorRT 11.x: compatible" in capsys.readouterr().out
    (tmp_path / "junk.onnx").write_bytes(b"\x08junk")
    assert inspect_main([str(tmp_path / "junk.onnx")]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
