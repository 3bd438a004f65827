"""What a TensorRT build reports, under the doubles: whether the timing cache was really
used (``timing_cache_loaded`` says what TensorRT answered, not that a file exists), and
that Polygraphy's logging reaches neither stdout nor stderr: a build prints only our
output, and a failed build is one error quoting TensorRT's reason once.

The doubles model TensorRT's answers (tests/trt_doubles/fake_trt.py): a timing cache from
another TensorRT version is refused by ``set_timing_cache(..., ignore_mismatch=False)``, an
unreadable blob makes ``create_timing_cache`` return None.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from trt_doubles import harness
from trt_doubles.fake_trt import BuilderB, IBuilderConfigB
from twins_deploy.engines.trt.options import TrtBuildOptions
from twins_deploy.engines.trt.profile import Profile
from twins_deploy.errors import ExportError
from twins_deploy.precision import PrecisionPlan

SHAPES = Profile("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))


def _tiny_onnx(path: Path, batch: int | str = 1, hw: int = 8) -> Path:
    import onnx
    from onnx import TensorProto, helper

    shape = [batch, 3, hw, hw]
    g = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def colored_unprobed(monkeypatch):
    """Polygraphy prints its "'colored' module is not installed" notice once per process,
    the first time it formats a message with colors: make this test the first time."""
    import polygraphy.logger.logger as pg_logger

    monkeypatch.setattr(pg_logger, "COLORED_MODULE_PRESENT", None)


def _build(tmp_path, cache: Path | None):
    from twins_deploy.engines.trt.build import build_engine

    onnx = tmp_path / "m.onnx"
    if not onnx.exists():
        _tiny_onnx(onnx)
    opts = TrtBuildOptions(timing_cache=str(cache) if cache is not None else None)
    return build_engine(onnx, SHAPES, opts, PrecisionPlan())


def _trt_says(severity: str, message: str, then=None):
    """A ``Builder.build_serialized_network`` that logs ``message`` through the builder's
    logger (Polygraphy's TensorRT logger), then builds as the double does (or returns
    ``then``'s result)."""
    real = BuilderB.build_serialized_network

    def build(self, network, config, *extra):
        self.logger.log(getattr(type(self.logger), severity), message)
        return real(self, network, config, *extra) if then is None else then()

    return build


# -- (a) timing_cache_loaded is what TensorRT answered -----------------------------------------
@pytest.mark.parametrize("line", ["10", "11"])
def test_cache_from_another_tensorrt_version_is_not_reported_loaded(monkeypatch, tmp_path, line):
    doubles = harness.install(monkeypatch, line)
    cache = tmp_path / "shared.timing-cache"
    foreign = {"version": "8.6.1.6", "entries": ["8.6.1.6/sm86/old-tactic"]}
    cache.write_text(json.dumps(foreign))
    _, info = _build(tmp_path, cache)
    assert [c["ignore_mismatch"] for c in doubles.calls("IBuilderConfig.set_timing_cache")][-1] is False
    assert info.timing_cache == str(cache)
    assert info.timing_cache_loaded is False and info.to_dict()["timing_cache_loaded"] is False
    assert any(f"timing cache {cache} not used: TensorRT refused it" in w for w in info.warnings), info.warnings
    # the build filled a cache of this version and saved it over the foreign one ...
    saved = json.loads(cache.read_bytes())
    assert saved["version"] == doubles.trt.__version__ and saved["entries"]
    # ... which the next build loads
    _, again = _build(tmp_path, cache)
    assert again.timing_cache_loaded is True and not any("timing cache" in w for w in again.warnings)


def test_unreadable_cache_is_not_reported_loaded(monkeypatch, tmp_path):
    doubles = harness.install(monkeypatch, "10")
    cache = tmp_path / "corrupt.timing-cache"
    corrupt = b"\x00\x01 not a timing cache"
    cache.write_bytes(corrupt)
    _, info = _build(tmp_path, cache)
    loads = doubles.calls("IBuilderConfig.create_timing_cache")
    assert any(bytes(c["serialized_timing_cache"]) == corrupt for c in loads)  # TensorRT was asked
    assert info.timing_cache_loaded is False
    assert any("not used: TensorRT could not read it" in w for w in info.warnings), info.warnings
    assert json.loads(cache.read_bytes())["version"] == doubles.trt.__version__  # replaced by a good one


def test_cache_tensorrt_says_it_ignored_is_not_reported_loaded(monkeypatch, tmp_path):
    """TensorRT may accept the blob yet log that it dropped it (a cache from another
    device): its word counts, and is quoted."""
    harness.install(monkeypatch, "10")
    cache = tmp_path / "c.timing-cache"
    _build(tmp_path, cache)  # a good cache of this version
    real = IBuilderConfigB.create_timing_cache
    said = f"Timing cache from a different device: entries ignored ({uuid.uuid4().hex[:6]})"

    def create(self, serialized_timing_cache):
        if bytes(serialized_timing_cache):
            builder = object.__getattribute__(self.builder, "_b")
            builder.logger.log(type(builder.logger).WARNING, said)
            return real(self, b"")
        return real(self, serialized_timing_cache)

    monkeypatch.setattr(IBuilderConfigB, "create_timing_cache", create)
    _, info = _build(tmp_path, cache)
    assert info.timing_cache_loaded is False
    assert any("not used: TensorRT ignored it" in w and f'TensorRT: "{said}"' in w for w in info.warnings)
    assert not any(w == said for w in info.warnings)  # reported once, with the cache


def test_cache_reported_loaded_only_when_tensorrt_took_it(monkeypatch, tmp_path):
    harness.install(monkeypatch, "10")
    cache = tmp_path / "new" / "c.timing-cache"
    cache.parent.mkdir()
    _, first = _build(tmp_path, cache)  # no file yet: nothing loaded, a cache saved
    assert first.timing_cache_loaded is False and cache.is_file() and first.warnings == []
    _, second = _build(tmp_path, cache)
    assert second.timing_cache_loaded is True and second.warnings == []
    _, off = _build(tmp_path, None)
    assert off.timing_cache is None and off.timing_cache_loaded is False


# -- (b) Polygraphy's logging stays out of stdout and stderr -----------------------------------
def test_build_with_tensorrt_warnings_prints_nothing(monkeypatch, tmp_path, capfd, colored_unprobed):
    harness.install(monkeypatch, "10")
    said = f"Detected layernorm nodes in FP16 ({uuid.uuid4().hex[:6]})"  # Polygraphy logs a warning once per text
    monkeypatch.setattr(BuilderB, "build_serialized_network", _trt_says("WARNING", said))
    _tiny_onnx(tmp_path / "m.onnx")
    capfd.readouterr()
    _, info = _build(tmp_path, None)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no "'colored' module is not installed" notice, no "[W] ..."
    assert info.warnings == [said]  # kept for the manifest, without Polygraphy's "[W] "


def test_failed_build_is_one_error_quoting_tensorrt(monkeypatch, tmp_path, capfd, colored_unprobed):
    harness.install(monkeypatch, "10")
    reason = "[network.cpp::validate::3000] Error Code 4: API Usage Error (no input)"
    monkeypatch.setattr(BuilderB, "build_serialized_network", _trt_says("ERROR", reason, then=lambda: None))
    _tiny_onnx(tmp_path / "m.onnx")
    capfd.readouterr()
    with pytest.raises(ExportError) as e:
        _build(tmp_path, None)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    msg = str(e.value)
    assert msg == f'TensorRT {harness.LINES["10"][0]} could not build m.onnx: "{reason}"'


def test_failure_without_tensorrt_words_gives_polygraphys(monkeypatch, tmp_path, capfd):
    harness.install(monkeypatch, "10")
    monkeypatch.setattr(BuilderB, "build_serialized_network", lambda self, network, config, *e: None)
    _tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(ExportError) as e:
        _build(tmp_path, None)
    msg = str(e.value)
    assert msg.startswith(f"TensorRT {harness.LINES['10'][0]} could not build m.onnx: Invalid Engine")
    assert msg.count("Invalid Engine") == 1 and "[!]" not in msg
    assert capfd.readouterr().out == ""


@pytest.fixture
def tiny_export(monkeypatch, tmp_path):
    """``twins-export --fmt trt`` with the ONNX stage making a tiny graph (the TensorRT stage
    and the CLI are the real ones; the svt_s ONNX export would take 10-20 s)."""
    import onnx

    from twins_deploy import pipeline
    from twins_deploy.cli.export import main as export_main
    from twins_deploy.exporters.onnx_export import ExportInfo

    graph = onnx.load(_tiny_onnx(tmp_path / "tiny.onnx", batch="batch", hw=32))
    monkeypatch.setattr(pipeline, "export_onnx", lambda model, spec, plan: (graph, ExportInfo()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    args = ["--model", "svt_s", "--img-size", "32", "--min-batch", "1", "--opt-batch", "1", "--max-batch", "2",
            "--fmt", "trt", "--no-validate", "--out-dir", str(tmp_path / "o")]
    return lambda *extra: export_main([*args, *extra])


def test_twins_export_trt_stdout_carries_only_our_output(monkeypatch, tmp_path, capfd, colored_unprobed, tiny_export):
    harness.install(monkeypatch, "10")
    monkeypatch.setattr(BuilderB, "build_serialized_network", _trt_says("WARNING", f"tactic {uuid.uuid4().hex}"))
    capfd.readouterr()
    assert tiny_export() == 0
    out, err = capfd.readouterr()
    plan = tmp_path / "o" / "svt_s_fp32_32x32.plan"
    assert out.splitlines() == [str(plan), f"{plan}.json", "not validated"]
    assert "colored" not in err and "[W]" not in err


def test_twins_export_trt_failure_is_reported_once(monkeypatch, tmp_path, capfd, colored_unprobed, tiny_export):
    harness.install(monkeypatch, "10")
    reason = f"Error Code 2: Internal Error (out of memory {uuid.uuid4().hex[:6]})"
    monkeypatch.setattr(BuilderB, "build_serialized_network", _trt_says("ERROR", reason, then=lambda: None))
    capfd.readouterr()
    assert tiny_export("-q") == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert err.count(reason) == 1 and "Invalid Engine" not in err and "colored" not in err
    first = err.strip().splitlines()[0]
    assert first == f'error: TensorRT {harness.LINES["10"][0]} could not build svt_s_fp32_32x32.onnx: "{reason}"'


def test_cache_that_cannot_be_read_is_not_reported_loaded(monkeypatch, tmp_path):
    harness.install(monkeypatch, "10")
    cache = tmp_path / "c.timing-cache"
    _build(tmp_path, cache)
    real = Path.read_bytes

    def read_bytes(self):
        if self == cache:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    _, info = _build(tmp_path, cache)
    assert info.timing_cache_loaded is False
    assert any("not used: the file could not be read" in w and "PermissionError" in w for w in info.warnings)
