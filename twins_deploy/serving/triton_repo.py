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
The repository is held while an entry is written (another run is refused, naming the
holder); a run recognises what a killed one left (its staging, an entry moved aside) and
cleans it up, saying so; an entry that is a symlink is replaced as itself, never followed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import (
    ONNX_KIND,
    PLAN_KIND,
    check_file_stem,
    check_output_dir,
    hash_mismatch,
    manifest_path,
    output_dir,
    path_kind,
    read_bounded,
)
from twins_deploy.errors import ArtifactError, BackendUnavailableError, OptionError, quoted
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
# Bounds on what a repository entry or a command line may ask of one machine: each instance
# holds its own copy of the model (and its threads); a batcher that waits longer than
# seconds for a batch serves nobody. Also applied to a config.pbtxt read back.
MAX_INSTANCES = 64
MAX_QUEUE_DELAY_US = 10_000_000
MAX_CONFIG_BYTES = 1 << 20  # a config twins-export writes is under 2 KiB


def check_scheduling(instances: int | None, queue_delay_us: int | None) -> None:
    """One line naming the value when an instance count or a batching delay is out of bounds."""
    if instances is not None and not 1 <= instances <= MAX_INSTANCES:
        raise OptionError(f"Triton instances must be 1..{MAX_INSTANCES} (each holds its own copy of the "
                          f"model), got {instances}")
    if queue_delay_us is not None and not 0 <= queue_delay_us <= MAX_QUEUE_DELAY_US:
        raise OptionError(f"Triton queue delay must be 0..{MAX_QUEUE_DELAY_US} microseconds, got {queue_delay_us}")


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
            raise OptionError(f"Triton device must be one of {', '.join(DEVICES)}, got {quoted(self.device)}")
        check_scheduling(self.instances, self.queue_delay_us)
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
            raise ArtifactError(f"{source} is not a valid Triton ModelConfig: {quoted(str(e), 200)}") from None
        name_of = mc.DataType.Name

        def tensors(ts: Any) -> tuple[TensorConfig, ...]:
            return tuple(TensorConfig(t.name, name_of(t.data_type), tuple(int(d) for d in t.dims)) for t in ts)

        platform = cfg.platform or {v[1]: v[0] for v in PLATFORMS.values()}.get(cfg.backend, cfg.backend)
        if platform not in {v[0] for v in PLATFORMS.values()}:
            raise ArtifactError(f"{source}: platform {quoted(platform, 80)} is not one twins-deploy serves "
                                f"({', '.join(v[0] for v in PLATFORMS.values())})")
        groups = list(cfg.instance_group)
        kind = mc.ModelInstanceGroup.Kind.Name(groups[0].kind) if groups else "KIND_CPU"
        if kind == "KIND_AUTO":
            kind = "KIND_GPU" if platform == PLATFORMS[PLAN_KIND][0] else "KIND_CPU"
        batching = cfg.HasField("dynamic_batching")
        accel = [a for a in cfg.optimization.execution_accelerators.gpu_execution_accelerator if a.name == "tensorrt"]
        instances = sum(max(1, g.count) for g in groups) if groups else 1
        delay = int(cfg.dynamic_batching.max_queue_delay_microseconds) if batching else None
        try:
            if cfg.name:
                check_model_name(cfg.name)
            check_scheduling(instances, delay)
        except OptionError as e:
            raise ArtifactError(f"{source}: {e}") from None
        preferred = tuple(int(b) for b in cfg.dynamic_batching.preferred_batch_size) if batching else ()
        if len(preferred) > 64 or any(not 1 <= b <= max(1, cfg.max_batch_size) for b in preferred):
            raise ArtifactError(f"{source}: preferred batch sizes must be 1..max_batch_size "
                                f"({cfg.max_batch_size}), got {quoted(list(preferred), 120)}")
        if len(cfg.parameters) > 64 or any(len(k) + len(v.string_value) > 4096 for k, v in cfg.parameters.items()):
            raise ArtifactError(f"{source}: more or longer parameters than a twins-deploy entry has")
        return cls(
            name=cfg.name, platform=platform, max_batch_size=int(cfg.max_batch_size),
            inputs=tensors(cfg.input), outputs=tensors(cfg.output), instance_kind=kind,
            instances=instances,
            queue_delay_us=delay,
            preferred_batch=preferred,
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
        raise ArtifactError(f"input dtype {quoted(manifest.input.dtype)} has no Triton data type here")
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
    what Triton could not serve, a repository that cannot be written, another run writing
    into it (named), an entry in the way. What a killed run left beside an existing
    repository is recovered here already (see :func:`recover_staging`), so that the entry
    is judged as it really is. Returns the entry's folder."""
    check_request(options, kind, spec)
    check_output_dir(options.repo)
    path = entry_dir(options, default_name)
    if path_kind(options.repo) == "a folder":  # never created by a check
        with hold_repo(options.repo) as repo:
            recover_staging(repo)
            refuse_existing_entry(path, overwrite)
    else:
        refuse_existing_entry(path, overwrite)
    return path


def entry_dir(options: TritonRepoOptions, default_name: str) -> Path:
    return options.repo / check_model_name(options.name or default_name)


def refuse_existing_entry(path: Path, overwrite: bool) -> None:
    """An entry in the way: a folder (or a symlink, of any kind) is replaced with ``overwrite``
    only; a symlink is replaced as itself, never followed. Anything else (a file, a FIFO, a
    device) is not ours to replace."""
    if os.path.islink(path):
        if not overwrite:
            raise ArtifactError(f"Triton model repository entry {quoted(str(path))} already exists (a symlink to "
                                f"{_link_target(path)}); pass --force to replace the symlink itself (what it points "
                                "to is left alone), or choose another --triton-name")
        return
    kind = path_kind(path)
    if kind == "missing":
        return
    if kind != "a folder":
        raise ArtifactError(f"{quoted(str(path))} is {kind}, where the Triton model folder goes; it is replaced only "
                            "as a folder (--force included): move it, or choose another --triton-name")
    if not overwrite:
        raise ArtifactError(f"Triton model repository entry {quoted(str(path))} already exists; pass --force to "
                            "replace it, or choose another --triton-name")


def _link_target(path: Path) -> str:
    try:
        target = os.readlink(path)
    except OSError as e:
        return f"something unreadable: {e.strerror or e}"
    return f"{quoted(target, 120)}, {path_kind(path)}"


# -- the repository's lock, the staging folders and what a killed run left ----------------------------
def hold_repo(repo: Path) -> contextlib.AbstractContextManager[Path]:
    """Hold the repository (the project's output-folder lock, :func:`output_dir`, on its root)
    while this process writes into it: another run that tries meanwhile is refused, naming
    this one, and removes nothing. Re-entrant within a process (an export holds the
    repository for its whole run, and :func:`write_entry` takes it again)."""
    return output_dir(repo, option="--triton-repo")


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


def _staging_prefix(repo: Path) -> str:
    """``.<repo>.``: the start of every staging folder of this repository. Its name is cut to
    64 characters (a file name holds 255 bytes; the model's name and mkdtemp's part follow)."""
    return f".{repo.resolve().name[:64]}."


def _staging_tag(repo: Path) -> str:
    """A digest of the repository's real path in every staging name: a run recognises its own
    repository's leftovers, never a neighbour's whose name starts alike."""
    return hashlib.sha256(os.fsencode(str(repo.resolve()))).hexdigest()[:10]


def _staging_names(repo: Path) -> re.Pattern[str]:
    """``.<repo>.<model>.<tag>.<8 random>.partial`` (an entry being written) and ``.replaced``
    (the entry it replaces, moved aside until the new one is in place)."""
    return re.compile(rf"^(?P<stem>{re.escape(_staging_prefix(repo))}(?P<model>[A-Za-z0-9_][A-Za-z0-9_.-]*)"
                      rf"\.{_staging_tag(repo)}\.[a-z0-9_]{{8}})\.(?P<kind>partial|replaced)$")


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove(path: Path) -> None:
    """Remove ``path`` itself: a symlink (to a folder, a file, nothing, itself) or a file is
    unlinked, never followed; a real folder is removed with its contents (symlinks inside
    are unlinked, not followed: shutil.rmtree never descends into one)."""
    if _is_real_dir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _tree_mib(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total / 2**20


def recover_staging(repo: Path) -> list[str]:
    """What a killed run (SIGKILL, a power cut: no cleanup ran) left while writing an entry of
    ``repo``, which the caller holds: a ``.partial`` staging folder is removed; a ``.replaced``
    entry (moved aside, the new one not yet in place) is put back when its entry is missing,
    removed when the new entry made it. Each thing done is one ``note:`` line on stderr."""
    names = _staging_names(repo)
    found: dict[tuple[Path, str], tuple[str, dict[str, Path]]] = {}  # (place, stem) -> (model, kind -> path)
    for place in dict.fromkeys((_staging_parent(repo), repo)):
        try:
            listing = os.listdir(place)
        except OSError:
            continue
        for name in listing:
            m = names.match(name)
            if m and _is_real_dir(place / name):  # a symlink of that name is not ours: left alone
                found.setdefault((place, m.group("stem")), (m.group("model"), {}))[1][m.group("kind")] = place / name
    done: list[str] = []
    for _, (model, parts) in sorted(found.items()):
        entry = repo / model
        aside, partial = parts.get("replaced"), parts.get("partial")
        try:
            if aside is not None:
                if not os.path.lexists(entry):
                    os.replace(aside, entry)
                    done.append(f"restored {entry} from {aside.name}: a killed run had moved it aside and not "
                                "put its replacement in place")
                else:
                    _remove(aside)
                    done.append(f"removed {aside.name} beside {repo}: the entry a killed run had already replaced")
            if partial is not None:
                mib = _tree_mib(partial)
                _remove(partial)
                done.append(f"removed {partial.name} ({mib:.1f} MiB) beside {repo}: an entry a killed run left "
                            "half-written")
        except OSError as e:
            done.append(f"could not clean up what a killed run left for {entry.name} "
                        f"({quoted(str(e.filename or ''), 120)}): {e.strerror or e}; remove it by hand")
    for line in done:
        print(f"note: {line}", file=sys.stderr, flush=True)
    return done


def write_entry(options: TritonRepoOptions, artifact: Path, manifest: Manifest, overwrite: bool = False) -> Path:
    """Write ``REPO/<name>/`` for ``artifact``, whole or not at all; returns the entry's folder.

    The repository is held (another run is refused, naming this one); what a killed run left
    is recovered first. The entry is staged beside the repository and renamed into place; an
    entry it replaces (a folder, or a symlink: replaced as itself, never followed) is moved
    aside first and removed only once the new one is in place. On any failure (a full disk,
    a refused write, Ctrl-C) the staging is removed and the previous entry put back; what the
    machine refused is one line (:class:`ArtifactError`)."""
    model = model_for(manifest, options)
    with hold_repo(options.repo) as repo:
        recover_staging(repo)
        final = repo / model.name
        refuse_existing_entry(final, overwrite)
        existed = os.path.lexists(final)
        try:
            _install(repo, final, model, artifact, manifest)
        except OSError as e:
            where = f" ({quoted(str(e.filename), 160)})" if e.filename else ""
            kept = "the previous entry is unchanged" if existed else "nothing was left behind"
            raise ArtifactError(f"cannot write Triton model repository entry {quoted(str(final))}: "
                                f"{e.strerror or e}{where}; {kept}") from None
    return final


def _install(repo: Path, final: Path, model: TritonModel, artifact: Path, manifest: Manifest) -> None:
    stage = Path(tempfile.mkdtemp(dir=_staging_parent(repo), suffix=".partial",
                                  prefix=f"{_staging_prefix(repo)}{model.name}.{_staging_tag(repo)}."))
    aside = stage.with_suffix(".replaced")
    moved = installed = False
    try:
        version = stage / str(VERSION)
        version.mkdir()
        dst = version / model.model_filename
        shutil.copyfile(artifact, dst)
        if manifest.sha256 and (why := hash_mismatch(dst, manifest.sha256)):
            raise ArtifactError(f"{quoted(str(artifact))} differs from its manifest ({why}) or changed while it "
                                "was copied")
        shutil.copyfile(manifest_path(artifact), manifest_path(dst))
        comment = (f"written by twins-deploy from {artifact.name} (sha256 {manifest.sha256})\n"
                   f"model {manifest.model.name}, {manifest.precision}, weights {manifest.weights.source}; "
                   f"manifest: {VERSION}/{dst.name}.json")
        with open(stage / CONFIG_FILE, "w") as f:
            f.write(model.to_pbtxt(comment))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; a server may run as another user
        if os.path.lexists(final):
            os.replace(final, aside)  # a symlink is moved as itself
            moved = True
        os.replace(stage, final)
        installed = True
    finally:
        if moved and not installed:
            try:
                os.replace(aside, final)
            except OSError as e:
                print(f"warning: could not put the previous entry back ({e.strerror or e}): it is "
                      f"{aside}", file=sys.stderr, flush=True)
                aside = None  # never removed: it is the only copy
        for leftover in (stage, aside):
            if leftover is not None and os.path.lexists(leftover):
                try:
                    _remove(leftover)
                except OSError as e:
                    print(f"warning: could not remove {leftover} ({e.strerror or e}); the next run into "
                          f"{repo} removes it", file=sys.stderr, flush=True)


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
    where = quoted(str(cfg_path))
    kind = path_kind(cfg_path)
    if kind != "a file":  # a FIFO would block the read, a folder or a device is no config
        raise ArtifactError(f"{folder} has no {CONFIG_FILE} ({kind} there): not a Triton model repository entry")
    try:
        raw = read_bounded(cfg_path, MAX_CONFIG_BYTES, "a config twins-export writes is under 2 KiB")
    except ArtifactError as e:
        raise ArtifactError(f"{where} {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{where} is not UTF-8 text (byte {e.start}): not a Triton config") from None
    model = TritonModel.from_pbtxt(text, where)
    if model.name and model.name != folder.name:
        raise ArtifactError(f"{where} names the model {quoted(model.name, 80)}; Triton requires it to equal "
                            f"its folder name {quoted(folder.name, 80)}")
    try:
        versions = sorted((int(p.name) for p in folder.iterdir() if p.name.isascii() and p.name.isdigit()
                           and p.is_dir()), reverse=True)
    except OSError as e:
        raise ArtifactError(f"cannot list {quoted(str(folder))}: {e.strerror or e}") from None
    for v in versions:
        path = folder / str(v) / model.model_filename
        if path_kind(path) == "a file":
            return RepoEntry(model, path)
    raise ArtifactError(f"{quoted(str(folder))} has no version folder holding {model.model_filename}")


def find_entries(repo: Path) -> list[RepoEntry]:
    """Every entry of a repository, in name order (folders without a config are refused)."""
    if not repo.is_dir():
        raise ArtifactError(f"Triton model repository {quoted(str(repo))} is {path_kind(repo)}, not a folder")
    folders = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ArtifactError(f"{repo} holds no model; write one with twins-export --triton-repo {repo}")
    return [read_entry(p) for p in folders]
