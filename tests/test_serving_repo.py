"""The Triton model repository entry: config.pbtxt from the manifest, checked against
Triton's own ModelConfig schema, written whole or not at all, refused before any work.

The schema checks need ``tritonclient[grpc]`` (its ``model_config_pb2``), which the serving
environment has (``make test`` runs this file there too); elsewhere they skip.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from twins_deploy.artifacts import MAX_STEM_LEN, file_sha256, manifest_path
from twins_deploy.cli.export import main as export_main
from twins_deploy.errors import ArtifactError, OptionError
from twins_deploy.exporters.spec import BatchRange, ExportSpec
from twins_deploy.manifest import InputInfo, Manifest, ModelInfo, read_manifest
from twins_deploy.precision import PrecisionPlan
from twins_deploy.registry import Preprocess, get_config
from twins_deploy.serving.triton_repo import (TritonModel, TritonRepoOptions, feature_dims, find_entries, model_for,
                                              read_entry, write_entry)
from twins_deploy.weights import WeightsInfo


def _schema():
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the serving environment: make test)")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format, model_config_pb2


def parse(text: str):
    """config.pbtxt -> Triton's ModelConfig message (fails on anything Triton would not read)."""
    text_format, mc = _schema()
    return text_format.Parse(text, mc.ModelConfig())


def manifest_of(kind: str = "onnx", *, model: str = "svt_s", batch: BatchRange = BatchRange(1, 8, 32),
                img_size: tuple[int, int] = (224, 224), dynamic_hw: bool = False, features: bool = False,
                precision: str = "fp32", io_fp16: bool = False) -> Manifest:
    """A manifest as the pipeline writes it, without exporting anything."""
    spec = ExportSpec(model=model, img_size=img_size, batch=batch, dynamic_hw=dynamic_hw, features=features)
    plan = PrecisionPlan(precision, "fp32" if precision == "fp32" else "strong", io_fp16)
    stem = spec.stem(precision, io_fp16)
    cfg = get_config(model)
    axes = spec.dynamic_axes().get("input", {})
    return Manifest(
        kind=kind, artifact=f"{stem}.{'plan' if kind == 'trt' else 'onnx'}",
        model=ModelInfo(model, features, 1000, cfg.paper_name, cfg.timm_name, cfg.to_dict()),
        weights=WeightsInfo("random", seed=0), spec=spec, plan=plan,
        input=InputInfo("input", spec.input_shape(), plan.io_dtype(kind), axes,
                        {"min": batch.min, "opt": batch.opt, "max": batch.max}),
        outputs=spec.output_names, preprocess=Preprocess(), tools={}, created="", sha256=None)


def test_classifier_config_follows_the_manifest_and_parses_as_triton_model_config(tmp_path):
    m = manifest_of()
    cfg = parse(model_for(m, TritonRepoOptions(repo=tmp_path)).to_pbtxt("a comment\nover two lines"))
    _, mc = _schema()
    assert cfg.name == "svt_s_fp32" and cfg.platform == "onnxruntime_onnx" and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == m.spec.batch.max == 32
    (inp,) = cfg.input
    assert inp.name == m.input.name and list(inp.dims) == m.input.shape[1:] == [3, 224, 224]
    assert inp.data_type == mc.TYPE_FP32 and inp.format == mc.ModelInput.FORMAT_NCHW
    assert [(o.name, list(o.dims), o.data_type) for o in cfg.output] == [("logits", [1000], mc.TYPE_FP32)]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 32]  # the range's opt and max
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert cfg.parameters["twins_deploy_manifest"].string_value == "1/model.onnx.json"


def test_engine_fp16_io_backbone_with_dynamic_hw(tmp_path):
    m = manifest_of("trt", precision="fp16", io_fp16=True, features=True, dynamic_hw=True, batch=BatchRange(1, 4, 16))
    cfg = parse(model_for(m, TritonRepoOptions(repo=tmp_path, instances=2)).to_pbtxt())
    _, mc = _schema()
    assert cfg.platform == "tensorrt_plan" and cfg.backend == "tensorrt" and cfg.max_batch_size == 16
    assert list(cfg.input[0].dims) == [3, -1, -1] and cfg.input[0].data_type == mc.TYPE_FP16
    embed = get_config("svt_s").embed_dims
    assert [(o.name, list(o.dims), o.data_type) for o in cfg.output] == [
        (f"stage{i + 1}", [c, -1, -1], mc.TYPE_FP16) for i, c in enumerate(embed)]
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 2)]
    assert cfg.parameters["twins_deploy_manifest"].string_value == "1/model.plan.json"


