"""Throughput benchmarks with trtexec's methodology, one program (``twins-bench``): subjects
and how routes become Runners (``backends``), timm's own ONNX export as a baseline
(``timm_baseline``), the timing loop (``timing``), the run with its interleaved rounds and
validation (``harness``, ``run``), the figures results are judged against (``targets``),
reports (``report``), machine facts (``machine``) and the serving load test
(``serve_load``). Artifacts come from :mod:`twins_deploy.pipeline`, like every other
command's; results go to a folder outside the package."""
