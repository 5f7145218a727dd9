"""Triton python-backend adapters: each model's `TritonPythonModel` translates tensors and calls plain code."""
