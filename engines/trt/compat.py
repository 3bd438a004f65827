"""Whether a TensorRT plan can run here: its manifest against the installed TensorRT and GPU.

TensorRT refuses a foreign plan with "Version tag does not match" or a bare None; this
check names what differs and what to do, before the plan is deserialized.
"""
from __future__ import annotations

from typing import Any

from twins_deploy.engines.trt.env import trt_major, version_tuple
from twins_deploy.errors import ArtifactError

# NVIDIA's rule for version-compatible plans (BuilderFlag.VERSION_COMPATIBLE):
# * "Version compatibility is supported from version 8.6; the plan must be built with a
#   version at least 8.6 or higher, and the runtime must be 8.6 or higher."
# * "engines built with TensorRT 8 work with TensorRT 9 and TensorRT 10 runtimes. However,
#   engines built with newer versions (TensorRT 9 or 10) do not work with older runtimes"
#   (docs.nvidia.com/deeplearning/tensorrt/10.16.1/inference-library/version-compatibility.html);
# * "engines built with TensorRT 10 work with TensorRT 11 ... engines built with version
#   compatibility enabled using TensorRT 11.0 will be compatible with TensorRT 11.1 and
#   later 11.x versions" (.../tensorrt/11.1.0/inference-library/engine-compatibility.html);
# * 8.x -> 11.x is not among the supported combinations (TensorRT 11.4 Support Matrix,
#   "Engine Portability").
FIRST_VC = (8, 6)
VC_CROSS_MAJOR = {(8, 9), (8, 10), (9, 10), (10, 11)}  # (built, runtime) majors NVIDIA supports


def version_compatible_runs(built: str, runtime: str) -> bool:
    """Whether a plan built version-compatible with TensorRT ``built`` loads on ``runtime``."""
    b, r = version_tuple(built), version_tuple(runtime)
    if b[:2] < FIRST_VC or r[:2] < FIRST_VC:
        return False
    if b[0] == r[0]:
        return r >= b  # within a major: the same or a later release
    return (b[0], r[0]) in VC_CROSS_MAJOR


def check_engine_compat(engine: Any, installed_version: str, gpu: dict[str, Any]) -> list[str]:
    """Refuse an engine built for another TensorRT or GPU; return warnings that do not block.

    ``engine`` is a manifest's :class:`~twins_deploy.manifest.EngineInfo`. Plans are tied
    to the exact TensorRT version unless built version-compatible (then NVIDIA's rule in
    :func:`version_compatible_runs` applies), and to the compute capability unless built
    hardware-compatible (``ampere+``: any SM >= 8.0).
    """
    built = engine.trt_version
    if not built or not engine.gpu.get("compute_capability"):
        raise ArtifactError("engine manifest lacks the TensorRT version or GPU it was built for")
    opts = engine.build_options or {}
    warnings: list[str] = []
    if opts.get("version_compat"):
        if not version_compatible_runs(built, installed_version):
            later = sorted({r for b, r in VC_CROSS_MAJOR if b == trt_major(built)})
            where = f"{trt_major(built)}.x >= {built}" + "".join(f" or {r}.x" for r in later)
            raise ArtifactError(
                f"engine was built version-compatible with TensorRT {built}; NVIDIA supports it on {where}, "
                f"not on the installed {installed_version}; rebuild it with twins-export --fmt trt")
    elif version_tuple(built) != version_tuple(installed_version):
        raise ArtifactError(
            f"engine was built with TensorRT {built} but TensorRT {installed_version} is installed; "
            "rebuild it here with twins-export --fmt trt (or build it with --version-compat)")
    want, have = engine.gpu["compute_capability"], gpu["compute_capability"]
    level = opts.get("hw_compat", "none")
    if level == "ampere+":
        if float(have) < 8.0:
            raise ArtifactError(f"engine is hardware-compatible for Ampere and newer; this GPU is SM {have}")
    elif want != have:
        raise ArtifactError(
            f"engine was built for compute capability {want} ({engine.gpu.get('name')}), this GPU "
            f"({gpu['name']}) is {have}; rebuild it here, or build with --hw-compat ampere+")
    if level == "none" and engine.gpu.get("name") and engine.gpu["name"] != gpu["name"]:
        warnings.append(f"engine was built on {engine.gpu['name']}, running on {gpu['name']} (same SM {have})")
    return warnings
