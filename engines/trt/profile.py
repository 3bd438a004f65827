"""The optimization profile of an export, as shapes (shared by builder, trtexec, runner)."""
from __future__ import annotations

from dataclasses import dataclass

from twins_deploy.errors import InputShapeError
from twins_deploy.exporters.spec import INPUT_NAME, ExportSpec
from twins_deploy.registry import MIN_IMAGE_SIDE

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class Profile:
    input: str
    min: Shape
    opt: Shape
    max: Shape

    def check(self, shape: tuple[int, ...]) -> None:
        """Refuse a shape outside the profile, naming the allowed range."""
        if len(shape) != 4 or any(not lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max)):
            raise InputShapeError(
                f"input shape {tuple(shape)} is outside the engine's profile: batch "
                f"{self.min[0]}..{self.max[0]}, H {self.min[2]}..{self.max[2]}, W {self.min[3]}..{self.max[3]}"
            )

    def to_dict(self) -> dict[str, list[int] | str]:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        return cls(d["input"], tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))  # type: ignore[arg-type]


def profile_for(spec: ExportSpec, min_hw: tuple[int, int] | None = None,
                max_hw: tuple[int, int] | None = None) -> Profile:
    """Batch range from the spec; with dynamic H/W, half to twice the export size by default."""
    b, (h, w) = spec.batch, spec.img_size
    if spec.dynamic_hw:
        lo = min_hw or (max(MIN_IMAGE_SIDE, h // 2), max(MIN_IMAGE_SIDE, w // 2))
        hi = max_hw or (2 * h, 2 * w)
    else:
        lo = hi = (h, w)
    if not (lo[0] <= h <= hi[0] and lo[1] <= w <= hi[1]):
        raise InputShapeError(f"H/W range {lo}..{hi} does not contain the export size {h}x{w}")
    return Profile(INPUT_NAME, (b.min, 3, *lo), (b.opt, 3, h, w), (b.max, 3, *hi))
