"""A stand-in `triton_python_backend_utils` for fast unit tests of the Triton adapters (dnsvr.serving.triton).

It implements the part of the python backend's module the adapters use: Tensor, InferenceRequest (whose
`exec` answers from `MODELS`, the called models' stand-ins, and is logged in `CALLED`), InferenceResponse,
TritonError with its codes, and the two tensor lookups.  The real server stays covered by the end-to-end tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

MODELS: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = {}
CALLED: list[InferenceRequest] = []  # the requests models sent with `exec`, in order


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE = "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE"

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> str:
        return self._code


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self.output_tensors, self._error = list(output_tensors or []), error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def outputs(self) -> dict[str, np.ndarray]:
        return {tensor.name(): tensor.as_numpy() for tensor in self.output_tensors}


class InferenceRequest:
    """A request: built by the tests as Triton would hand it over, or by a BLS model to call another model."""

    def __init__(self, model_name: str = "", requested_output_names: list[str] | None = None,
                 inputs: list[Tensor] | None = None, parameters: dict | None = None) -> None:
        self.model_name, self.requested = model_name, requested_output_names or []
        self.inputs = {tensor.name(): tensor for tensor in inputs or []}
        self._parameters = json.dumps(parameters or {})

    def parameters(self) -> str:
        """Triton's request parameters as JSON (the forwarded headers)."""
        return self._parameters

    def exec(self) -> InferenceResponse:
        CALLED.append(self)
        try:
            outputs = MODELS[self.model_name]({n: t.as_numpy() for n, t in self.inputs.items()})
        except Exception as error:
            return InferenceResponse(error=TritonError(str(error)))
        return InferenceResponse([Tensor(name, outputs[name]) for name in self.requested])


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return request.inputs.get(name)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((tensor for tensor in response.output_tensors if tensor.name() == name), None)
