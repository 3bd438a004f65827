"""Test doubles of TensorRT (8.6, 10.x, 11.x) and of cuda-bindings' runtime, for the tests only.

Nothing under ``twins_deploy`` imports this package (tests/test_structure.py checks it):
the doubles reach the code only through ``sys.modules`` inside a test's fixture. They
compute nothing; what they produce (plans, outputs, timings) is never a result.
"""
