"""Triton python model running the `model.onnx` beside it with ONNX Runtime: the `cpu_local` runner.

Every network's `1/model.py` imports this class (fine_similarity_bin's a subclass, `hamming_model`, whose
`open_runner` gives its Hamming kernel + comparator instead); Triton's python backend loads it when the server
runs with `--model-config-name=cpu_local` (whose `configs/cpu_local.pbtxt` says `backend: "python"`),
production Triton ignores it (its config names the onnxruntime platform).  Inputs and outputs are named by
the model config (the same names as the ONNX graph, checked at load).  Config parameters `intra_op_threads`
(default "1") and `allow_spinning` ("0": the intra-op threads sleep at once after a run; default "1").
The requests Triton's dynamic batcher hands over together run as one batch where they can
(`dnsvr.export.onnx_runner.run_requests`); a bad request gets its own error response.
"""

from __future__ import annotations

from dnsvr.export.onnx_runner import OnnxRunner, run_requests
from dnsvr.serving.triton.base import PythonModel, error_response, request_inputs, response


class TritonPythonModel(PythonModel):
    def open_runner(self, intra_op_threads: int) -> OnnxRunner:
        """What runs the requests: `model.onnx` of the version folder with ONNX Runtime."""
        return OnnxRunner(self.version_dir / "model.onnx", intra_op_threads=intra_op_threads,
                          allow_spinning=self.parameters.get("allow_spinning", "1") != "0")

    def setup(self) -> None:
        self.runner = self.open_runner(int(self.parameters.get("intra_op_threads") or 1))
        path = self.runner.model_path
        if sorted(self.input_names) != sorted(self.runner.input_names):
            raise ValueError(f"model '{self.name}': config inputs {self.input_names} differ from the ONNX graph's "
                             f"{self.runner.input_names} ({path})")
        missing = sorted(set(self.output_names) - set(self.runner.output_names))
        if missing:
            raise ValueError(f"model '{self.name}': config outputs {missing} are not in the ONNX graph "
                             f"({self.runner.output_names}, {path})")
        self.batched = int(self.config.get("max_batch_size", 0)) > 0

    def execute(self, requests: list) -> list:
        feeds = []
        for request in requests:
            try:
                feeds.append(self.runner.validate(request_inputs(request, self.input_names).arrays))
            except Exception as error:
                feeds.append(error)
        results = run_requests(self.runner, feeds, self.output_names, self.batched)
        return [error_response(self.name, result) if isinstance(result, Exception) else response(result)
                for result in results]
