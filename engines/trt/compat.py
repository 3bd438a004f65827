"""Whether a TensorRT plan can run here: its manifest against the installed TensorRT and GPU.

TensorRT refuses a foreign plan with "Version tag does not match" or a bare None; this
check names what differs and what to do, before the plan is deserialized.
"""
from __future__ import annotations

from typing import Any

from twins_deploy.engines.trt.env import trt_major, version_tuple
from twins_deploy.errors import ArtifactError


def check_engine_compat(engine: Any, installed_version: str, gpu: dict[str, Any]) -> list[str]:
    """Refuse an engine built for another TensorRT or GPU; return warnings that do not block.

    ``engine`` is a manifest's :class:`~twins_deploy.manifest.EngineInfo`. Plans are tied
    to the exact TensorRT version unless built version-compatible (then a later release
    of the same major runs them), and to the compute capability unless built
    hardware-compatible (``ampere+``: any SM >= 8.0).
    """
    built = engine.trt_version
    if not built or not engine.gpu.get("compute_capability"):
        raise ArtifactError("engine manifest lacks the TensorRT version or GPU it was built for")
    opts = engine.build_options or {}
    warnings: list[str] = []
    if opts.get("version_compat"):
        if trt_major(built) != trt_major(installed_version) or version_tuple(installed_version) < version_tuple(built):
            raise ArtifactError(
                f"engine was built version-compatible with TensorRT {built}; it runs on {trt_major(built)}.x "
                f">= {built}, not on the installed {installed_version}; rebuild it with twins-export --fmt trt")
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
