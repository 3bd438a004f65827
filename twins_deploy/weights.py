"""Weights: seeded random init, safe checkpoint loading, and timm's published weights.

Loading is safe by default: ``.safetensors`` holds only tensors, and ``.pth/.pt/.bin``
files go through ``torch.load(weights_only=True)``, which refuses to run pickled code.
Every load reports *what* did not fit (missing, unexpected or mis-shaped keys) instead
of PyTorch's wall of text, and guesses which variant a foreign checkpoint belongs to.
"""
from __future__ import annotations

import os
import pickle
import pickletools
import socket
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from twins_deploy.artifacts import file_sha256, path_kind
from twins_deploy.errors import CheckpointError, WeightsUnavailableError, quoted
from twins_deploy.progress import quiet_logger
from twins_deploy.registry import TwinsConfig, get_config, list_models
from twins_deploy.twins import Twins

# Wrappers seen in the wild, in the order they are preferred: training scripts save the
# plain weights under 'state_dict'/'model' and an EMA copy beside them.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
_MAX_LISTED = 8
MAX_KEY_CHARS = 1024  # timm's longest Twins key is under 60 characters
# Twins-SVT-L is 0.4 GB in FP32; a training checkpoint with an EMA copy and Adam's two moments
# about 1.6 GB. A file far beyond that is not a Twins checkpoint, and loading reads it whole.
MAX_CHECKPOINT_BYTES = 8 << 30


WEIGHT_SOURCES = ("random", "file", "pretrained")


@dataclass
class WeightsInfo:
    """Where a model's weights came from; written into every manifest and report."""

    source: str  # "random" | "file" | "pretrained"
    path: str | None = None
    sha256: str | None = None
    seed: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.source not in WEIGHT_SOURCES:
            raise ValueError(f"weights source must be one of {', '.join(WEIGHT_SOURCES)}, got {quoted(self.source)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def random_info(seed: int) -> WeightsInfo:
    return WeightsInfo(
        "random", seed=seed,
        note="seeded random weights: fine for parity and speed, meaningless for accuracy",
    )


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter a random value, biases and LayerNorm affines included.

    timm's init leaves every bias at exactly zero, which hides window-padding mistakes
    (padded keys/values equal the qkv bias) and lets graph simplifiers delete add-zero
    nodes that real checkpoints keep. Weights are N(0, 1/fan_in) so activations stay in
    a realistic range through all blocks; the draw is reproducible from ``seed`` and
    independent of the parameters' device.
    """
    gen = torch.Generator().manual_seed(seed)

    def draw(p: Tensor, mean: float, std: float) -> None:
        p.copy_(torch.randn(p.shape, generator=gen) * std + mean)

    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            draw(m.weight, 0.0, m.weight[0].numel() ** -0.5)
            if m.bias is not None:
                draw(m.bias, 0.0, 0.05)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            draw(m.weight, 1.0, 0.1)
            draw(m.bias, 0.0, 0.05)
    return model


def _file_kind(p: Path) -> str | None:
    """What a checkpoint file holds, by its first bytes: "zip" (torch.save since 1.6),
    "pickle" (older torch.save), "safetensors", or None (anything else: text, images...)."""
    with open(p, "rb", opener=lambda f, flags: os.open(f, flags | os.O_NONBLOCK)) as f:  # a FIFO swapped in
        head = f.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:  # pickle protocols 2-5
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < p.stat().st_size:
        return "safetensors"  # an 8-byte header length, then the JSON header
    return None


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat ``name -> tensor`` dict, without running code.

    The format is recognised by content, not by suffix; whatever a loader raises on a
    damaged file becomes :class:`CheckpointError`, since any file can be passed here.
    """
    p = Path(path)
    where = quoted(str(p))
    kind = path_kind(p)  # never opens: a FIFO would block
    if kind == "missing":
        raise CheckpointError(f"checkpoint {where} does not exist")
    if kind != "a file":
        raise CheckpointError(f"checkpoint {where} is {kind}, not a file")
    try:
        size = p.stat().st_size
        if size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"checkpoint {where} is {size / 2**30:.1f} GiB; a Twins checkpoint is at most "
                                  f"a few GiB (limit {MAX_CHECKPOINT_BYTES >> 30} GiB), so this is not one")
        kind = _file_kind(p)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {where}: {e.strerror or e}") from None
    if kind is None:
        raise CheckpointError(
            f"{where} is not a checkpoint: neither a torch file (zip archive or pickle) nor safetensors")
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise before our error
                warnings.simplefilter("ignore")
                obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e) or (kind == "pickle" and _parses_as_pickle(p)):  # well-formed, but not only tensors
            raise CheckpointError(
                f"{where} was refused by the safe loader (torch.load weights_only=True): it holds "
                "objects other than tensors and plain containers, which could run code when loaded. "
                "Re-save the weights with torch.save(model.state_dict(), ...) or as .safetensors"
            ) from None
        raise CheckpointError(f"{where} is not a readable checkpoint: its pickle is damaged") from None
    except Exception as e:  # noqa: BLE001 - a damaged file makes loaders raise anything
        raise CheckpointError(f"{where} is not a readable {kind} checkpoint: {_first_line(e)}") from None
    return unwrap_state_dict(obj, origin=where)


