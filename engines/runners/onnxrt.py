"""ONNX Runtime as a Runner (CPU, or CUDA when onnxruntime-gpu is installed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from twins_deploy.artifacts import existing_file
from twins_deploy.engines.runners.base import RouteRow, Runner, RunTarget, as_numpy, check_input_shape
from twins_deploy.errors import ArtifactError, BackendUnavailableError, quoted

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OrtRunner(Runner):
    """Run an ONNX file in ONNX Runtime with full graph optimisation."""

    def __init__(self, path: str | os.PathLike[str], provider: str = "cpu",
                 threads: int | None = None, spinning: bool = True) -> None:
        super().__init__()
        if provider not in _PROVIDERS:
            raise ValueError(f"provider must be one of {list(_PROVIDERS)}, got {quoted(provider)}")
        self.path, self.provider, self.threads = Path(path), provider, threads
        # Idle intra-op threads spin by default; off, they sleep, so that runners sharing
        # the cores (an interleaved comparison) do not steal each other's time.
        self.spinning = spinning
        self.name = f"ort-{provider}"
        self.device = "cuda" if provider == "cuda" else "cpu"

    @classmethod
    def from_route(cls, route: RouteRow, target: RunTarget) -> OrtRunner:
        runner = cls(target.path, provider=route.device, threads=target.threads, spinning=target.spinning)
        runner.name = route.name
        return runner

    def _activate(self) -> None:
        import onnxruntime as ort

        want = _PROVIDERS[self.provider]
        if want not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"ONNX Runtime has no {want} (available: {', '.join(ort.get_available_providers())}); "
                "for CUDA install onnxruntime-gpu"
            )
        existing_file(self.path, "ONNX model")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = self.threads
        if not self.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=[want])
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise ArtifactError(f"ONNX Runtime cannot load {quoted(str(self.path))}: {e}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type
        self.input_dims = [d if isinstance(d, int) else None for d in self.session.get_inputs()[0].shape]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _deactivate(self) -> None:
        del self.session

    def _feed(self, x: Any) -> np.ndarray:
        arr = as_numpy(x)
        check_input_shape(arr.shape, self.input_dims, self.input_name)
        return arr.astype(np.float16) if self.input_type == "tensor(float16)" else arr

    def infer(self, x: Any) -> list[np.ndarray]:
        outs = self.session.run(None, {self.input_name: self._feed(x)})
        return [np.asarray(o, dtype=np.float32) for o in outs]

    def prepare(self, x: np.ndarray, include_copies: bool = False) -> None:
        super().prepare(self._feed(x), include_copies)
        self._binding = self.session.io_binding()
        device = "cuda" if self.provider == "cuda" else "cpu"
        import onnxruntime as ort

        self._ortvalue = ort.OrtValue.ortvalue_from_numpy(self._prepared, device, 0)
        for name in self.output_names:
            self._binding.bind_output(name, device)

    def step(self) -> None:
        if self._include_copies:
            self.session.run(None, {self.input_name: self._prepared})
            return
        self._binding.bind_ortvalue_input(self.input_name, self._ortvalue)
        self.session.run_with_iobinding(self._binding)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path), "threads": self.threads, "spinning": self.spinning}
