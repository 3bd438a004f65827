"""PyTorch -> ONNX: the export contract (``spec``), the exporter (``onnx_export``), mixed
FP16 graphs (``fp16``), and graph inspection with TensorRT parser verdicts (``inspect``,
``trt_ops``)."""
