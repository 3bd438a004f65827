"""One Runner per backend, all with the surface of :class:`base.Runner`.

``pytorch`` (eager FP32/FP16, torch.compile: the reference and baselines), ``onnxrt``
(ONNX Runtime, CPU or CUDA) and ``trt`` (TensorRT plans, checked against their manifest).
"""