def test_fixed_batch_keeps_the_batch_in_the_dims_and_has_no_dynamic_batching(tmp_path):
    m = manifest_of(batch=BatchRange.fixed(4), features=True, img_size=(230, 301), model="pcpvt_s")
    cfg = parse(model_for(m, TritonRepoOptions(repo=tmp_path)).to_pbtxt())
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [4, 3, 230, 301]
    # each patch embedding floors: 230 -> 57 -> 28 -> 14 -> 7, 301 -> 75 -> 37 -> 18 -> 9
    assert [list(o.dims) for o in cfg.output] == [[4, 64, 57, 75], [4, 128, 28, 37], [4, 320, 14, 18], [4, 512, 7, 9]]


def test_feature_dims_equal_the_models_maps():
    import torch

    from twins_deploy import create_model

    spec = ExportSpec(model="svt_s", img_size=(97, 130), features=True)
    with torch.no_grad():
        maps = create_model("svt_s", features=True).eval()(torch.zeros(1, 3, 97, 130))
    assert [tuple(t.shape[1:]) for t in maps] == feature_dims(spec, get_config("svt_s").embed_dims)


def test_onnx_on_gpu_with_onnxruntime_tensorrt_accelerator(tmp_path):
    m = manifest_of(precision="fp16")
    cfg = parse(model_for(m, TritonRepoOptions(repo=tmp_path, device="gpu", ort_trt=True, preferred_batch=(4, 16),
                                               queue_delay_us=0, name="svt-s.v2")).to_pbtxt())
    _, mc = _schema()
    assert cfg.name == "svt-s.v2" and cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 0


@pytest.mark.parametrize("manifest", [manifest_of(), manifest_of("trt", features=True, dynamic_hw=True),
                                      manifest_of(batch=BatchRange.fixed(2))], ids=["onnx", "trt-features", "fixed"])
def test_reading_a_written_config_gives_the_same_model(tmp_path, manifest):
    _schema()
    model = model_for(manifest, TritonRepoOptions(repo=tmp_path, instances=3))
    assert TritonModel.from_pbtxt(model.to_pbtxt("comment")) == model


def test_a_config_triton_would_refuse_is_refused():
    _schema()
    with pytest.raises(ArtifactError, match="not a valid Triton ModelConfig"):
        TritonModel.from_pbtxt('name: "x"\nmax_batch_size: 4\ndynamic_batching { preferred_batch_size: "eight" }')
    with pytest.raises(ArtifactError, match="platform 'pytorch_libtorch' is not one"):
        TritonModel.from_pbtxt('name: "x"\nplatform: "pytorch_libtorch"')


@pytest.mark.parametrize("opts, manifest, message", [
    (dict(device="cpu"), manifest_of("trt"), "runs on a GPU only"),
    (dict(ort_trt=True), manifest_of(), "TensorRT accelerator applies to ONNX models on a GPU"),
    (dict(), manifest_of(batch=BatchRange(2, 4, 8)), "export with --min-batch 1"),
    (dict(preferred_batch=(64,)), manifest_of(), r"outside the artifact's batch range 1..32"),
    (dict(preferred_batch=(2,)), manifest_of(batch=BatchRange.fixed(2)), "fixed-batch artifact"),
])
def test_what_triton_could_not_serve_is_refused(tmp_path, opts, manifest, message):
    with pytest.raises(OptionError, match=message):
        model_for(manifest, TritonRepoOptions(repo=tmp_path, **opts))


@pytest.mark.parametrize("kw, message", [(dict(name="../x"), "may hold only"), (dict(name=".hidden"), "may hold only"),
                                         (dict(name="w" * 129), "at most 128"),
                                         (dict(instances=0), "1..64"), (dict(instances=65), "1..64"),
                                         (dict(device="tpu"), "must be one of"),
                                         (dict(queue_delay_us=-1), "0..10000000"),
                                         (dict(queue_delay_us=10**12), "0..10000000")])
def test_bad_options(tmp_path, kw, message):
    with pytest.raises(OptionError, match=message):
        TritonRepoOptions(repo=tmp_path, **kw)


