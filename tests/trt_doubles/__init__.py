"""Test doubles of TensorRT (8.6, 10.x, 11.x) and of cuda-bindings' runtime, for the tests only.

Nothing under ``twins_deploy`` imports this package (tests/test_structure.py checks it):
the doubles reach the code only through ``sys.modules`` inside a test's fixture. An engine's
outputs are ONNX Runtime's arithmetic on the plan's ONNX file (so ordering mistakes show),
never TensorRT's; they time nothing; what they produce (plans, outputs) is never a result.
"""
