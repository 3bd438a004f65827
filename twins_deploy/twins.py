"""Twins-PCPVT and Twins-SVT as export-first PyTorch modules.

Parameter names and shapes are exactly timm's (``timm/models/twins.py``), which equal the
official classification checkpoints', so either loads with ``strict=True``. The forward
pass is written so that tracing cannot freeze anything that depends on the input:

* no Python branch on a tensor shape or value: LSA always pads (possibly by zero) and
  always crops back, where timm's ``if pad_r > 0 or pad_b > 0`` is frozen by a trace;
* window attention runs on 4-D ``(B*nW, heads, ws*ws, head_dim)`` tensors, the rank
  ONNX exporters and TensorRT's attention fusion handle;
* the scale multiplies q before ``q @ k^T`` (what TensorRT's MHA fusion matches);
* the batch axis is always ``-1`` in reshapes, so a static-H/W graph needs no shape math;
* no ``torch.roll`` anywhere.

Dropout and drop-path are left out: this is an inference/deployment model and timm's
defaults are zero, so outputs are identical in eval mode.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twins_deploy.errors import InputShapeError
from twins_deploy.registry import MIN_IMAGE_SIDE, TwinsConfig

AttentionImpl = Literal["sdpa", "explicit"]
ATTENTION_IMPLS: tuple[str, ...] = ("sdpa", "explicit")

Size = tuple[int, int]


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float, impl: str) -> Tensor:
    """Softmax attention over the last two axes of 4-D ``(N, heads, L, head_dim)`` tensors.

    ``"explicit"`` is the MatMul-Softmax-MatMul graph that ONNX exporters emit op for op
    and TensorRT fuses; ``"sdpa"`` is PyTorch's fused kernel, faster in eager mode. Both
    compute ``softmax((q*scale) @ k^T) @ v``.
    """
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2, timm's ``Mlp`` without dropout."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LocallyGroupedAttn(nn.Module):
    """LSA: attention inside equal ``ws x ws`` windows.

    The token map is zero-padded bottom/right to a multiple of ``ws`` (no mask: padded
    tokens act as keys/values equal to the qkv bias, as in timm and the official
    detection code) and always cropped back afterwards.
    """

    def __init__(self, dim: int, num_heads: int, ws: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.ws = dim, num_heads, ws
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_impl: str = "sdpa"
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, size: Size) -> Tensor:
        h, w = size
        ws, c = self.ws, self.dim
        pad_r = (ws - w % ws) % ws
        pad_b = (ws - h % ws) % ws
        x = F.pad(x.reshape(-1, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        nh, nw = hp // ws, wp // ws
        # (B, nh, ws, nw, ws, C) -> (B*nW, ws*ws, C): windows become the batch.
        x = x.reshape(-1, nh, ws, nw, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        qkv = self.qkv(x).reshape(-1, ws * ws, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        x = attend(qkv[0], qkv[1], qkv[2], self.scale, self.attn_impl)  # (B*nW, heads, ws², hd)
        x = x.transpose(1, 2).reshape(-1, nh, nw, ws, ws, c)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, c)
        x = x[:, :h, :w, :].reshape(-1, h * w, c)
        return self.proj(x)


class GlobalSubSampleAttn(nn.Module):
    """GSA: every token attends to a map sub-sampled by a ``sr x sr`` strided conv.

    Sizes that ``sr`` does not divide are floored by the conv, as in timm; ``sr == 1``
    is plain global attention with no ``sr``/``norm`` parameters.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_impl: str = "sdpa"
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.sr: nn.Conv2d | None = None
        self.norm: nn.LayerNorm | None = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # eps 1e-5, unlike the blocks' 1e-6

    def forward(self, x: Tensor, size: Size) -> Tensor:
        h, w = size
        c = self.dim
        q = self.q(x).reshape(-1, h * w, self.num_heads, self.head_dim).transpose(1, 2)
        n_kv = h * w
        if self.sr is not None and self.norm is not None:
            r = self.sr.stride[0]
            n_kv = (h // r) * (w // r)
            x = self.sr(x.transpose(1, 2).reshape(-1, c, h, w)).reshape(-1, c, n_kv)
            x = self.norm(x.transpose(1, 2))
        kv = self.kv(x).reshape(-1, n_kv, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = attend(q, kv[0], kv[1], self.scale, self.attn_impl)  # (B, heads, N, hd)
        return self.proj(x.transpose(1, 2).reshape(-1, h * w, c))


class Block(nn.Module):
    """Pre-norm transformer block with LSA or GSA attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, kind: str, sr_ratio: int,
                 ws: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn: LocallyGroupedAttn | GlobalSubSampleAttn
        if kind == "lsa":
            self.attn = LocallyGroupedAttn(dim, num_heads, ws)
        else:
            self.attn = GlobalSubSampleAttn(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor, size: Size) -> Tensor:
        x = x + self.attn(self.norm1(x), size)
        return x + self.mlp(self.norm2(x))


class PosConv(nn.Module):
    """PEG: residual depthwise 3x3 conv on the token map (replaces position embeddings)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # nn.Sequential only to keep the checkpoint key ``pos_block.{i}.proj.0.weight``.
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim))

    def forward(self, x: Tensor, size: Size) -> Tensor:
        h, w = size
        feat = x.transpose(1, 2).reshape(-1, self.dim, h, w)
        return (self.proj(feat) + feat).reshape(-1, self.dim, h * w).transpose(1, 2)


class PatchEmbed(nn.Module):
    """Non-overlapping patch conv (kernel = stride = patch) then LayerNorm (eps 1e-5)."""

    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, size: Size | None = None) -> tuple[Tensor, Size]:
        """Tokens ``(B, h*w, C)`` and ``(h, w)``; ``size`` passes a known output size."""
        x = self.proj(x)
        if size is None:
            size = (x.shape[2], x.shape[3])
        x = x.reshape(-1, self.proj.out_channels, size[0] * size[1]).transpose(1, 2)
        return self.norm(x), size