def _fake_artifact(d: Path, manifest: Manifest, payload: bytes = b"not really onnx") -> tuple[Path, Manifest]:
    d.mkdir(parents=True, exist_ok=True)
    art = d / manifest.artifact
    art.write_bytes(payload)
    manifest = replace(manifest, sha256=file_sha256(art), size_bytes=len(payload))
    manifest_path(art).write_text(json.dumps(manifest.to_dict()))
    return art, manifest


def _tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_a_file_where_the_entry_goes_is_refused_even_with_overwrite(tmp_path):
    art, m = _fake_artifact(tmp_path / "out", manifest_of())
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "svt_s_fp32").write_text("the user's file")
    with pytest.raises(ArtifactError, match="is a file, where the Triton model folder goes"):
        write_entry(TritonRepoOptions(repo=repo), art, m, overwrite=True)
    assert _tree(repo) == ["svt_s_fp32"] and (repo / "svt_s_fp32").read_text() == "the user's file"


def test_the_longest_name_is_written_into_a_long_named_repository(tmp_path):
    """The staging folder's name adds to the entry's: both must fit a file name (255 bytes)."""
    art, m = _fake_artifact(tmp_path / "out", manifest_of())
    repo = tmp_path / ("r" * 250)
    name = "w" * MAX_STEM_LEN
    entry = write_entry(TritonRepoOptions(repo=repo, name=name), art, m)
    assert entry == repo / name and (entry / "config.pbtxt").is_file()
    write_entry(TritonRepoOptions(repo=repo, name=name), art, m, overwrite=True)  # the aside folder fits too
    assert _tree(repo) == [name, f"{name}/1", f"{name}/1/model.onnx", f"{name}/1/model.onnx.json",
                           f"{name}/config.pbtxt"]


def test_entry_is_written_whole_and_replaced_only_with_overwrite(tmp_path):
    art, m = _fake_artifact(tmp_path / "out", manifest_of())
    repo = tmp_path / "models" / "repo"
    entry = write_entry(TritonRepoOptions(repo=repo), art, m)
    assert entry == repo / "svt_s_fp32"
    assert _tree(repo) == ["svt_s_fp32", "svt_s_fp32/1", "svt_s_fp32/1/model.onnx", "svt_s_fp32/1/model.onnx.json",
                           "svt_s_fp32/config.pbtxt"]
    assert (entry / "1/model.onnx").read_bytes() == art.read_bytes()
    assert (entry / "1/model.onnx.json").read_text() == manifest_path(art).read_text()
    assert read_manifest(entry / "1" / "model.onnx").sha256 == m.sha256  # the copy opens with every check
    assert "sha256 " + m.sha256 in (entry / "config.pbtxt").read_text()  # provenance in the config too

    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        write_entry(TritonRepoOptions(repo=repo), art, m)
    art2, m2 = _fake_artifact(tmp_path / "out2", manifest_of(), b"another model")
    write_entry(TritonRepoOptions(repo=repo, instances=2), art2, m2, overwrite=True)
    assert (entry / "1/model.onnx").read_bytes() == b"another model"
    assert "count: 2" in (entry / "config.pbtxt").read_text()
    # nothing staged is left, neither in the repository nor beside it
    assert _tree(tmp_path / "models") == ["repo", *(f"repo/{p}" for p in _tree(repo))]


def test_a_failed_write_leaves_the_previous_entry_untouched(tmp_path):
    art, m = _fake_artifact(tmp_path / "out", manifest_of())
    repo = tmp_path / "repo"
    entry = write_entry(TritonRepoOptions(repo=repo), art, m)
    before = {p: p.read_bytes() for p in entry.rglob("*") if p.is_file()}
    art.write_bytes(b"tampered after export")  # no longer the file its manifest describes
    with pytest.raises(ArtifactError, match="differs from its manifest"):
        write_entry(TritonRepoOptions(repo=repo), art, m, overwrite=True)
    assert {p: p.read_bytes() for p in entry.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "repo"]
    with pytest.raises(ArtifactError, match="differs from its manifest"):  # a new repository is not even created
        write_entry(TritonRepoOptions(repo=tmp_path / "new"), art, m)
    assert not (tmp_path / "new").exists()


