"""Command lines for other tools that reproduce what twins-deploy checks, from a manifest.

Polygraphy's ``run`` feeds a 1x3x1x1 tensor to a model whose H and W are dynamic, which
fails; the manifest knows the input contract, so these lines feed shapes that work and
values in the range the model's normalisation produces.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from twins_deploy.engines.trt.profile import profile_for
from twins_deploy.exporters.spec import INPUT_NAME
from twins_deploy.manifest import Manifest


def _shape(dims: tuple[int, ...]) -> str:
    return f"{INPUT_NAME}:[{','.join(map(str, dims))}]"


def input_value_range(manifest: Manifest) -> tuple[float, float]:
    """The smallest and largest value a normalised image can have: (0 - mean) / std and
    (1 - mean) / std over the channels."""
    pre = manifest.preprocess
    lows = [(0.0 - m) / s for m, s in zip(pre.mean, pre.std)]
    highs = [(1.0 - m) / s for m, s in zip(pre.mean, pre.std)]
    return round(min(lows), 3), round(max(highs), 3)


def polygraphy_commands(path: str | Path, manifest: Manifest) -> dict[str, str]:
    """``polygraphy run`` lines for an ONNX artifact: ONNX Runtime alone, and ONNX Runtime
    against TensorRT with the profile ``twins-export --fmt trt`` would build."""
    spec = manifest.spec
    profile = profile_for(spec)
    lo, hi = input_value_range(manifest)
    common = ["--input-shapes", _shape(profile.opt), "--val-range", f"{INPUT_NAME}:[{lo},{hi}]"]
    ort = ["polygraphy", "run", str(path), "--onnxrt", *common]
    trt = [*ort, "--trt", "--trt-min-shapes", _shape(profile.min), "--trt-opt-shapes", _shape(profile.opt),
           "--trt-max-shapes", _shape(profile.max)]
    if manifest.plan.graph == "fp16":
        trt.append("--strongly-typed")  # precision comes from the graph (TensorRT 10.x; implied on 11)
    tol = ["--atol", "1e-4", "--rtol", "1e-4"] if manifest.precision == "fp32" else ["--atol", "1e-2", "--rtol", "1e-2"]
    return {"onnxruntime": shlex.join(ort), "onnxruntime vs TensorRT": shlex.join(trt + tol)}
