"""A Triton Inference Server model repository entry from an artifact and its manifest.

``REPO/<name>/config.pbtxt`` + ``REPO/<name>/1/model.onnx`` (or ``model.plan``) +
``REPO/<name>/1/model.onnx.json`` (the artifact's manifest, copied for provenance; it also
lets :func:`twins_deploy.engines.opening.open_runner` open the copy with every manifest check).
Everything in the config comes from the manifest, never from guesses: the platform from the
artifact's kind, ``max_batch_size`` and dims from the batch range and image size (the batch
dimension left out, as Triton expects, ``-1`` for a dynamic H/W), the data types from the
precision plan. :class:`TritonModel` is the one description of a served model: it is written
as ``config.pbtxt``, read back with Triton's own ``ModelConfig`` schema (``tritonclient``
ships ``model_config_pb2``), and is what ``twins-serve`` binds into PyTriton.

An entry is staged beside the repository and renamed into place whole: Triton polls every
directory inside a repository, hidden ones included, so nothing half-written may sit there.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import (
    ONNX_KIND,
    PLAN_KIND,
    check_file_stem,
    check_output_dir,
    file_sha256,
    manifest_path,
    output_dir,
)
from twins_deploy.errors import ArtifactError, BackendUnavailableError, OptionError
from twins_deploy.exporters.spec import ExportSpec
from twins_deploy.manifest import Manifest

CONFIG_FILE = "config.pbtxt"
VERSION = 1
# artifact kind -> (Triton platform, backend, default model file name)
PLATFORMS = {ONNX_KIND: ("onnxruntime_onnx", "onnxruntime", "model.onnx"),
             PLAN_KIND: ("tensorrt_plan", "tensorrt", "model.plan")}
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
DEVICES = ("auto", "cpu", "gpu")
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
DEFAULT_QUEUE_DELAY_US = 100
# Twins' four patch embeddings: kernel = stride = 4, 2, 2, 2 (the strides 4/8/16/32 of the maps)
PATCH_STRIDES = (4, 2, 2, 2)



@dataclass(frozen=True)
class TritonRepoOptions:
    """How an artifact is laid out and scheduled in a Triton model repository."""

    repo: Path
    name: str | None = None                   # default: the artifact's file stem
    instances: int = 1                        # instance_group count
    device: str = "auto"                      # plans: GPU; ONNX: CPU unless "gpu"
    preferred_batch: tuple[int, ...] | None = None  # default: the batch range's opt and max
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    ort_trt: bool = False                     # ONNX on GPU through ONNX Runtime's TensorRT accelerator

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise OptionError(f"Triton device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.instances < 1:
            raise OptionError(f"Triton instances must be >= 1, got {self.instances}")
        if self.queue_delay_us < 0:
            raise OptionError(f"Triton queue delay must be >= 0 microseconds, got {self.queue_delay_us}")
        if self.name is not None:
            check_model_name(self.name)


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str          # TYPE_FP32 | TYPE_FP16
    dims: tuple[int, ...]   # without the batch dimension when max_batch_size > 0


@dataclass(frozen=True)
class TritonModel:
    """What one ``config.pbtxt`` says (the subset of Triton's ModelConfig that we use)."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    instance_kind: str = "KIND_CPU"
    instances: int = 1
    queue_delay_us: int | None = DEFAULT_QUEUE_DELAY_US  # None: no dynamic batching
    preferred_batch: tuple[int, ...] = ()
    ort_trt_precision: str | None = None      # "FP32" | "FP16": ONNX Runtime's TensorRT accelerator
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The artifact kind ("onnx" or "trt") the platform runs."""
        return next(k for k, v in PLATFORMS.items() if v[0] == self.platform)

    @property
    def backend(self) -> str:
        return PLATFORMS[self.kind][1]

    @property
    def model_filename(self) -> str:
        return PLATFORMS[self.kind][2]

    @property
    def dynamic_batching(self) -> bool:
        return self.queue_delay_us is not None

    def to_pbtxt(self, comment: str = "") -> str:
        """The config in protobuf text format (what Triton reads as ``config.pbtxt``)."""
        def tensors(ts: tuple[TensorConfig, ...], image: bool) -> str:
            rows = []
            for t in ts:
                fmt = "    format: FORMAT_NCHW\n" if image and self.max_batch_size > 0 else ""
                rows.append(f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n{fmt}'
                            f"    dims: [ {', '.join(map(str, t.dims))} ]\n  }}")
            return "[\n" + ",\n".join(rows) + "\n]"

        lines = [f"# {line}" for line in comment.splitlines()]
        lines += [f'name: "{self.name}"', f'platform: "{self.platform}"', f'backend: "{self.backend}"',
                  f"max_batch_size: {self.max_batch_size}",
                  f"input {tensors(self.inputs, image=True)}", f"output {tensors(self.outputs, image=False)}"]
        if self.dynamic_batching:
            sizes = ", ".join(map(str, self.preferred_batch))
            pref = f"  preferred_batch_size: [ {sizes} ]\n" if self.preferred_batch else ""
            lines.append(f"dynamic_batching {{\n{pref}  max_queue_delay_microseconds: {self.queue_delay_us}\n}}")
        lines.append(f"instance_group [\n  {{\n    count: {self.instances}\n    kind: {self.instance_kind}\n  }}\n]")
        if self.ort_trt_precision:
            lines.append("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
                         '      {\n        name: "tensorrt"\n'
                         f'        parameters {{ key: "precision_mode" value: "{self.ort_trt_precision}" }}\n'
                         "      }\n    ]\n  }\n}")
        for k, v in self.parameters.items():
            lines.append(f'parameters {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}')
        return "\n".join(lines) + "\n"

    @classmethod
    def from_pbtxt(cls, text: str, source: str = CONFIG_FILE) -> TritonModel:
        """Parse a ``config.pbtxt`` with Triton's own ModelConfig schema (needs tritonclient[grpc])."""
        from google.protobuf import text_format

        try:
            from tritonclient.grpc import model_config_pb2 as mc
        except ImportError as e:
            raise BackendUnavailableError(
                f"reading a Triton config needs tritonclient[grpc] ({e}); pip install 'twins-deploy[serve]'") from None
        try:
            cfg = text_format.Parse(text, mc.ModelConfig())
        except text_format.ParseError as e:
            raise ArtifactError(f"{source} is not a valid Triton ModelConfig: {e}") from None
        name_of = mc.DataType.Name

        def tensors(ts: Any) -> tuple[TensorConfig, ...]:
            return tuple(TensorConfig(t.name, name_of(t.data_type), tuple(int(d) for d in t.dims)) for t in ts)

        platform = cfg.platform or {v[1]: v[0] for v in PLATFORMS.values()}.get(cfg.backend, cfg.backend)
        if platform not in {v[0] for v in PLATFORMS.values()}:
            raise ArtifactError(f"{source}: platform {platform!r} is not one twins-deploy serves "
                                f"({', '.join(v[0] for v in PLATFORMS.values())})")
        groups = list(cfg.instance_group)
        kind = mc.ModelInstanceGroup.Kind.Name(groups[0].kind) if groups else "KIND_CPU"
        if kind == "KIND_AUTO":
            kind = "KIND_GPU" if platform == PLATFORMS[PLAN_KIND][0] else "KIND_CPU"
        batching = cfg.HasField("dynamic_batching")
        accel = [a for a in cfg.optimization.execution_accelerators.gpu_execution_accelerator if a.name == "tensorrt"]
        return cls(
            name=cfg.name, platform=platform, max_batch_size=int(cfg.max_batch_size),
            inputs=tensors(cfg.input), outputs=tensors(cfg.output), instance_kind=kind,
            instances=sum(max(1, g.count) for g in groups) if groups else 1,
            queue_delay_us=int(cfg.dynamic_batching.max_queue_delay_microseconds) if batching else None,
            preferred_batch=tuple(int(b) for b in cfg.dynamic_batching.preferred_batch_size) if batching else (),
            ort_trt_precision=accel[0].parameters.get("precision_mode", "FP32") if accel else None,
            parameters={k: v.string_value for k, v in cfg.parameters.items()},
        )


def check_model_name(name: str) -> str:
    """An entry is a folder named after its model, assembled beside the repository under a
    longer staging name: the rules of :func:`check_file_stem` keep both valid file names."""
    return check_file_stem(name, "Triton model name")


def feature_dims(spec: ExportSpec, embed_dims: list[int] | tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(C, H, W) of the four backbone maps: each patch embedding floors (kernel = stride)."""
    h, w = spec.img_size
    dims = []
    for stride, c in zip(PATCH_STRIDES, embed_dims):
        h, w = h // stride, w // stride
        dims.append((int(c), -1, -1) if spec.dynamic_hw else (int(c), h, w))
    return dims


def check_request(options: TritonRepoOptions, kind: str, spec: ExportSpec) -> None:
    """Refuse what Triton could not serve, before any export work is done."""
    if kind == PLAN_KIND and options.device == "cpu":
        raise OptionError("a TensorRT plan runs on a GPU only: Triton instance kind must be GPU "
                          "(drop --triton-device cpu)")
    if options.ort_trt and (kind != ONNX_KIND or options.device != "gpu"):
        raise OptionError("ONNX Runtime's TensorRT accelerator applies to ONNX models on a GPU: "
                          "use it with --triton-device gpu and --fmt onnx")
    b = spec.batch
    if b.dynamic and b.min != 1:
        raise OptionError(f"Triton sends any batch from 1 to max_batch_size, but this artifact accepts "
                          f"{b.min}..{b.max}; export with --min-batch 1")
    if options.preferred_batch:
        if not b.dynamic:
            raise OptionError(f"a fixed-batch artifact (batch {b.min}) has no dynamic batching; "
                              "drop --triton-preferred-batch or export a dynamic batch range")
        bad = [p for p in options.preferred_batch if not 1 <= p <= b.max]
        if bad:
            raise OptionError(f"preferred batch sizes {bad} are outside the artifact's batch range 1..{b.max}")


def model_for(manifest: Manifest, options: TritonRepoOptions, name: str | None = None) -> TritonModel:
    """The Triton config of the artifact ``manifest`` describes."""
    spec = manifest.spec
    check_request(options, manifest.kind, spec)
    dtype = DATA_TYPES.get(manifest.input.dtype)
    if dtype is None:
        raise ArtifactError(f"input dtype {manifest.input.dtype!r} has no Triton data type here")
    h, w = (-1, -1) if spec.dynamic_hw else spec.img_size
    if spec.features:
        embed = (manifest.model.config or {}).get("embed_dims")
        if not embed:
            raise ArtifactError("the manifest lacks the model's embed_dims; cannot state the feature maps' shapes")
        out_dims = feature_dims(spec, embed)
    else:
        out_dims = [(int(manifest.model.num_classes),)]
    b = spec.batch
    batched = b.dynamic
    lead: tuple[int, ...] = () if batched else (b.min,)  # a fixed-batch graph: batch is part of the dims
    inputs = (TensorConfig(manifest.input.name, dtype, (*lead, 3, h, w)),)
    outputs = tuple(TensorConfig(n, dtype, (*lead, *d)) for n, d in zip(manifest.outputs, out_dims))
    preferred = options.preferred_batch or tuple(sorted({p for p in (b.opt, b.max) if p > 1}))
    device = "gpu" if manifest.is_plan or options.device == "gpu" else "cpu"
    return TritonModel(
        name=check_model_name(name or options.name or Path(manifest.artifact).stem),
        platform=PLATFORMS[manifest.kind][0], max_batch_size=b.max if batched else 0,
        inputs=inputs, outputs=outputs, instance_kind=KINDS[device], instances=options.instances,
        queue_delay_us=options.queue_delay_us if batched else None, preferred_batch=preferred if batched else (),
        ort_trt_precision=("FP16" if manifest.precision == "fp16" else "FP32") if options.ort_trt else None,
        parameters={"twins_deploy_manifest": f"{VERSION}/{PLATFORMS[manifest.kind][2]}.json"},
    )


def check_entry(options: TritonRepoOptions, kind: str, spec: ExportSpec, default_name: str, overwrite: bool) -> Path:
    """Everything about the entry REPO/<name>/ that can be refused before any export work:
    what Triton could not serve, a repository that cannot be written, an entry in the way.
    Returns the entry's folder."""
    check_request(options, kind, spec)
    check_output_dir(options.repo)
    path = entry_dir(options, default_name)
    refuse_existing_entry(path, overwrite)
    return path


def entry_dir(options: TritonRepoOptions, default_name: str) -> Path:
    return options.repo / check_model_name(options.name or default_name)


def refuse_existing_entry(path: Path, overwrite: bool) -> None:
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise ArtifactError(f"{path} is a file, where the Triton model folder goes; it is replaced only as "
                            "a folder (--force included): move it, or choose another --triton-name")
    if path.exists() and not overwrite:
        raise ArtifactError(f"Triton model repository entry {path} already exists; pass --force to replace it, "
                            "or choose another --triton-name")


def _staging_parent(repo: Path) -> Path:
    """Where an entry is assembled: beside the repository (Triton would poll a folder inside
    it), unless that is another filesystem or not writable, where a rename cannot land it."""
    parent = repo.resolve().parent
    try:
        if os.stat(parent).st_dev == os.stat(repo).st_dev and os.access(parent, os.W_OK):
            return parent
    except OSError:
        pass
    return repo


def write_entry(options: TritonRepoOptions, artifact: Path, manifest: Manifest, overwrite: bool = False) -> Path:
    """Write ``REPO/<name>/`` for ``artifact``, whole or not at all; returns the entry's folder."""
    model = model_for(manifest, options)
    with output_dir(options.repo) as repo:
        final = repo / model.name
        refuse_existing_entry(final, overwrite)
        stage = Path(tempfile.mkdtemp(dir=_staging_parent(repo), prefix=f".{repo.name[:64]}.{model.name}.",
                                      suffix=".partial"))
        aside = stage.with_suffix(".replaced")
        try:
            version = stage / str(VERSION)
            version.mkdir()
            dst = version / model.model_filename
            shutil.copyfile(artifact, dst)
            if manifest.sha256 and file_sha256(dst) != manifest.sha256:
                raise ArtifactError(f"{artifact} differs from its manifest (sha256) or changed while it was copied")
            shutil.copyfile(manifest_path(artifact), manifest_path(dst))
            comment = (f"written by twins-deploy from {artifact.name} (sha256 {manifest.sha256})\n"
                       f"model {manifest.model.name}, {manifest.precision}, weights {manifest.weights.source}; "
                       f"manifest: {VERSION}/{dst.name}.json")
            (stage / CONFIG_FILE).write_text(model.to_pbtxt(comment))
            os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; a server may run as another user
            if final.exists():
                os.replace(final, aside)
            os.replace(stage, final)
        finally:
            for leftover in (stage, aside):
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(leftover)
    return final


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class RepoEntry:
    """A served model as found in a repository (or an artifact served directly)."""

    model: TritonModel
    artifact: Path


def read_entry(folder: Path) -> RepoEntry:
    """``REPO/<name>/``: its config (Triton's schema) and its newest version's model file."""
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise ArtifactError(f"{folder} has no {CONFIG_FILE}: not a Triton model repository entry")
    model = TritonModel.from_pbtxt(cfg_path.read_text(), str(cfg_path))
    if model.name and model.name != folder.name:
        raise ArtifactError(f"{cfg_path} names the model {model.name!r}; Triton requires it to equal "
                            f"its folder name {folder.name!r}")
    versions = sorted((int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)
    for v in versions:
        path = folder / str(v) / model.model_filename
        if path.is_file():
            return RepoEntry(model, path)
    raise ArtifactError(f"{folder} has no version folder holding {model.model_filename}")


def find_entries(repo: Path) -> list[RepoEntry]:
    """Every entry of a repository, in name order (folders without a config are refused)."""
    if not repo.is_dir():
        raise ArtifactError(f"Triton model repository {str(repo)!r} does not exist")
    folders = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ArtifactError(f"{repo} holds no model; write one with twins-export --triton-repo {repo}")
    return [read_entry(p) for p in folders]