def test_reading_entries_back(tmp_path):
    _schema()
    repo = tmp_path / "repo"
    for name in ("b_model", "a_model"):
        art, m = _fake_artifact(tmp_path / name, manifest_of())
        write_entry(TritonRepoOptions(repo=repo, name=name), art, m)
    entries = find_entries(repo)
    assert [(e.model.name, e.artifact) for e in entries] == [
        ("a_model", repo / "a_model/1/model.onnx"), ("b_model", repo / "b_model/1/model.onnx")]
    (repo / "b_model" / "config.pbtxt").write_text((repo / "a_model" / "config.pbtxt").read_text())
    with pytest.raises(ArtifactError, match="names the model 'a_model'.*folder name 'b_model'"):
        read_entry(repo / "b_model")
    (repo / "b_model").rename(tmp_path / "b_model_aside")
    (repo / "empty").mkdir()
    with pytest.raises(ArtifactError, match="empty has no config.pbtxt"):
        find_entries(repo)


def _unreadable(kind: str, cfg: Path) -> str:
    """Spoil an entry's config.pbtxt in one way; returns what the refusal must say."""
    text = cfg.read_text()

    def swap(old: str, new: str) -> None:
        assert old in text, (old, text)
        cfg.write_text(text.replace(old, new))

    if kind == "not-utf8":
        cfg.write_bytes(text.encode() + b"# \xff\xfe\n")
        return "not UTF-8"
    if kind == "huge":
        with open(cfg, "a") as f:
            f.write(("#" * 1023 + "\n") * 1025)
        return "at most 1,048,576 bytes are read"
    if kind in ("fifo", "folder"):
        cfg.unlink()
        os.mkfifo(cfg) if kind == "fifo" else cfg.mkdir()
        return "named pipe" if kind == "fifo" else "a folder there"
    if kind == "instances":
        swap("count: 1", "count: 1000000")
        return "instances must be 1..64"
    if kind == "delay":
        swap("max_queue_delay_microseconds: 100", "max_queue_delay_microseconds: 99999999999")
        return "queue delay must be 0..10000000"
    if kind == "preferred":
        swap("preferred_batch_size: [ 8, 32 ]", "preferred_batch_size: [ 8, 2000000000 ]")
        return "preferred batch sizes must be 1..max_batch_size (32)"
    if kind == "long-name":
        swap('name: "a_model"', f'name: "{"n" * 100_000}"')
        return "at most 128"
    if kind == "garbage":
        cfg.write_text(text + "x" * 100_000)
        return "not a valid Triton ModelConfig"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["not-utf8", "huge", "fifo", "folder", "instances", "delay", "preferred", "long-name",
                                  "garbage"])
def test_an_entry_config_that_is_unreadable_or_out_of_bounds_is_refused_in_one_bounded_line(tmp_path, kind):
    """A config.pbtxt is read back by twins-serve and twins-bench --serve: what no export
    writes (special files, bytes that are not text, sizes and counts no machine holds) is
    refused, naming what is wrong, in a line that does not echo a huge value whole."""
    _schema()
    repo = tmp_path / "repo"
    art, m = _fake_artifact(tmp_path / "a", manifest_of())
    write_entry(TritonRepoOptions(repo=repo, name="a_model"), art, m)
    needle = _unreadable(kind, repo / "a_model" / "config.pbtxt")
    with pytest.raises(ArtifactError) as e:
        find_entries(repo)
    assert needle in str(e.value) and len(str(e.value)) < 1000 and "\n" not in str(e.value), str(e.value)[:2000]


