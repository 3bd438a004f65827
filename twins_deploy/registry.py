"""The six Twins variants (and a tiny test-only one) as data: architecture, preprocessing and names.

Nothing here imports torch, so listing models and resolving names is cheap (the CLI's
``--help`` and error paths use it).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from twins_deploy.errors import UnknownModelError, quoted

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIDE = 32  # below this the stage-1 sub-sampling conv (k=s=8) gets an empty input
# timm's interpolation names that PIL resizes with (``PIL.Image.Resampling`` members)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class Preprocess:
    """How images are turned into the model's input; timm's ``pretrained_cfg`` values."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.9
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        """A manifest is read back into this: refuse values no image could be prepared with."""
        def floats(v: Any) -> bool:
            return (isinstance(v, tuple) and len(v) == 3
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))

        size = self.input_size
        if not (isinstance(size, tuple) and len(size) == 3 and all(type(x) is int for x in size)
                and size[0] == 3 and min(size[1:]) >= MIN_IMAGE_SIDE):
            raise ValueError(f"preprocess input_size must be (3, H, W) with H, W >= {MIN_IMAGE_SIDE}, "
                             f"got {quoted(size)}")
        if not floats(self.mean) or not floats(self.std) or min(self.std) <= 0:
            raise ValueError(f"preprocess mean and std must be 3 finite numbers each, std > 0; "
                             f"got mean {quoted(self.mean)}, std {quoted(self.std)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocess interpolation {quoted(self.interpolation)} is not one of "
                             f"{', '.join(INTERPOLATIONS)}")
        if not (isinstance(self.crop_pct, (int, float)) and 0 < self.crop_pct <= 1):
            raise ValueError(f"preprocess crop_pct must be in (0, 1], got {quoted(self.crop_pct)}")
        if self.crop_mode != "center":
            raise ValueError(f"preprocess crop_mode {quoted(self.crop_mode)} is not supported (only timm's 'center')")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(tuple(d["input_size"]), tuple(d["mean"]), tuple(d["std"]),  # type: ignore[arg-type]
                   str(d["interpolation"]), float(d["crop_pct"]), str(d.get("crop_mode", "center")))


@dataclass(frozen=True)
class TwinsConfig:
    """Architecture of one variant; numbers from timm's ``@register_model`` functions."""

    name: str
    timm_name: str | None  # None: no timm counterpart and no published weights (test models)
    paper_name: str
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    mlp_ratios: tuple[int, int, int, int]
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    # LSA window per stage; None means every block is GSA (PCPVT).
    wss: tuple[int, int, int, int] | None = None
    num_params: int = 0  # classification model, 1000 classes; checked by the tests
    preprocess: Preprocess = field(default_factory=Preprocess)

    @property
    def hf_hub_id(self) -> str | None:
        """Where timm publishes this variant's ImageNet weights; None for a test model."""
        return f"timm/{self.timm_name}.in1k" if self.timm_name else None

    def block_kinds(self, stage: int) -> list[str]:
        """``'lsa'`` or ``'gsa'`` per block: SVT alternates LSA (even) and GSA (odd).

        A window of 1 means global attention, not 1x1 windows: timm and the official code
        build ``GlobalSubSampleAttn`` (keys ``q``/``kv``) wherever ``ws == 1``.
        """
        ws = self.wss[stage] if self.wss is not None else 1
        return ["gsa" if ws == 1 or i % 2 == 1 else "lsa" for i in range(self.depths[stage])]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hf_hub_id"] = self.hf_hub_id
        return d


