"""Make an exported ONNX model runnable by the local CPU Triton server (`--model-config-name=cpu_local`).

A model folder in the repository then looks like

    <repository>/<name>/config.pbtxt               production: platform "onnxruntime_onnx", GPU instances
    <repository>/<name>/configs/cpu_local.pbtxt    backend "python" (see dnsvr.export.triton_config)
    <repository>/<name>/1/model.onnx               written by the export step
    <repository>/<name>/1/model.py                 copied here by install_cpu_runner

Production Triton ignores `model.py` (its config names the onnxruntime platform); the local server loads it
instead of the ONNX file and runs the ONNX file through ONNX Runtime. The file is copied rather than linked
so that the repository stays self-contained when it is packed into an image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

RUNNER_SOURCE = Path(__file__).parent / "triton" / "onnx_model.py"


def install_cpu_runner(model_dir: str | Path, version: str | int = 1) -> Path:
    """Copy the ONNX Runtime python model beside `<model_dir>/<version>/model.onnx`; return model.py's path.

    Raises FileNotFoundError when the version folder holds no model.onnx (export it first).
    """
    version_dir = Path(model_dir) / str(version)
    if not (version_dir / "model.onnx").is_file():
        raise FileNotFoundError(f"{version_dir / 'model.onnx'} not found: export the model before installing "
                                "its cpu_local runner")
    target = version_dir / "model.py"
    partial = version_dir / "model.py.partial"
    shutil.copyfile(RUNNER_SOURCE, partial)
    partial.replace(target)
    return target