# -- twins-export --triton-repo, end to end -------------------------------------------------------
def test_export_writes_a_repository_entry_matching_the_manifest(svt_s_triton_repo):
    art, repo = svt_s_triton_repo
    entry = repo / "svt_s_fp32"
    assert _tree(repo) == ["svt_s_fp32", "svt_s_fp32/1", "svt_s_fp32/1/model.onnx", "svt_s_fp32/1/model.onnx.json",
                           "svt_s_fp32/config.pbtxt"]
    manifest = read_manifest(entry / "1" / "model.onnx")
    assert manifest.passed and file_sha256(entry / "1" / "model.onnx") == manifest.sha256 == read_manifest(art).sha256
    text = (entry / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in text and "max_batch_size: 4" in text and "dims: [ 3, 224, 224 ]" in text
    try:
        cfg = parse(text)
    except pytest.skip.Exception:
        return  # the schema check runs in the serving environment
    assert cfg.max_batch_size == manifest.spec.batch.max
    assert list(cfg.input[0].dims) == manifest.input.shape[1:]
    assert [o.name for o in cfg.output] == manifest.outputs
    assert list(cfg.output[0].dims) == [manifest.model.num_classes]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [manifest.spec.batch.opt, manifest.spec.batch.max]


def test_export_refuses_an_existing_entry_before_any_work(svt_s_triton_repo, tmp_path, capsys):
    _, repo = svt_s_triton_repo
    before = {p: p.stat().st_mtime_ns for p in repo.rglob("*")}
    out = tmp_path / "fresh"
    code = export_main(["--model", "svt_s", "--opt-batch", "2", "--max-batch", "4", "--out-dir", str(out),
                        "--triton-repo", str(repo), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: Triton model repository entry") and "svt_s_fp32' already exists" in err[0]
    assert not out.exists()  # refused before the export started
    assert {p: p.stat().st_mtime_ns for p in repo.rglob("*")} == before


@pytest.mark.parametrize("args, message", [
    (["--fmt", "trt", "--triton-device", "cpu"], "runs on a GPU only"),
    (["--min-batch", "2"], "export with --min-batch 1"),
    (["--triton-ort-trt"], "TensorRT accelerator"),
    (["--triton-name", "a/b"], "may hold only"),
    (["--triton-preferred-batch", "64"], "outside the artifact's batch range"),
])
def test_export_refuses_triton_options_before_any_work(tmp_path, capsys, args, message):
    try:
        code = export_main(["--model", "svt_s", "--out-dir", str(tmp_path / "o"), "--triton-repo", str(tmp_path / "r"),
                            *args])
    except SystemExit as e:  # options refused while parsing are usage errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1]
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


# -- serving commands in an environment that cannot serve ---------------------------------------------
@pytest.mark.parametrize("argv", [["serve", "{repo}"], ["bench", "--serve", "{repo}", "--requests", "2",
                                                       "--concurrency", "1"]])
def test_numpy_2_environment_is_refused_with_the_fix(tmp_path, monkeypatch, capsys, argv):
    from twins_deploy.cli.bench import main as bench_main
    from twins_deploy.cli.serve import main as serve_main
    from twins_deploy.serving import server

    monkeypatch.setattr(server.np, "__version__", "2.3.0")
    main = serve_main if argv[0] == "serve" else bench_main
    code = main([a.format(repo=tmp_path) for a in argv[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and err[0].startswith("error: ")
    assert "numpy 2.3.0" in err[0] and "twins-deploy[serve]" in err[0]
    tool = "twins-serve" if argv[0] == "serve" else "twins-bench --serve"
    assert err[0].startswith(f"error: {tool.split()[0]} needs") and f".venv-serve/bin/{tool}" in err[0], err[0]


def test_load_test_options_are_checked(tmp_path):
    from twins_deploy.bench.serve_load import LoadConfig

    with pytest.raises(OptionError, match="fewer than the highest concurrency 16"):
        LoadConfig(target=tmp_path, requests=8)
    with pytest.raises(OptionError, match="modes must be among"):
        LoadConfig(target=tmp_path, modes=("fast",))


# -- what twins-serve would serve (no server started) ----------------------------------------------------
def test_an_artifact_is_served_as_its_repository_entry_would_be(tmp_path):
    from twins_deploy.serving.server import resolve_targets

    art, m = _fake_artifact(tmp_path / "out", manifest_of(batch=BatchRange(1, 4, 16)))
    (direct,) = resolve_targets([art])
    assert direct.model.name == "svt_s_fp32" and direct.artifact == art and direct.manifest.sha256 == m.sha256
    assert direct.model == model_for(m, TritonRepoOptions(repo=tmp_path))
    _schema()
    entry = write_entry(TritonRepoOptions(repo=tmp_path / "repo"), art, m)
    (from_repo,) = resolve_targets([tmp_path / "repo"])
    assert from_repo.model == direct.model and from_repo.artifact == entry / "1" / "model.onnx"


def test_a_config_that_disagrees_with_its_manifest_is_refused(tmp_path):
    from twins_deploy.serving.server import resolve_targets

    _schema()
    art, m = _fake_artifact(tmp_path / "out", manifest_of())
    entry = write_entry(TritonRepoOptions(repo=tmp_path / "repo"), art, m)
    cfg = entry / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("dims: [ 3, 224, 224 ]", "dims: [ 3, 256, 256 ]"))
    with pytest.raises(ArtifactError, match=r"inputs .*256.* disagrees with the artifact's manifest"):
        resolve_targets([entry])
