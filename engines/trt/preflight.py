"""Can TensorRT work here? Asked before any export, build or load, answered in one line per problem.

A first run on a GPU machine fails in ways that have nothing to do with the model: the
wrong TensorRT wheel for the driver, a GPU the installed TensorRT line no longer (or not
yet) supports, a GPU already full. Each of those would otherwise surface after the ONNX
export (half a minute or more) as a CUDA error code or a TensorRT log line. The preflight
checks them first, in this order, and says what to install or change:

1. a TensorRT module (the full one to build; the lean runtime is enough to run a
   version-compatible plan) and, to build, Polygraphy;
2. the NVIDIA driver against the CUDA major of the TensorRT wheel and of cuda-bindings
   (``cudaDriverGetVersion`` is the newest CUDA the driver runs; a cu13 wheel needs a
   CUDA 13 driver, R580+, a cu12 wheel a CUDA 12 driver, R525+);
3. the GPU's compute capability against what the TensorRT line supports
   (:data:`SUPPORTED_SM`);
4. free GPU memory against the builder workspace asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

from twins_deploy.artifacts import trt_distributions
from twins_deploy.engines.trt.env import INSTALL_HINT, BuildEnv, has_builder, import_tensorrt, version_tuple
from twins_deploy.errors import BackendUnavailableError

# Which GPUs each TensorRT release supports, as NVIDIA's support matrices and release notes
# give it: (first release, minimum SM, maximum SM or None), the last row that applies wins.
# * 8.6.1 Support Matrix: SM 5.0 and newer up to Hopper (9.0); no Blackwell.
# * 10.0-10.4 Support Matrix: "compiled to support all NVIDIA hardware with SM 7.0 or higher".
# * 10.5.0 release notes: "NVIDIA Volta support (GPUs with compute capability 7.0) has been
#   removed starting with TensorRT 10.5".
# * 10.8.0 release notes: first release with Blackwell (SM 10.x, 12.x); before it, up to 9.0.
# * 11.x is built with CUDA 13, which dropped SM < 7.5; no 11.x note removes more.
SUPPORTED_SM: tuple[tuple[tuple[int, int], int, int | None], ...] = (
    ((8, 6), 50, 90),
    ((10, 0), 70, 90),
    ((10, 5), 75, 90),
    ((10, 8), 75, None),
    ((11, 0), 75, None),
)
# The NVIDIA driver branch that first runs each CUDA major (CUDA Toolkit release notes, table 3).
DRIVER_FOR_CUDA = {11: "R450", 12: "R525", 13: "R580"}


def wheel_cuda_major(version: str) -> tuple[int | None, str]:
    """The CUDA major the installed TensorRT ``version`` was built for, and the distribution
    that says so (None when no installed distribution names one, e.g. a tar install)."""
    dists = [d for d in trt_distributions() if version_tuple(d.version)[:3] == version_tuple(version)[:3]]
    for d in dists:
        if d.cuda_major is not None:
            return d.cuda_major, d.name
    return None, dists[0].name if dists else "tensorrt"


def supported_sm(version: str) -> tuple[int, int | None]:
    """(minimum, maximum or None) SM of the GPUs TensorRT ``version`` supports."""
    v = version_tuple(version)[:2]
    rows = [row for row in SUPPORTED_SM if v >= row[0]]
    _, lo, hi = rows[-1] if rows else SUPPORTED_SM[0]
    return lo, hi


def sm_problem(version: str, sm: int, gpu_name: str) -> str | None:
    """Why TensorRT ``version`` cannot run on a GPU of compute capability ``sm``, or None."""
    lo, hi = supported_sm(version)
    cc = f"{sm // 10}.{sm % 10}"
    if sm < lo:
        older = [first for first, low, _ in SUPPORTED_SM if low <= sm]
        hint = (f"use a TensorRT older than {next_release(older[-1])}" if older
                else "no TensorRT line twins-deploy supports runs on it")
        return (f"TensorRT {version} supports GPUs of compute capability {lo // 10}.{lo % 10} and newer; "
                f"{gpu_name} is {cc}: {hint}")
    if hi is not None and sm > hi:
        newer = next(first for first, _, high in SUPPORTED_SM if high is None or high >= sm)
        return (f"TensorRT {version} predates {gpu_name} (compute capability {cc}, newest supported "
                f"{hi // 10}.{hi % 10}): install TensorRT {newer[0]}.{newer[1]} or newer")
    return None


def next_release(first: tuple[int, int]) -> str:
    """The release after the last one of the support row starting at ``first``."""
    later = [row[0] for row in SUPPORTED_SM if row[0] > first]
    return f"{later[0][0]}.{later[0][1]}" if later else "99"


def driver_problem(driver: int, needs: int | None, what: str) -> str | None:
    """Why a driver that runs CUDA ``driver`` (e.g. 12080) cannot run ``what`` built for CUDA ``needs``."""
    if needs is None or driver // 1000 >= needs:
        return None
    if driver == 0:
        return f"{what} needs an NVIDIA driver, and none is installed (cudaDriverGetVersion returned 0)"
    have = f"{driver // 1000}.{driver % 1000 // 10}"
    return (f"{what} needs a driver for CUDA {needs} ({DRIVER_FOR_CUDA.get(needs, 'a newer branch')} or newer); "
            f"the installed NVIDIA driver runs CUDA {have} at most: update the driver, or install the "
            f"cu{driver // 1000} build instead (pip install 'twins-deploy[trt]' is CUDA 12, [trt-cu13] CUDA 13)")


@dataclass
class Preflight:
    """What the preflight found; ``problems`` empty means TensorRT can work here."""

    trt: ModuleType | None = None
    gpu: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def raise_if_failed(self) -> None:
        """One error: one line when there is one problem (the usual case, e.g. no TensorRT),
        otherwise a first line that introduces the list, one problem a line."""
        if len(self.problems) == 1:
            raise BackendUnavailableError(f"TensorRT cannot run here: {self.problems[0]}")
        if self.problems:
            raise BackendUnavailableError(
                "TensorRT cannot run here:\n" + "\n".join(f"  - {p}" for p in self.problems))


def _cuda_bindings_major() -> int | None:
    try:
        return int(metadata.version("cuda-bindings").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _module(build: bool, lean_ok: bool) -> tuple[ModuleType | None, list[str]]:
    """The TensorRT module, or what is missing (step 1)."""
    try:
        trt = import_tensorrt(lean_ok=lean_ok and not build)
    except BackendUnavailableError as e:
        return None, [str(e)]
    if not build:
        return trt, []
    if not has_builder(trt):
        return trt, [f"the installed TensorRT {trt.__version__} has no builder (lean runtime only); {INSTALL_HINT}"]
    from twins_deploy.engines.trt.build import _polygraphy

    try:
        _polygraphy()  # it builds the engines: the same check and message as the build's own
    except BackendUnavailableError as e:
        return trt, [str(e)]
    return trt, []


def preflight(build: bool = True, workspace_gib: float | None = None, lean_ok: bool = False) -> Preflight:
    """Check that TensorRT can build (``build``) or run a plan here; never raises for a missing
    piece: every problem found is listed in the result (:meth:`Preflight.raise_if_failed`)."""
    from twins_deploy.engines.trt.cuda import cuda_check, cudart
    from twins_deploy.engines.trt.env import gpu_info

    out = Preflight()
    out.trt, out.problems = _module(build, lean_ok)
    if out.trt is None:
        return out
    version = str(out.trt.__version__)
    try:
        rt = cudart()
        driver = int(cuda_check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion"))
    except BackendUnavailableError as e:  # cuda-bindings missing
        out.problems.append(str(e))
        return out
    needs, dist = wheel_cuda_major(version)
    for problem in (driver_problem(driver, needs, f"TensorRT {version} ({dist})"),
                    driver_problem(driver, _cuda_bindings_major(), "cuda-bindings (cuda-python)")):
        if problem:
            out.problems.append(problem)
    if out.problems:
        return out  # the CUDA calls below would only fail with cudaErrorInsufficientDriver
    try:
        out.gpu = gpu_info(driver=driver)
    except BackendUnavailableError as e:
        out.problems.append(str(e))
        return out
    if problem := sm_problem(version, out.gpu["sm"], out.gpu["name"]):
        out.problems.append(problem)
    if workspace_gib is not None:
        free, _total = cuda_check(rt.cudaMemGetInfo(), "cudaMemGetInfo")
        if workspace_gib * 2**30 > free:
            out.problems.append(f"{out.gpu['name']} has {free / 2**30:.1f} GiB free, the builder workspace asks "
                                f"for {workspace_gib:g} GiB: lower --workspace or free the GPU")
    return out


def checked_build_env(workspace_gib: float) -> BuildEnv:
    """TensorRT's builder and the GPU to build on, or one error listing every problem
    (exit 3) before anything is exported."""
    found = preflight(build=True, workspace_gib=workspace_gib)
    found.raise_if_failed()
    return BuildEnv(found.trt, found.gpu)
