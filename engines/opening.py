"""Opening artifacts: a file and its manifest -> the Runner of the route that runs it.

Apart from making artifacts (:mod:`twins_deploy.pipeline`), so that everything that only
reads artifacts (predict, serving, the benchmark, twins-validate) opens them here, through
the same checks: the manifest is read, the route is taken from the table
(:mod:`twins_deploy.engines.routes`) and must run the artifact's kind, a TensorRT plan (which
TensorRT may crash on) must still have its manifest's sha256, and the route's Runner is
built from its row.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twins_deploy.artifacts import hash_mismatch
from twins_deploy.engines.routes import Route, get_route, route_for
from twins_deploy.engines.runners.base import Runner, RunTarget
from twins_deploy.errors import ArtifactError
from twins_deploy.manifest import Manifest, read_manifest


def open_runner(path: str | os.PathLike[str], manifest: Manifest | None = None, *, route: str | None = None,
                device: str = "cpu", threads: int | None = None, use_cuda_graph: bool = False,
                spinning: bool = True) -> Runner:
    """The Runner for the artifact at ``path``: on ``route`` (a table name or alias) when
    given, else the table's first route that runs its kind on ``device``. Not yet active.
    ``spinning`` False: a CPU runtime's idle threads sleep (for runners sharing the cores)."""
    path = Path(path)
    manifest = manifest or read_manifest(path)
    row = route_for(manifest, route, device)
    if manifest.is_plan and manifest.sha256 and (why := hash_mismatch(path, manifest.sha256)):
        raise ArtifactError(f"{path.name} is not the plan its manifest describes ({why}): "
                            "corrupt or replaced; rebuild it with twins-export --fmt trt")
    return row.runner.from_route(row, RunTarget(path=path, manifest=manifest, threads=threads, spinning=spinning,
                                                cuda_graphs=use_cuda_graph))


def open_model(route: str | Route, model: Any, threads: int | None = None) -> Runner:
    """The Runner of a route that runs the PyTorch model itself (``torch``, ``torch-fp16``, ...)."""
    row = route if isinstance(route, Route) else get_route(route)
    if not row.runs_model:
        raise ValueError(f"route {row.name} runs {', '.join(row.consumes)} artifacts, not the model")
    return row.runner.from_route(row, RunTarget(model=model, threads=threads))


def warn_if_changed(path: Path, manifest: Manifest, consequence: str) -> None:
    """Say on stderr, before loading, that an ONNX file is not the one its manifest describes:
    if the backend then cannot read it, or it takes other shapes, this says why. (A plan with
    another sha256 is refused outright by :func:`open_runner`.)"""
    if not manifest.is_plan and manifest.sha256 and (why := hash_mismatch(path, manifest.sha256)):
        print(f"warning: {path.name} differs from the file its manifest describes ({why}); {consequence}",
              file=sys.stderr, flush=True)
