"""twins-export / twins-validate end to end, and every bad input leaving nothing behind."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper
from safetensors.torch import save_file

import twins_deploy.pipeline as pipeline
from helpers_export import exported_graph
from twins_deploy import create_model
from twins_deploy.cli.export import main as export_main
from twins_deploy.cli.validate import main as validate_main

SMALL = ["--min-batch", "1", "--opt-batch", "2", "--max-batch", "2", "-q"]


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*")) if d.exists() else []


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    ckpt = out / "ckpt.safetensors"
    save_file(create_model("pcpvt_s", seed=11).state_dict(), str(ckpt))
    assert export_main(["--model", "twins_pcpvt_small", "--weights", str(ckpt), "--out-dir", str(out / "o"), *SMALL]) == 0
    return out / "o" / "pcpvt_s_fp32.onnx", ckpt


def test_export_writes_model_and_manifest(exported, capsys):
    path, ckpt = exported
    manifest = json.loads(Path(f"{path}.json").read_text())
    assert manifest["model"]["name"] == "pcpvt_s" and manifest["kind"] == "onnx"
    assert manifest["weights"]["source"] == "file" and len(manifest["weights"]["sha256"]) == 64
    assert manifest["preprocess"]["interpolation"] == "bicubic" and manifest["preprocess"]["crop_pct"] == 0.9
    assert manifest["onnx"]["opset"] == 17 and manifest["tools"]["torch"] and manifest["tools"]["onnx"]
    assert manifest["validation"]["passed"] and manifest["onnx"]["roll_free"]
    assert manifest["schema"] == 2 and manifest["precision"] == "fp32"
    assert manifest["precision_plan"] == {"requested": "fp32", "route": "fp32", "io_fp16": False}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]


def test_existing_file_is_reused_when_the_same_and_needs_force_when_not(exported, capsys, monkeypatch):
    path, ckpt = exported
    graph = exported_graph(path)  # the --force run's export, stood in for
    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: graph)
    before = path.stat().st_mtime_ns
    args = ["--model", "pcpvt_s", "--weights", str(ckpt), "--out-dir", str(path.parent), *SMALL]
    assert export_main(args) == 0  # the same export again: reused, nothing rewritten
    assert path.stat().st_mtime_ns == before
    other = [a for a in args if a not in ("--weights", str(ckpt))]  # random weights: another artifact
    assert export_main(other) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "made with other inputs" in err and "--force" in err
    assert path.stat().st_mtime_ns == before
    assert export_main(args + ["--force", "--no-validate"]) == 0
    assert path.stat().st_mtime_ns != before


def test_readme_triton_step_after_an_export_reuses_it(tmp_path, capsys):
    """README: `make export`, then `twins-export --model svt_s --triton-repo repo`. The second
    command once failed (exit 2, needs --force, which then exported again): it reuses the
    artifact, writes the entry, and its steps count [1/3]..[3/3]."""
    out = tmp_path / "o"
    args = ["--model", "pcpvt_s", "--img-size", "32", "--min-batch", "1", "--opt-batch", "1", "--max-batch", "2",
            "--out-dir", str(out)]
    assert export_main([*args, "--force", "-q"]) == 0  # what `make export` runs, smaller
    path = out / "pcpvt_s_fp32_32x32.onnx"
    before = path.stat().st_mtime_ns
    capsys.readouterr()
    assert export_main([*args, "--triton-repo", str(tmp_path / "repo")]) == 0
    cap = capsys.readouterr()
    counters = [line.split("]")[0] + "]" for line in cap.err.splitlines() if line.startswith("[")]
    assert counters == ["[1/3]", "[2/3]", "[3/3]"], cap.err
    assert "reuse" in cap.err and "export pcpvt_s to ONNX" not in cap.err
    assert path.stat().st_mtime_ns == before and (tmp_path / "repo" / path.stem / "config.pbtxt").is_file()
    assert cap.out.splitlines()[:3] == [str(path), f"{path}.json", f"{tmp_path / 'repo' / path.stem}/"]


def test_predict_warns_once_when_the_weights_are_random(exported, tmp_path, capsys):
    """Class labels from seeded random weights mean nothing: one warning line on stderr
    (text and --json), none for an artifact made from a checkpoint."""
    from PIL import Image

    from twins_deploy.cli.predict import main as predict_main

    image = tmp_path / "red.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(image)
    out = tmp_path / "o"
    assert export_main(["--model", "pcpvt_s", "--img-size", "32", "--no-validate", "--out-dir", str(out), *SMALL]) == 0
    random_art = out / "pcpvt_s_fp32_32x32.onnx"
    for extra in ([], ["--json"]):
        capsys.readouterr()
        assert predict_main([str(random_art), str(image), *extra]) == 0
        cap = capsys.readouterr()
        warnings = [line for line in cap.err.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "random weights" in warnings[0] and "meaningless" in warnings[0]
        assert "--pretrained" in warnings[0] and str(image) in cap.out
    path, _ = exported  # made from a checkpoint: no warning
    capsys.readouterr()
    assert predict_main([str(path), str(image)]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_validate_passes_then_fails_on_tampered_artifact(exported, tmp_path, capsys):
    path, ckpt = exported
    report = tmp_path / "r.json"
    assert validate_main([str(path), "--weights", str(ckpt), "--batch", "1,2", "--report", str(report), "-q"]) == 0
    assert json.loads(report.read_text())["passed"] is True
    # the manifest remembers the checkpoint's path, so --weights is optional
    assert validate_main([str(path), "-q"]) == 0

    tampered = tmp_path / "pcpvt_s_fp32.onnx"
    m = onnx.load(path)
    init = next(i for i in m.graph.initializer if numpy_helper.to_array(i).size == 1000)  # head bias
    arr = numpy_helper.to_array(init).copy()
    arr[3] += 0.5  # one weight changed
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(m, tampered)
    Path(f"{tampered}.json").write_text(Path(f"{path}.json").read_text())
    capsys.readouterr()
    assert validate_main([str(tampered), "--weights", str(ckpt), "--report", str(report), "-q"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "max abs error" in out
    assert json.loads(report.read_text())["passed"] is False


def test_validate_refuses_other_weights_and_out_of_range_batch(exported, tmp_path, capsys):
    path, _ = exported
    other = tmp_path / "other.safetensors"
    save_file(create_model("pcpvt_s", seed=12).state_dict(), str(other))
    assert validate_main([str(path), "--weights", str(other), "-q"]) == 2
    assert "sha256 differs" in capsys.readouterr().err
    assert validate_main([str(path), "--batch", "9", "-q"]) == 2
    assert "outside the artifact's range 1..2" in capsys.readouterr().err
    assert validate_main([str(tmp_path / "missing.onnx")]) == 2


def test_failed_validation_exits_1_and_keeps_report(tmp_path, capsys):
    out = tmp_path / "o"
    rc = export_main(["--model", "pcpvt_s", "--out-dir", str(out), "--atol", "1e-12", *SMALL])
    assert rc == 1
    assert "failed validation" in capsys.readouterr().err
    manifest = json.loads((out / "pcpvt_s_fp32.onnx.json").read_text())
    assert manifest["validation"]["passed"] is False and manifest["validation"]["failures"]


def test_help_explains_defaults(capsys):
    with pytest.raises(SystemExit):
        export_main(["--help"])
    text = capsys.readouterr().out
    for needle in ("--precision", "default: fp32", "--dynamic-hw", "--features", "--images", "examples:",
                   "--timing-cache", "--tf32"):
        assert needle in text


@pytest.mark.parametrize("module", ["export", "validate", "inspect", "bench", "predict", "serve"])
def test_every_help_text_is_plain_text(module, capsys):
    import importlib

    main = importlib.import_module(f"twins_deploy.cli.{module}").main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: twins-{module}") and "``" not in text and ":mod:" not in text
