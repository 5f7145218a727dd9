"""The base of every dnsvr Triton python model: the per-request loop, typed error responses, set-up and teardown.

A model says only what one request means; everything it computes lives in plain, unit-tested code
(`dnsvr.serving.pipelines`, `dnsvr.export.onnx_runner`):

    class TritonPythonModel(PythonModel):
        def setup(self) -> None:                          # once per instance, after initialize: parameters
            self.fps = float(self.parameters.get("fps") or 1.0)
        def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
            return decode_request(inputs, self.fps, 1200)  # one request's outputs, by name

(`teardown` runs when Triton unloads the instance.)  `StoreModel` adds the store: `self.stores`, opened at
set-up and closed at teardown.

Imported only inside Triton's python-backend stub (it needs `triton_python_backend_utils`).  An error raised
while answering becomes that request's error response, tagged by the error's `tag` attribute
(`dnsvr.client.errors`: invalid_video, not_found, unavailable; anything else internal) with the matching
Triton code, so the client raises InvalidVideo, NotFound or ServerUnavailable; an error coming back from a
model called with `call` keeps the tag it had.  The other requests of the batch are answered as usual.

An input array of the request being answered that a pipeline hands to `call` under the same name (the video
dnsvr_search and dnsvr_index pass to dnsvr_embed and video_views) goes on as the Triton tensor it came in:
its bytes stay where Triton put them instead of being serialised and copied again for every call (a search by
a 23.5 MB clip: 782 -> 753 ms, `benchmarks/results/revision_ab_passing_on.md`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from dnsvr.client.errors import TAG_PATTERN, TAGS, tagged
from dnsvr.serving.pipelines.access import AccessPolicy
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.store_access import ServiceStore

MAX_MESSAGE_CHARS = 2000  # an error message travels in gRPC trailers (8 KB of metadata at most by default)
TRITON_CODES = {
    "invalid_video": "INVALID_ARG",
    "forbidden": "INVALID_ARG",  # the python backend has no permission-denied code; the tag says it
    "not_found": "NOT_FOUND",
    "no_text_search": "UNSUPPORTED",
    "unavailable": "UNAVAILABLE",
    "internal": "INTERNAL",
}


class ModelCallError(RuntimeError):
    """A model called from a python model answered with an error (its message, tag included)."""


def error_tag(error: Exception) -> str:
    """The dnsvr error tag of `error`: its class's `tag`, a called model's tag, else internal."""
    if isinstance(error, ModelCallError):
        found = TAG_PATTERN.search(str(error))
        return found["tag"] if found else "internal"
    tag = getattr(error, "tag", "internal")
    return tag if tag in TAGS else "internal"


def error_response(model_name: str, error: Exception) -> pb_utils.InferenceResponse:
    """A Triton error response carrying the error's tag and code; called-model errors pass through as is."""
    tag = error_tag(error)
    text = str(error)
    if isinstance(error, ModelCallError) and TAG_PATTERN.search(text):
        message = text[text.index("[dnsvr:"):]
    else:
        message = tagged(tag, f"{model_name}: {text}")
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f"... ({len(message) - MAX_MESSAGE_CHARS} more characters)"
    code = getattr(pb_utils.TritonError, TRITON_CODES[tag], pb_utils.TritonError.INTERNAL)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def request_inputs(request, names: list[str]) -> RequestInputs:
    """The inputs (of `names`) one Triton request carries, as numpy arrays, and its parameters."""
    arrays = {}
    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            arrays[name] = tensor.as_numpy()
    return RequestInputs(arrays, json.loads(request.parameters() or "{}"))


RECEIVED: dict[int, tuple[np.ndarray, object]] = {}  # the request being answered: id(array) -> (array, its tensor)


@contextmanager
def passing_on(request, inputs: RequestInputs) -> Iterator[None]:
    """While `request` is answered, its input arrays (`inputs`, from `request_inputs`) handed to `call` under
    their own names go on as the tensors they came in (`as_tensor`)."""
    RECEIVED.update({id(array): (array, pb_utils.get_input_tensor_by_name(request, name))
                     for name, array in inputs.arrays.items()})
    try:
        yield
    finally:
        RECEIVED.clear()


def as_tensor(name: str, value: np.ndarray):
    """`value` as the input `name` of a model call: an input array of the request being answered, passed on
    under its own name, is the tensor it came in (no copy); anything else becomes a new tensor."""
    array, tensor = RECEIVED.get(id(value), (None, None))
    if array is value and tensor.name() == name:
        return tensor
    return pb_utils.Tensor(name, value)


def response(outputs: dict[str, np.ndarray]) -> pb_utils.InferenceResponse:
    """A response holding `outputs` by name."""
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()])


def call(model_name: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """One synchronous BLS request to another model; raises ModelCallError with its message."""
    request = pb_utils.InferenceRequest(
        model_name=model_name,
        requested_output_names=outputs,
        inputs=[as_tensor(name, array) for name, array in inputs.items()],
    )
    answer = request.exec()
    if answer.has_error():
        raise ModelCallError(f"{model_name}: {answer.error().message()}")
    return {name: pb_utils.get_output_tensor_by_name(answer, name).as_numpy() for name in outputs}


class PythonModel:
    """Triton's python-model interface (initialize, execute, finalize) over `setup` / `handle` / `teardown`.

    After initialize: `name`, `config` (the model config as a dict), `parameters` ({key: string value}),
    `input_names`, `output_names`, `repository` (the model repository folder) and `version_dir` (this
    model's version folder).  `access` ("read", "write" or None): the access token check every request passes
    before `handle` (`dnsvr.serving.pipelines.access`).
    """

    access: str | None = None

    def initialize(self, args: dict) -> None:
        self.config = json.loads(args["model_config"])
        self.name = self.config["name"]
        self.parameters = {key: value.get("string_value", "")
                           for key, value in self.config.get("parameters", {}).items()}
        self.input_names = [tensor["name"] for tensor in self.config.get("input", [])]
        self.output_names = [tensor["name"] for tensor in self.config.get("output", [])]
        model_dir = Path(args["model_repository"])
        self.repository = model_dir.resolve().parent
        self.version_dir = model_dir / str(args["model_version"])
        self.policy = AccessPolicy.from_environment()
        self.setup()

    def setup(self) -> None:
        """Once per model instance, after the attributes above are set."""

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        """One request's inputs -> its outputs by name (raise to answer with an error)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """When Triton unloads the model instance."""

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                inputs = request_inputs(request, self.input_names)
                if self.access is not None:
                    self.policy.check(inputs.parameters, self.access)
                with passing_on(request, inputs):
                    responses.append(response(self.handle(inputs)))
            except Exception as error:
                responses.append(error_response(self.name, error))
        return responses

    def finalize(self) -> None:
        self.teardown()


class StoreModel(PythonModel):
    """A python model over the video store: `self.stores` (a ServiceStore of this repository and the model's
    `store_uri` / `store_prefix` parameters) is opened at set-up and closed at teardown."""

    def setup(self) -> None:
        self.stores = ServiceStore(self.repository, self.parameters)

    def teardown(self) -> None:
        self.stores.close()
