"""PyTorch eager (FP32, FP16) and torch.compile as Runners: the reference and baselines."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from twins_deploy.engines.runners.base import RouteRow, Runner, RunTarget, as_numpy
from twins_deploy.errors import BackendUnavailableError
from twins_deploy.exporters.spec import FEATURE_NAMES, LOGITS_NAME

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchRunner(Runner):
    """Run a Twins model in PyTorch.

    The FP32 CPU runner with the explicit attention path is the validation reference;
    ``dtype=torch.float16`` and ``compile=True`` are benchmark baselines on CUDA.
    """

    def __init__(self, model: torch.nn.Module, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, compile: bool = False,
                 attn_impl: str | None = None, name: str | None = None) -> None:
        super().__init__()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
        self.model, self.device, self.dtype, self.compile = model, device, dtype, compile
        self.attn_impl = attn_impl
        self.name = name or f"torch-{str(dtype).replace('torch.float', 'fp')}-{device}" + ("-compile" if compile else "")
        self.output_names = list(FEATURE_NAMES) if getattr(model, "features", False) else [LOGITS_NAME]

    @classmethod
    def from_route(cls, route: RouteRow, target: RunTarget) -> TorchRunner:
        """``device`` "auto" is CUDA when PyTorch sees a GPU; a "cuda" route without one
        is refused by the constructor (BackendUnavailableError)."""
        device = "cuda" if route.device == "cuda" or (route.device == "auto" and torch.cuda.is_available()) else "cpu"
        return cls(target.model, device=device, dtype=_DTYPES[route.options.get("dtype", "fp32")],
                   compile=bool(route.options.get("compile", False)), name=route.name)

    def _activate(self) -> None:
        # Never move or cast the caller's model in place: other runners (an ONNX export,
        # the FP32 reference) use it after this one. What is changed in place (eval mode,
        # the attention path) is put back by _deactivate.
        self._caller_model = self.model
        self._restore = (self.model.training, getattr(self.model, "attn_impl", None))
        p = next(self.model.parameters())
        if p.device.type != torch.device(self.device).type or p.dtype != self.dtype:
            self.model = copy.deepcopy(self.model).to(self.device, self.dtype)
        self.model.eval()
        if self.attn_impl and hasattr(self.model, "set_attention_impl"):  # ours; another model runs as it is
            self.model.set_attention_impl(self.attn_impl)
        self._fn = torch.compile(self.model) if self.compile else self.model

    def _deactivate(self) -> None:
        training, impl = self._restore
        caller = self._caller_model
        caller.train(training)
        if impl is not None and caller.attn_impl != impl:
            caller.set_attention_impl(impl)
        self.model, self._fn = caller, None

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            out = self._fn(x)
        return out if isinstance(out, tuple) else (out,)

    def infer(self, x: Any) -> list[np.ndarray]:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(as_numpy(x))
        return [as_numpy(o) for o in self._run(t.to(self.device, self.dtype))]

    def prepare(self, x: np.ndarray, include_copies: bool = False) -> None:
        self._include_copies = include_copies
        self._host = torch.from_numpy(as_numpy(x))
        if self.device.startswith("cuda"):
            self._host = self._host.pin_memory()
        self._staged = self._host.to(self.device, self.dtype)

    def step(self) -> None:
        x = self._host.to(self.device, self.dtype, non_blocking=True) if self._include_copies else self._staged
        out = self._run(x)
        if self._include_copies:
            for o in out:
                o.to("cpu", non_blocking=True)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": str(self.dtype), "compile": self.compile,
                "attn_impl": getattr(self.model, "attn_impl", None),
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if self.device.startswith("cuda") else None}
