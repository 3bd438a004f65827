"""ONNX -> runnable engines, and the proof that they compute what PyTorch computes.

- ``runners/``: one :class:`~twins_deploy.engines.runners.base.Runner` per backend
  (PyTorch, ONNX Runtime, OpenVINO, TensorRT) with one surface for validation and benchmarks;
- ``trt/``: building TensorRT plans (environment probe, options, profile, builder,
  trtexec line, engine compatibility, CUDA helpers);
- ``validation.py``: a candidate Runner against the PyTorch FP32 reference.

No module here imports TensorRT or CUDA libraries at import time: they are imported by
the functions that need them, so the package loads on a CPU-only machine.
"""