class Twins(nn.Module):
    """A Twins classifier, or with ``features=True`` a backbone returning four NCHW maps.

    Backbone maps are taken at strides 4/8/16/32 before the final norm, equal to timm's
    ``forward_intermediates``. Official detection/segmentation SVT checkpoints carry
    per-stage norms (``norm_list``); :meth:`add_stage_norms` creates them, after which
    each stage's tokens are normalised before they are emitted and passed on, as in the
    official backbone.
    """

    def __init__(self, cfg: TwinsConfig, num_classes: int = 1000, features: bool = False,
                 in_chans: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.num_classes = 0 if features else num_classes
        self.num_features = cfg.embed_dims[-1]
        self.patch_embeds = nn.ModuleList()
        prev = in_chans
        for k, dim in enumerate(cfg.embed_dims):
            self.patch_embeds.append(PatchEmbed(prev, dim, 4 if k == 0 else 2))
            prev = dim
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                Block(dim, cfg.num_heads[k], cfg.mlp_ratios[k], kind, cfg.sr_ratios[k],
                      cfg.wss[k] if cfg.wss else 1)
                for kind in cfg.block_kinds(k)
            )
            for k, dim in enumerate(cfg.embed_dims)
        )
        self.pos_block = nn.ModuleList(PosConv(dim) for dim in cfg.embed_dims)
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head: nn.Module = (
            nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()
        )
        self.norm_list: nn.ModuleList | None = None
        # Set by a static-H/W export: stage sizes then enter the trace as constants, so
        # window pads, crops and reshapes fold away instead of becoming shape arithmetic.
        self.static_hw: tuple[int, int] | None = None
        self.set_attention_impl("sdpa")

    # -- configuration -------------------------------------------------------------------
    def set_attention_impl(self, impl: str) -> Twins:
        """Select ``"sdpa"`` (PyTorch speed) or ``"explicit"`` (export) in every block."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        for m in self.modules():
            if isinstance(m, (LocallyGroupedAttn, GlobalSubSampleAttn)):
                m.attn_impl = impl
        self.attn_impl = impl
        return self

    def add_stage_norms(self) -> None:
        """Create the official det/seg backbones' per-stage LayerNorms (eps 1e-6)."""
        if not self.features:
            raise ValueError("per-stage norms exist only in backbone mode (features=True)")
        if self.norm_list is None:
            ref = self.norm.weight
            self.norm_list = nn.ModuleList(
                nn.LayerNorm(d, eps=1e-6).to(device=ref.device, dtype=ref.dtype)
                for d in self.cfg.embed_dims
            )

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one (or none for 0 classes)."""
        ref = self.norm.weight
        self.num_classes = num_classes
        self.head = (
            nn.Linear(self.num_features, num_classes).to(device=ref.device, dtype=ref.dtype)
            if num_classes > 0 else nn.Identity()
        )

    # -- forward -------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if x.dim() != 4 or x.shape[1] != self.patch_embeds[0].proj.in_channels:
            raise InputShapeError(
                f"expected an NCHW batch with {self.patch_embeds[0].proj.in_channels} channels, "
                f"got shape {tuple(x.shape)}"
            )
        if self.static_hw is not None and tuple(x.shape[2:]) != self.static_hw:
            raise InputShapeError(
                f"model is fixed to {self.static_hw[0]}x{self.static_hw[1]} inputs, got "
                f"{x.shape[2]}x{x.shape[3]}"
            )
        if x.shape[2] < MIN_IMAGE_SIDE or x.shape[3] < MIN_IMAGE_SIDE:
            raise InputShapeError(
                f"image size {x.shape[2]}x{x.shape[3]} is too small: Twins needs H, W >= "
                f"{MIN_IMAGE_SIDE} (the stage-1 sub-sampling conv has stride 8 after stride 4)"
            )

    def stage_sizes(self, hw: tuple[int, int]) -> list[Size]:
        """Token-map size of each stage for an input of ``hw`` (convs floor)."""
        sizes, (h, w) = [], hw
        for embed in self.patch_embeds:
            p = embed.proj.stride[0]
            h, w = h // p, w // p
            sizes.append((h, w))
        return sizes

    def _stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Run the four stages; return last-stage tokens and the four NCHW maps."""
        maps: list[Tensor] = []
        static = self.stage_sizes(self.static_hw) if self.static_hw is not None else None
        for k, (embed, blocks, peg) in enumerate(zip(self.patch_embeds, self.blocks, self.pos_block)):
            x, size = embed(x, static[k] if static is not None else None)
            for j, blk in enumerate(blocks):
                x = blk(x, size)
                if j == 0:
                    x = peg(x, size)
            if self.norm_list is not None:
                x = self.norm_list[k](x)
            fmap = x.reshape(-1, size[0], size[1], x.shape[-1]).permute(0, 3, 1, 2)
            maps.append(fmap)
            if k < len(self.blocks) - 1:
                x = fmap
        return x, maps

    def forward_features(self, x: Tensor) -> Tensor:
        """Last-stage tokens ``(B, N, C)`` after the final norm (timm's forward_features)."""
        self._check_input(x)
        return self.norm(self._stages(x)[0])

    def forward_maps(self, x: Tensor) -> list[Tensor]:
        """The four stage maps, NCHW, strides 4/8/16/32."""
        self._check_input(x)
        return self._stages(x)[1]

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.features:
            return tuple(self.forward_maps(x))
        return self.head(self.forward_features(x).mean(dim=1))


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (what the paper and timm report)."""
    return sum(p.numel() for p in model.parameters())
