"""One Runner per backend, all with the surface of :class:`base.Runner`.

``pytorch`` (eager FP32/FP16, torch.compile: the reference and baselines), ``onnxrt``
(ONNX Runtime, CPU or CUDA), ``openvino`` (OpenVINO on the CPU, FP32 or BF16, the precision
always explicit) and ``trt`` (TensorRT plans, checked against their manifest).
"""
