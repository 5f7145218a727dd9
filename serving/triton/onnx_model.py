"""Triton python-backend model running the `model.onnx` beside it with ONNX Runtime (the `cpu_local` runner).

Not imported by the project: `dnsvr.serving.cpu_local.install_cpu_runner(model_dir)` copies this file as
`<model_dir>/<version>/model.py`, and Triton's python backend loads it when the server runs with
`--model-config-name=cpu_local` (whose `configs/cpu_local.pbtxt` says `backend: "python"`). It needs the
`dnsvr` package in the interpreter the python stub runs in, which `dnsvr.serving.local.triton_server` arranges.

Inputs and outputs are named by the model config (the same names as the ONNX graph, checked at load).
With `max_batch_size > 0`, requests that Triton's dynamic batcher hands over together are concatenated on
the batch axis and run once when their other dims agree. A bad request gets an error response naming the
problem (`INVALID_ARG`); the other requests in the batch and the model itself are unaffected.
Config parameter `intra_op_threads` (string, default "1") sets ONNX Runtime's threads per instance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from dnsvr.export.onnx_runner import OnnxInputError, OnnxRunner


class TritonPythonModel:
    """Triton python-backend entry point: initialize(args), execute(requests) -> responses, finalize()."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        parameters = config.get("parameters", {})
        threads = int(parameters.get("intra_op_threads", {}).get("string_value", "1"))
        onnx_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.runner = OnnxRunner(onnx_path, intra_op_threads=threads)
        if sorted(self.input_names) != sorted(self.runner.input_names):
            raise ValueError(
                f"model '{self.model_name}': config inputs {self.input_names} differ from the ONNX graph's "
                f"{self.runner.input_names} ({onnx_path})"
            )
        missing_outputs = sorted(set(self.output_names) - set(self.runner.output_names))
        if missing_outputs:
            raise ValueError(
                f"model '{self.model_name}': config outputs {missing_outputs} are not in the ONNX graph "
                f"({self.runner.output_names}, {onnx_path})"
            )

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        feeds_by_request = {}
        for index, request in enumerate(requests):
            try:
                feeds_by_request[index] = self.runner.validate(self._feeds(request))
            except OnnxInputError as error:
                responses[index] = self._error(error, pb_utils.TritonError.INVALID_ARG)
        for indices in self._batchable_groups(feeds_by_request):
            for index, response in zip(indices, self._run_group(indices, feeds_by_request), strict=True):
                responses[index] = response
        return responses

    def finalize(self) -> None:
        self.runner = None

    def _feeds(self, request) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise OnnxInputError(f"request lacks input '{name}'")
            feeds[name] = tensor.as_numpy()
        return feeds

    def _batchable_groups(self, feeds_by_request: dict[int, dict[str, np.ndarray]]) -> list[list[int]]:
        """Request indices grouped so each group can run as one concatenated batch."""
        if not self.batched:
            return [[index] for index in feeds_by_request]
        groups: dict[tuple, list[int]] = {}
        for index, feeds in feeds_by_request.items():
            key = tuple((name, array.shape[1:]) for name, array in sorted(feeds.items()))
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def _run_group(self, indices: list[int], feeds_by_request: dict[int, dict[str, np.ndarray]]) -> list:
        """Responses for `indices`; a failed concatenated run is retried request by request."""
        try:
            if len(indices) == 1:
                outputs = [self.runner.run(feeds_by_request[indices[0]], self.output_names)]
            else:
                outputs = self._run_concatenated(indices, feeds_by_request)
        except Exception as error:
            if len(indices) > 1:
                return [self._run_group([index], feeds_by_request)[0] for index in indices]
            return [self._error(error, pb_utils.TritonError.INTERNAL)]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, request_outputs[name]) for name in self.output_names]
            )
            for request_outputs in outputs
        ]

    def _run_concatenated(self, indices: list[int], feeds_by_request: dict) -> list[dict[str, np.ndarray]]:
        sizes = [len(next(iter(feeds_by_request[index].values()))) for index in indices]
        merged = {
            name: np.concatenate([feeds_by_request[index][name] for index in indices])
            for name in self.input_names
        }
        results = self.runner.run(merged, self.output_names)
        bounds = np.cumsum([0, *sizes])
        return [
            {name: results[name][start:stop] for name in self.output_names}
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def _error(self, error: Exception, code: int):
        message = f"model '{self.model_name}': {error}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
