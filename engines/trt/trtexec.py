"""The trtexec command line equivalent to a build, for rebuilding on another box.

Flags differ by major version (trtexec's ``--help`` of each release): ``--stronglyTyped``
exists from 9.x and is a no-op on 11; ``--fp16`` is gone in 11 (strong typing only).
"""
from __future__ import annotations

import shlex

from twins_deploy.engines.trt.options import TrtBuildOptions
from twins_deploy.engines.trt.profile import Profile
from twins_deploy.precision import PrecisionPlan

_HW_FLAG = {"ampere+": "ampere+", "same-cc": "sameComputeCapability"}


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_command(onnx_file: str, engine_file: str, profile: Profile, opts: TrtBuildOptions,
                    major: int, plan: PrecisionPlan, cache_file: str | None = None) -> str:
    """One shell-quoted trtexec invocation reproducing the build for TensorRT ``major``.

    ``plan`` says how precision is realised: from the ONNX graph (strong typing) or by the
    FP16 builder flag on the FP32 graph (weak, TensorRT 8.6-10.x only; refused on 11);
    ``cache_file`` is the timing cache the build used (see
    :func:`~twins_deploy.engines.trt.options.timing_cache_path`).
    """
    strongly_typed = plan.strongly_typed_network(major)
    args = [
        "trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}",
        f"--minShapes={profile.input}:{_dims(profile.min)}",
        f"--optShapes={profile.input}:{_dims(profile.opt)}",
        f"--maxShapes={profile.input}:{_dims(profile.max)}",
        f"--memPoolSize=workspace:{int(opts.workspace_gib * 1024)}",  # MiB, the unit every version takes
        f"--builderOptimizationLevel={opts.opt_level}",
    ]
    if not opts.tf32:
        args.append("--noTF32")
    if strongly_typed:
        args.append("--stronglyTyped")
    args += [f"--{flag.lower()}" for flag in plan.builder_flags(major)]  # --int8 --fp16 for Q/DQ on 8.x
    if cache_file:
        args.append(f"--timingCacheFile={cache_file}")
    if opts.hw_compat != "none":
        args.append(f"--hardwareCompatibilityLevel={_HW_FLAG[opts.hw_compat]}")
    if opts.version_compat:
        args.append("--versionCompatible")
    args.append("--skipInference")
    return shlex.join(args)
