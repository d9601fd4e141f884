"""What runs on the gate box: Python 3.10 (JetPack 6's system Python), no PyTorch, no Ultralytics.

Every module here imports only the standard library, numpy and OpenCV at module level, and TensorRT, Polygraphy,
ONNX Runtime, OpenVINO or MLflow inside the functions that need them. `tests/unit/test_gate_side.py` checks
both (imports in a fresh interpreter, and `vermin --target=3.10-`).
"""