def _parses_as_pickle(p: Path) -> bool:
    """Whether ``p`` is a well-formed pickle stream (read opcode by opcode, never executed)."""

    try:
        with open(p, "rb") as f:
            for _ in pickletools.genops(f):
                pass
    except Exception:  # noqa: BLE001 - any parse failure means damaged
        return False
    return True


def _first_line(e: BaseException, limit: int = 300) -> str:
    """A loader's message, first line only and bounded (it may quote the file's content)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    line = line if len(line) <= limit else f"{line[:limit]}... ({len(line)} characters)"
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def unwrap_state_dict(obj: Any, origin: str = "checkpoint") -> dict[str, Tensor]:
    """Strip training wrappers (``model``, ``state_dict``, EMA) and a ``module.`` prefix."""
    for _ in range(3):  # e.g. {'state_dict': {'model': {...}}} from some trainers
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{origin} holds no state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{origin} holds no tensors (top-level keys: {_listed(list(obj))})")
    odd = [k for k in tensors if not isinstance(k, str) or not 0 < len(k) <= MAX_KEY_CHARS]
    if odd:
        raise CheckpointError(f"{origin} is not a state dict: its tensors must be named by parameter names "
                              f"(texts of 1..{MAX_KEY_CHARS} characters), found {_listed(odd)}")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _listed(names: list[Any]) -> str:
    """The first few names, each bounded (a hostile checkpoint's keys can be megabytes long)."""
    more = f" (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    return ", ".join(n if isinstance(n, str) and len(n) <= 80 else quoted(n, 60) for n in names[:_MAX_LISTED]) + more


def _meta_shapes(cfg: TwinsConfig) -> dict[str, tuple[int, ...]]:

    with torch.device("meta"):
        m = Twins(cfg, num_classes=0)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def guess_variant(state_dict: Mapping[str, Tensor]) -> str | None:
    """The variant whose body (head aside) has exactly these keys and shapes, if any."""
    body = {k: tuple(v.shape) for k, v in state_dict.items()
            if not k.startswith(("head.", "norm_list."))}
    for name in list_models(include_test=True):
        if _meta_shapes(get_config(name)) == body:
            return name
    return None


def _adapt_backbone_checkpoint(model: nn.Module, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official mmdet/mmseg checkpoints: keep ``backbone.*``, add per-stage norms."""
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if any(k.startswith("norm_list.") for k in sd):
        if not getattr(model, "features", False):
            raise CheckpointError(
                "this is an official detection/segmentation backbone checkpoint (it has "
                "per-stage norms, norm_list.*); load it in backbone mode: "
                "create_model(..., features=True) or --features"
            )
        model.add_stage_norms()  # type: ignore[operator]
    return sd


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, Tensor], *,
                            reset_head: bool = False, origin: str = "checkpoint") -> None:
    """Load strictly, after explaining every way the checkpoint does not fit."""
    sd = _adapt_backbone_checkpoint(model, dict(sd))
    own = model.state_dict()
    head_keys = [k for k in sd if k.startswith("head.")]
    if not isinstance(getattr(model, "head", None), nn.Linear):
        for k in head_keys:  # backbone mode: the classifier is unused
            del sd[k]
    elif ("head.weight" in sd and sd["head.weight"].ndim == own["head.weight"].ndim  # else: mis-shaped, below
          and sd["head.weight"].shape[0] != own["head.weight"].shape[0]):  # width: a body mismatch
        ck, mine = sd["head.weight"].shape[0], own["head.weight"].shape[0]
        if not reset_head:
            raise CheckpointError(
                f"{origin} has a {ck}-class head but the model has {mine} classes; pass "
                "reset_head=True (CLI: --reset-head) to keep the body and re-initialise the head"
            )
        for k in head_keys:
            del sd[k]
        sd.update({k: v for k, v in own.items() if k.startswith("head.")})

    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    misshaped = sorted(
        f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(sd) & set(own) if tuple(sd[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listed(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped keys: {_listed(misshaped)}")
        cfg = getattr(model, "cfg", None)
        guess = guess_variant(sd)
        what = "the model"
        if guess and cfg is not None and guess != cfg.name:  # the likely cause first, the key lists after
            what = f"{cfg.name}: the checkpoint looks like {guess} (pass --model {guess})"
        raise CheckpointError(f"{origin} does not fit {what}; " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, reset_head: bool = False,
                 state_dict: Mapping[str, Tensor] | None = None) -> WeightsInfo:
    """Load a checkpoint file into ``model`` (strictly) and record its provenance;
    ``state_dict`` is the file's content when the caller has already read it."""
    sd = read_checkpoint(path) if state_dict is None else state_dict
    load_state_dict_checked(model, sd, reset_head=reset_head, origin=quoted(str(path)))
    info = WeightsInfo("file", path=str(Path(path).resolve()), sha256=file_sha256(path))
    model.weights_info = info  # type: ignore[assignment]
    return info


def _hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be reached, found in seconds (huggingface_hub itself retries for
    about 25 s when offline), or None. Behind a proxy the direct probe proves nothing, so
    the download is left to find out."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        return f"{host} is not reachable ({e.strerror or type(e).__name__})"
    return None


def load_pretrained(model: nn.Module, hub_id: str | None = None, *,
                    reset_head: bool = False) -> WeightsInfo:
    """Fetch timm's published weights (``timm/<name>.in1k``) through huggingface_hub.

    Only called when the user asks (``pretrained=True`` or a ``timm/...`` id); fails
    with a clear message when the hub or the package is unavailable.
    """
    cfg: TwinsConfig = model.cfg  # type: ignore[assignment]
    repo = hub_id or cfg.hf_hub_id
    if repo is None:  # a test-only model: there is nothing to fetch, so do not ask the hub
        raise WeightsUnavailableError(
            f"{cfg.name} ({cfg.paper_name}) has no published weights; pass a local checkpoint "
            "with weights=PATH (--weights)")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise WeightsUnavailableError(
            "pretrained weights need huggingface_hub: pip install huggingface_hub, or pass a "
            "local checkpoint with weights=PATH (--weights)"
        ) from None
    hint = "pass a local checkpoint with weights=PATH (--weights) instead"
    try:  # a copy in the local Hugging Face cache needs no network
        path = hf_hub_download(repo, "model.safetensors", local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or no cache): fetch it below
        unreachable = _hub_unreachable()
        if unreachable:
            raise WeightsUnavailableError(f"cannot fetch {repo}/model.safetensors: {unreachable}; {hint}") from None
        try:
            with quiet_logger("huggingface_hub"):  # no retry chatter before our one-line error
                path = hf_hub_download(repo, "model.safetensors")
        except Exception as e:  # noqa: BLE001 - no such repo, HTTP errors: all mean "not available"
            raise WeightsUnavailableError(
                f"could not fetch {repo}/model.safetensors from the Hugging Face hub ({_first_line(e)}); "
                f"check the network, or {hint}") from None
    sd = read_checkpoint(path)
    load_state_dict_checked(model, sd, reset_head=reset_head, origin=repo)
    info = WeightsInfo("pretrained", path=f"hf://{repo}", sha256=file_sha256(path))
    model.weights_info = info  # type: ignore[assignment]
    return info
