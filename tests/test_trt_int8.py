"""INT8 (explicit Q/DQ) engines under each supported TensorRT line's test double.

``twins-export --fmt trt --precision int8 --calib DIR`` quantizes the FP32 graph into its
Q/DQ forms and builds the plan from the S8S8 one: on 8.6 (weak typing only) with
``BuilderFlag.INT8`` and ``FP16``, on 10.x as a ``STRONGLY_TYPED`` network with no precision
flag, on 11.x (strongly typed only) with neither; never with a calibrator. The doubles refuse
what TensorRT refuses around INT8 (tests/trt_doubles/fake_trt.py, "INT8"): UINT8 or
asymmetric Q/DQ in the parser, a weakly typed Q/DQ network without the INT8 flag, precision
flags on a strongly typed network, the flag and calibrator APIs 11.x no longer has, and
(a tripwire of the double's own) ``BuilderFlag.INT8`` on a network without Q/DQ layers, i.e.
implicit calibration. The planted mistakes below are real edits of the code, each caught.

The model is svt_t (32x32, 10 classes) with seeded random weights: these tests judge the
TensorRT path, not INT8 accuracy (tests/test_int8.py does, on a trained model), so the
validation's cosine gate is lowered to 0.95 (random-weight svt_t measures about 0.987 against
the INT8 default of 0.99); everything else about the validation is the default.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers_mutant import plant
from helpers_trt import LINES, doubles, line, link_file, skip_without_int8_dot  # noqa: F401 (fixtures)
from trt_doubles import harness
from trt_doubles.fake_trt import IMPLICIT_INT8, NO_INT8_FLAG, onnx_session, read_plan
from twins_deploy.cli.export import main as export_main
from twins_deploy.errors import ExportError
from twins_deploy.manifest import read_manifest

MODEL = ["--model", "svt_t", "--img-size", "32", "--num-classes", "10", "--min-batch", "1", "--opt-batch", "2",
         "--max-batch", "4", "--min-cosine", "0.95"]
STEM = "svt_t_int8_32x32"
PLAN, S8S8, U8S8, FP32 = f"{STEM}.plan", f"{STEM}-s8s8.onnx", f"{STEM}-u8s8.onnx", "svt_t_fp32_32x32.onnx"
CALIBRATORS = ("IInt8Calibrator", "IInt8LegacyCalibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
               "IInt8MinMaxCalibrator")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """32 seeded RGB noise images, 32x32 (what the validation's random cases look like, so the
    calibrated ranges cover them)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(8)
    for i in range(32):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"img{i:02d}.png")
    return d


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory, calib_dir):
    """The FP32 graph and its two validated Q/DQ forms, made once (no TensorRT involved); an
    engine export reuses them from its output folder (hard links)."""
    skip_without_int8_dot()
    d = tmp_path_factory.mktemp("int8_onnx")
    assert export_main([*MODEL, "--fmt", "onnx", "--precision", "int8", "--calib", str(calib_dir), "--out-dir", str(d),
                        "-q"]) == 0
    assert {f.name for f in d.glob("*.onnx")} == {FP32, S8S8, U8S8}
    return d


