"""Throughput benchmarks with trtexec's methodology: backends (``backends``), the timing
loop (``timing``), the run (``harness``, ``run``), reports (``report``), machine facts
(``machine``), and the graph comparison with timm's export (``onnx_compare``). Artifacts
come from :mod:`twins_deploy.pipeline`, like every other command's."""
