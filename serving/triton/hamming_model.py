"""Triton python model serving fine_similarity_bin under `cpu_local`: the Hamming kernel, then comparator.onnx.

`1/model.py` of fine_similarity_bin imports this class; only `--model-config-name=cpu_local` (python backend)
runs it: production (onnxruntime on GPU) and `tensorrt` serve the float ±1 graph `model.onnx` beside it.
The requests are answered as by the ONNX runner (`dnsvr.serving.triton.onnx_model`), with
`dnsvr.export.hamming.HammingFineSimilarity` in place of ONNX Runtime over model.onnx: popcount Hamming
distances of the packed codes (the AVX-512 extension where the CPU has it, else faiss), region Chamfer in
integers, then the comparator graph once per candidate length.  Config parameters: `hamming_threads` (the
threads of the kernel and of the comparator's runs, 1 when absent; the exported cpu_local config sets 2) and
`intra_op_threads` (ONNX Runtime's within each comparator run; the exported config sets 1).
"""

from __future__ import annotations

from dnsvr.export.hamming import COMPARATOR_FILE, HammingFineSimilarity
from dnsvr.serving.triton import onnx_model


class TritonPythonModel(onnx_model.TritonPythonModel):
    def open_runner(self, intra_op_threads: int) -> HammingFineSimilarity:
        threads = int(self.parameters.get("hamming_threads") or 1)
        return HammingFineSimilarity(self.version_dir / COMPARATOR_FILE, threads, intra_op_threads)

    def teardown(self) -> None:
        self.runner.close()