def _link_all(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        link_file(f, out / f.name)


def _export(int8_onnx, calib_dir, tmp_path, *extra):
    out = tmp_path / "o"
    _link_all(int8_onnx, out)
    rc = export_main([*MODEL, "--fmt", "trt", "--precision", "int8", "--calib", str(calib_dir), "--out-dir", str(out),
                      "-q", *extra])
    return rc, out


def _calibrator_uses(doubles) -> list[str]:
    """Every calibrator made or handed to TensorRT (8.6, 10.x): implicit INT8, which this
    project never uses."""
    return [name for name, _ in doubles.trt.calls
            if name == "IBuilderConfig.int8_calibrator=" or name.split(".")[0] in CALIBRATORS]


def _check_int8_engine(doubles, out: Path) -> None:
    """What an INT8 engine export must have made, on the double's line."""
    plan_file = out / PLAN
    plan, m, s8s8 = read_plan(plan_file.read_bytes()), read_manifest(plan_file), read_manifest(out / S8S8)
    # built from the S8S8 Q/DQ graph (the manifest says so, and the double parsed that file)
    assert m.engine.source_onnx == {"file": S8S8, "sha256": s8s8.sha256}
    assert plan["onnx"] == str((out / S8S8).resolve()), plan["onnx"]
    assert plan["qdq_layers"] > 0 and not plan["int8_calibrator"]
    assert m.quant == s8s8.quant and m.quant.form == "s8s8" and m.quant.calibration["sha256"]
    assert m.plan.requested == "int8" and m.plan.route == "qdq"
    build, trtexec = m.engine.build, m.engine.trtexec
    if doubles.line == "8.6":  # weak typing only: explicit Q/DQ needs the INT8 flag, FP16 for the rest
        assert build["builder_flags"] == ["INT8", "FP16"] and build["network_flags"] == ["EXPLICIT_BATCH"]
        assert {"INT8", "FP16"} <= set(plan["builder_flags"]) and not plan["strongly_typed"]
        assert plan["network_flags"] == ["EXPLICIT_BATCH"]
        assert "--int8 --fp16" in trtexec and "--stronglyTyped" not in trtexec
    else:  # strongly typed: the graph's types rule, no precision flag
        assert build["builder_flags"] == [] and plan["strongly_typed"]
        assert not {"INT8", "FP16"} & set(plan["builder_flags"])
        flags = ["STRONGLY_TYPED"] if doubles.line == "10" else []  # 11 is strongly typed only: no flag
        assert build["network_flags"] == flags and plan["network_flags"] == flags
        assert ("--stronglyTyped" in trtexec) == (doubles.line == "10")
        assert "--int8" not in trtexec and "--fp16" not in trtexec
    assert trtexec.startswith(f"trtexec --onnx={S8S8} ")
    # validated: the plan opened on this line's runtime and compared with PyTorch
    v = m.validation
    assert v["passed"] and v["candidate"] == "trt-int8" and v["candidate_info"]["device"] == "cuda"
    assert v["reference"].startswith("torch-fp32") and v["thresholds"]["min_cosine"] == 0.95
    assert _calibrator_uses(doubles) == []  # never implicit INT8, on any line


# -- the export, per line -----------------------------------------------------------------------
def test_int8_engine_end_to_end(doubles, int8_onnx, calib_dir, tmp_path, capsys):
    rc, out = _export(int8_onnx, calib_dir, tmp_path)
    assert rc == 0, capsys.readouterr().err
    _check_int8_engine(doubles, out)
    # the ONNX graphs were reused, not made again: only the plan is new
    assert all((out / f).samefile(int8_onnx / f) for f in (FP32, S8S8, U8S8))
    assert not list(out.glob("*.partial"))


@pytest.mark.parametrize("line", ["8.6", "11"])
def test_runner_opens_the_plan_on_route_trt_int8(doubles, int8_onnx, calib_dir, tmp_path):
    from twins_deploy.engines.opening import open_runner
    from twins_deploy.errors import OptionError

    rc, out = _export(int8_onnx, calib_dir, tmp_path, "--no-validate")
    assert rc == 0
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    for route in (None, "trt-int8"):  # the default route of a plan-int8 artifact, and by name
        with open_runner(out / PLAN, route=route) as r:
            assert r.name == "trt-int8"
            (y,) = r.infer(x)
        np.testing.assert_allclose(y, onnx_session(str(out / S8S8)).run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(OptionError, match="plan-int8"):
        open_runner(out / PLAN, route="trt-fp16")


# -- planted mistakes: each is a real edit of the code, and each is caught -----------------------
BUILD_INT8_ARG = 'int8="INT8" in flags,'


@pytest.mark.parametrize("line", ["10", "11"])
def test_planted_int8_flag_always_on_fails_the_build(doubles, int8_onnx, calib_dir, tmp_path, monkeypatch, capsys):
    """``int8=True`` in CreateConfig: a strongly typed 10.x network refuses the flag, 11.x has none."""
    import twins_deploy.engines.trt.build as build

    plant(monkeypatch, build, BUILD_INT8_ARG, "int8=True,")
    rc, out = _export(int8_onnx, calib_dir, tmp_path)
    err = capsys.readouterr().err
    assert rc != 0 and not (out / PLAN).exists()
    assert ("INT8 builder flag is not compatible with a strongly typed network" if doubles.line == "10" else
            "int8 in CreateConfig is not available on TensorRT version 11") in err, err


def _plant_engine_source(monkeypatch, source: str) -> None:
    """The engine stage builds from another of the run's graphs than the deployed S8S8 one."""
    import twins_deploy.pipeline as pipeline

    plant(monkeypatch, pipeline, "data, info = build_engine(onnx.path, run.profile,",
          f"data, info = build_engine({source}.path, run.profile,")


def test_planted_build_from_the_u8s8_graph_is_refused_by_the_parser(doubles, int8_onnx, calib_dir, tmp_path,
                                                                     monkeypatch, capsys):
    _plant_engine_source(monkeypatch, "run.companions[0]")
    rc, out = _export(int8_onnx, calib_dir, tmp_path)
    err = capsys.readouterr().err
    word = "invalid" if doubles.line == "8.6" else "unsupported"  # onnx-tensorrt 8.6 / 10.x wording
    assert rc == 2 and f'could not build {U8S8}: "Found {word} input type of UINT8"' in err, err
    assert not (out / PLAN).exists()


def test_planted_build_from_the_fp32_graph_is_refused(doubles, int8_onnx, calib_dir, tmp_path, monkeypatch, capsys):
    """The FP32 source with the INT8 plan: build.py refuses a network without Q/DQ layers (8.6
    would calibrate implicitly, 10.x/11.x would build a float engine labelled INT8)."""
    _plant_engine_source(monkeypatch, "run.source")
    rc, out = _export(int8_onnx, calib_dir, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and f"{FP32} has no QuantizeLinear/DequantizeLinear layers" in err, err
    assert not (out / PLAN).exists()


def test_planted_build_from_the_fp32_graph_without_the_check_is_caught(doubles, int8_onnx, calib_dir, tmp_path,
                                                                       monkeypatch, capsys):
    """The same, with build.py's Q/DQ check planted out too: on 8.6 the double refuses the INT8
    flag on a network without Q/DQ (implicit calibration); on 10.x/11.x the float engine builds,
    and the export's checks fail on it."""
    import twins_deploy.engines.trt.build as build

    _plant_engine_source(monkeypatch, "run.source")
    plant(monkeypatch, build, 'if plan.route == "qdq":\n        network = _explicit_int8(',
          'if False:\n        network = _explicit_int8(')
    rc, out = _export(int8_onnx, calib_dir, tmp_path, "--no-validate")
    err = capsys.readouterr().err
    if doubles.line == "8.6":
        assert rc == 2 and IMPLICIT_INT8 in err and not (out / PLAN).exists(), err
        return
    assert rc == 0, err
    with pytest.raises(AssertionError, match="qdq_layers|onnx"):
        _check_int8_engine(doubles, out)
    assert read_plan((out / PLAN).read_bytes())["qdq_layers"] == 0


def test_planted_polygraphy_calibrator_is_caught(doubles, int8_onnx, calib_dir, tmp_path, monkeypatch, capsys):
    """A Polygraphy ``Calibrator`` passed to CreateConfig: 11.x has no IInt8EntropyCalibrator2
    (its base class); on 8.6 and 10.x it is made (and Polygraphy, seeing Q/DQ layers, never
    sets it), which the double records as implicit-INT8 machinery: the export's check fails."""
    import twins_deploy.engines.trt.build as build

    plant(monkeypatch, build, BUILD_INT8_ARG, BUILD_INT8_ARG + " calibrator=pg.Calibrator(data_loader=[]),")
    if doubles.line == "11":
        with pytest.raises(AttributeError, match="IInt8EntropyCalibrator2"):
            _export(int8_onnx, calib_dir, tmp_path)
        return
    rc, out = _export(int8_onnx, calib_dir, tmp_path)
    assert rc == 0, capsys.readouterr().err
    assert "IInt8EntropyCalibrator2.__init__" in _calibrator_uses(doubles)
    assert doubles.calls("IBuilderConfig.int8_calibrator=") == []  # Q/DQ layers: Polygraphy does not set it
    with pytest.raises(AssertionError, match="IInt8EntropyCalibrator2"):
        _check_int8_engine(doubles, out)


# -- what the doubles refuse around INT8, per line (the TensorRT API directly) ------------------
def _qdq_onnx(path: Path, zero_point: int = 0, zp_type: str = "INT8", with_zp: bool = True,
              scale: float = 0.05) -> None:
    """input -> QuantizeLinear -> DequantizeLinear -> Relu -> logits, opset 17."""
    import onnx
    from onnx import TensorProto, helper

    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [scale])]
    if with_zp:
        inits.append(helper.make_tensor("zp", getattr(TensorProto, zp_type), [], [zero_point]))
    qin = ["input", "s"] + (["zp"] if with_zp else [])
    nodes = [helper.make_node("QuantizeLinear", qin, ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", *qin[1:]], ["dq"], name="dq"),
             helper.make_node("Relu", ["dq"], ["logits"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _float_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _build(trt, onnx: Path, flags=(), strongly_typed: bool = False, calibrator=None):
    """Parse and build with the bare TensorRT API: (plan or None, parser errors, logged errors)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    net_flags = 0
    if trt.major < 10:
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed:
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        return None, [parser.get_error(i).desc() for i in range(parser.num_errors)], []
    config = builder.create_builder_config()
    inp = network.get_input(0)
    if -1 in tuple(inp.shape):  # a dynamic batch: batch 1..4
        profile = builder.create_optimization_profile()
        fixed = [d if d != -1 else 1 for d in inp.shape]
        profile.set_shape(inp.name, fixed, fixed, [d if d != -1 else 4 for d in inp.shape])
        config.add_optimization_profile(profile)
    for f in flags:
        config.set_flag(getattr(trt.BuilderFlag, f))
    if calibrator is not None:
        config.int8_calibrator = calibrator
    plan = builder.build_serialized_network(network, config)
    said = object.__getattribute__(logger, "_b").messages
    logged = [msg for sev, msg in said if sev.name in ("ERROR", "INTERNAL_ERROR")]
    return (read_plan(bytes(memoryview(plan))) if plan is not None else None), [], logged


def _explicit(line: str) -> dict:
    """How each line builds a Q/DQ network: 8.6 with the INT8 flag, 10.x strongly typed, 11.x as is."""
    return {"8.6": dict(flags=("INT8",)), "10": dict(strongly_typed=True), "11": {}}[line]


def test_parser_takes_symmetric_int8_qdq_only(doubles, tmp_path):
    trt, v10, how = doubles.trt, doubles.line != "8.6", _explicit(doubles.line)
    _qdq_onnx(tmp_path / "ok.onnx")
    plan, errors, logged = _build(trt, tmp_path / "ok.onnx", **how)
    assert errors == logged == [] and plan["qdq_layers"] == 2
    invalid = "Found unsupported input type of UINT8" if v10 else "Found invalid input type of UINT8"
    for kwargs, refusal in [
        (dict(zp_type="UINT8", zero_point=128), invalid),  # ORT's default QUInt8 activations
        (dict(zp_type="UINT8", zero_point=0), invalid),    # UINT8 even when symmetric
        (dict(zero_point=3), "TensorRT only supports symmetric quantization"),
        (dict(scale=0.0), "Scale coefficients must all be positive"),
    ]:
        _qdq_onnx(tmp_path / "bad.onnx", **kwargs)
        plan, errors, _ = _build(trt, tmp_path / "bad.onnx", **how)
        assert plan is None and any(refusal in e for e in errors), (kwargs, errors)
    _qdq_onnx(tmp_path / "nozp.onnx", with_zp=False)  # no zero point: UINT8 in ONNX; 10.x takes it as INT8
    plan, errors, logged = _build(trt, tmp_path / "nozp.onnx", **how)
    if v10:
        assert errors == logged == [] and plan["qdq_layers"] == 2
    else:
        assert plan is None and any("requires 3 inputs" in e for e in errors), errors


def test_the_u8s8_graph_is_refused_and_the_s8s8_parses(doubles, int8_onnx):
    trt = doubles.trt
    plan, errors, _ = _build(trt, int8_onnx / U8S8)
    assert plan is None and errors and "input type of UINT8" in errors[0]
    plan, errors, logged = _build(trt, int8_onnx / S8S8, **_explicit(doubles.line))
    assert errors == [] and logged == [] and plan["qdq_layers"] > 0


@pytest.mark.parametrize("line", ["8.6", "10"])
def test_weak_typing_needs_the_int8_flag_for_qdq(doubles, tmp_path):
    """NVIDIA/TensorRT#4021: under weak typing a Q/DQ network builds only with BuilderFlag.INT8."""
    _qdq_onnx(tmp_path / "q.onnx")
    plan, _, logged = _build(doubles.trt, tmp_path / "q.onnx", ("FP16",))
    assert plan is None and logged == [NO_INT8_FLAG]
    plan, _, logged = _build(doubles.trt, tmp_path / "q.onnx", ("INT8", "FP16"))
    assert plan is not None and logged == [] and {"INT8", "FP16"} <= set(plan["builder_flags"])


@pytest.mark.parametrize("line", ["8.6", "10"])
def test_implicit_int8_is_refused_where_the_flag_exists(doubles, tmp_path):
    """BuilderFlag.INT8 on a network without Q/DQ: implicit calibration, with or without a
    calibrator; 10.x's int8_calibrator still works but warns that it is deprecated."""
    trt = doubles.trt
    _float_onnx(tmp_path / "f.onnx")
    plan, _, logged = _build(trt, tmp_path / "f.onnx", ("INT8",))
    assert plan is None and logged == [IMPLICIT_INT8]

    class Calib(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

    if doubles.line == "10":
        with pytest.warns(DeprecationWarning, match="Superseded by explicit quantization"):
            plan, _, logged = _build(trt, tmp_path / "f.onnx", ("INT8",), calibrator=Calib())
    else:
        plan, _, logged = _build(trt, tmp_path / "f.onnx", ("INT8",), calibrator=Calib())
    assert plan is None and logged == [IMPLICIT_INT8 + " (int8_calibrator is set)"]
    assert len(doubles.calls("IBuilderConfig.int8_calibrator=")) == 1  # recorded
    # strongly typed 10.x: the INT8 flag itself is refused
    _qdq_onnx(tmp_path / "q.onnx")
    if doubles.line == "10":
        plan, _, logged = _build(trt, tmp_path / "q.onnx", ("INT8",), strongly_typed=True)
        assert plan is None and logged == ["INT8 builder flag is not compatible with a strongly typed network"]


@pytest.mark.parametrize("line", ["11"])
def test_11_has_no_int8_flag_and_no_calibrators(doubles, tmp_path):
    trt = doubles.trt
    for name in ("INT8", "FP16"):
        with pytest.raises(AttributeError):
            getattr(trt.BuilderFlag, name)
    for name in CALIBRATORS:
        with pytest.raises(AttributeError):
            getattr(trt, name)
    config = trt.Builder(trt.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        config.int8_calibrator = object()
    _qdq_onnx(tmp_path / "q.onnx")  # strongly typed only: the Q/DQ network builds with no flag
    plan, errors, logged = _build(trt, tmp_path / "q.onnx")
    assert errors == logged == [] and plan["strongly_typed"] and plan["qdq_layers"] == 2


@pytest.mark.parametrize("line", ["8.6"])
def test_qdq_needs_int8_hardware(doubles, tmp_path):
    """NVIDIA/TensorRT#3157: a P100 (SM 6.0) cannot build Q/DQ layers; 8.6 still builds for it."""
    _qdq_onnx(tmp_path / "q.onnx")
    doubles.device.compute_capability = (6, 0)
    plan, _, logged = _build(doubles.trt, tmp_path / "q.onnx", ("INT8",))
    assert plan is None and "require hardware with Int8 support" in logged[0]
    _float_onnx(tmp_path / "f.onnx")
    plan, _, logged = _build(doubles.trt, tmp_path / "f.onnx")
    assert plan is not None and logged == []


def test_engine_loader_refuses_a_graph_without_qdq(doubles, tmp_path):
    """build.py's own check, below the pipeline: the INT8 plan never reaches TensorRT's builder
    with a float graph."""
    from twins_deploy.engines.trt.build import build_engine
    from twins_deploy.engines.trt.options import TrtBuildOptions
    from twins_deploy.engines.trt.profile import Profile
    from twins_deploy.precision import resolve_precision

    _float_onnx(tmp_path / "f.onnx")
    shapes = Profile("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    plan = resolve_precision("int8", False, doubles.trt.major)
    with pytest.raises(ExportError, match="f.onnx has no QuantizeLinear/DequantizeLinear layers"):
        build_engine(tmp_path / "f.onnx", shapes, TrtBuildOptions(timing_cache=None), plan)
    assert not doubles.calls("Builder.build_serialized_network")
    _qdq_onnx(tmp_path / "q.onnx")
    data, info = build_engine(tmp_path / "q.onnx", shapes, TrtBuildOptions(timing_cache=None), plan)
    assert read_plan(data)["qdq_layers"] == 2 and info.route == "qdq"