_CONFIGS: dict[str, TwinsConfig] = {
    c.name: c
    for c in (
        TwinsConfig("pcpvt_s", "twins_pcpvt_small", "Twins-PCPVT-S", (64, 128, 320, 512),
                    (3, 4, 6, 3), (1, 2, 5, 8), (8, 8, 4, 4), num_params=24_106_216),
        TwinsConfig("pcpvt_b", "twins_pcpvt_base", "Twins-PCPVT-B", (64, 128, 320, 512),
                    (3, 4, 18, 3), (1, 2, 5, 8), (8, 8, 4, 4), num_params=43_828_456),
        TwinsConfig("pcpvt_l", "twins_pcpvt_large", "Twins-PCPVT-L", (64, 128, 320, 512),
                    (3, 8, 27, 3), (1, 2, 5, 8), (8, 8, 4, 4), num_params=60_989_672),
        TwinsConfig("svt_s", "twins_svt_small", "Twins-SVT-S", (64, 128, 256, 512),
                    (2, 2, 10, 4), (2, 4, 8, 16), (4, 4, 4, 4), wss=(7, 7, 7, 7),
                    num_params=24_060_776),
        TwinsConfig("svt_b", "twins_svt_base", "Twins-SVT-B", (96, 192, 384, 768),
                    (2, 2, 18, 2), (3, 6, 12, 24), (4, 4, 4, 4), wss=(7, 7, 7, 7),
                    num_params=56_070_952),
        TwinsConfig("svt_l", "twins_svt_large", "Twins-SVT-L", (128, 256, 512, 1024),
                    (2, 2, 18, 2), (4, 8, 16, 32), (4, 4, 4, 4), wss=(7, 7, 7, 7),
                    num_params=99_271_400),
    )
}

# Models that exist for the test suite only: no paper variant, no published weights, not
# in ``list_models()`` (whose six every parity test iterates over), but resolvable by name.
# svt_t is an SVT small enough to train on CPU in a minute (tests/train_digits.py), so INT8
# accuracy can be judged on real predictions instead of random weights.
_TEST_CONFIGS: dict[str, TwinsConfig] = {
    c.name: c
    for c in (
        TwinsConfig("svt_t", None, "Twins-SVT-T (tiny, 32x32; a test model)", (32, 64, 96, 128),
                    (2, 2, 2, 2), (1, 2, 3, 4), (2, 2, 2, 2), sr_ratios=(4, 2, 1, 1),
                    wss=(4, 2, 2, 1), num_params=748_488,
                    preprocess=Preprocess((3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                                          "bilinear", 1.0)),
    )
}
TEST_MODELS: tuple[str, ...] = tuple(_TEST_CONFIGS)

# timm's names (with or without the ``.in1k`` tag) and the official repo's names.
_ALIASES: dict[str, str] = {}
for _c in _CONFIGS.values():
    assert _c.timm_name is not None
    _ALIASES[_c.timm_name] = _c.name
    _ALIASES[f"{_c.timm_name}.in1k"] = _c.name
for _official, _short in {
    "pcpvt_small_v0": "pcpvt_s", "pcpvt_base_v0": "pcpvt_b", "pcpvt_large_v0": "pcpvt_l",
    "alt_gvt_small": "svt_s", "alt_gvt_base": "svt_b", "alt_gvt_large": "svt_l",
}.items():
    _ALIASES[_official] = _short


def list_models(include_test: bool = False) -> list[str]:
    """The short names of the six variants, PCPVT first; with ``include_test``, the
    test-only models (:data:`TEST_MODELS`) after them."""
    return list(_CONFIGS) + (list(_TEST_CONFIGS) if include_test else [])


def resolve_name(name: str) -> str:
    """Map a short name, timm name or official name to the short name.

    Raises :class:`UnknownModelError` naming the closest known names.
    """
    key = name.strip().lower()
    if key.startswith("timm/"):
        key = key[len("timm/"):]
    if key in _CONFIGS or key in _TEST_CONFIGS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    known = list(_CONFIGS) + list(_TEST_CONFIGS) + list(_ALIASES)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {quoted(name)}{hint} (known: {', '.join(_CONFIGS)}; timm names such as "
        f"twins_svt_small are accepted too)"
    )


def get_config(name: str) -> TwinsConfig:
    """The :class:`TwinsConfig` for any accepted name."""
    key = resolve_name(name)
    return _CONFIGS.get(key) or _TEST_CONFIGS[key]
