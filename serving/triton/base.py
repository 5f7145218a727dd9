"""Helpers for the pipelines' Triton python models: read request tensors, call other models, report errors.

Imported only inside Triton's python-backend stub (it needs `triton_python_backend_utils`).  Errors go back
tagged (`dnsvr.client.errors`) with a matching Triton code, so the client raises InvalidVideo, NotFound or
ServerUnavailable; an error coming back from a called model keeps its tag.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from dnsvr.client.errors import TAG_PATTERN, tagged
from dnsvr.serving.pipelines.search import Embedding
from dnsvr.serving.store.schema import InvalidVideo
from dnsvr.serving.store.video_store import StoreUnavailable, VideoNotFound

TRITON_CODES = {
    "invalid_video": "INVALID_ARG",
    "not_found": "NOT_FOUND",
    "unavailable": "UNAVAILABLE",
    "internal": "INTERNAL",
}


class BadRequest(ValueError):
    """The request itself is wrong (missing/extra input, bad value): reported as invalid_video."""


class ModelCallError(RuntimeError):
    """A model called from a python model answered with an error (its message, tag included)."""


def parameters(args: dict) -> dict[str, str]:
    """The model config's `parameters` as {key: string value}."""
    config = json.loads(args["model_config"])
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def repository_root(args: dict) -> Path:
    """The model repository folder (parent of this model's folder)."""
    return Path(args["model_repository"]).resolve().parent


def optional_input(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def required_input(request, name: str) -> np.ndarray:
    array = optional_input(request, name)
    if array is None:
        raise BadRequest(f"the request lacks input '{name}'")
    return array


def text_input(request, name: str, required: bool = False) -> str | None:
    """A BYTES [1] input as str (UTF-8), None when absent and not required."""
    array = required_input(request, name) if required else optional_input(request, name)
    if array is None:
        return None
    if array.size != 1:
        raise BadRequest(f"input '{name}' must hold one string, got {array.size}")
    value = array.reshape(-1)[0]
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise BadRequest(f"input '{name}' is not valid UTF-8") from None


def int_input(request, name: str, default: int | None = None) -> int | None:
    array = optional_input(request, name)
    if array is None:
        if default is None:
            raise BadRequest(f"the request lacks input '{name}'")
        return default
    if array.size != 1:
        raise BadRequest(f"input '{name}' must hold one integer, got {array.size}")
    return int(array.reshape(-1)[0])


def video_inputs(request) -> dict[str, np.ndarray]:
    """Exactly one of `video` (encoded file bytes) or `frames` (uint8 RGB), as given."""
    given = {name: optional_input(request, name) for name in ("video", "frames")}
    given = {name: array for name, array in given.items() if array is not None}
    if len(given) != 1:
        raise BadRequest(f"send exactly one of 'video' (file bytes) or 'frames' (uint8 RGB), got {sorted(given)}")
    return given


def bytes_tensor(name: str, values: list[bytes | str]) -> pb_utils.Tensor:
    encoded = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    return pb_utils.Tensor(name, np.array(encoded, dtype=np.object_))


def call(model_name: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """One synchronous BLS request; raises ModelCallError with the called model's message."""
    request = pb_utils.InferenceRequest(
        model_name=model_name,
        requested_output_names=outputs,
        inputs=[pb_utils.Tensor(name, array) for name, array in inputs.items()],
    )
    response = request.exec()
    if response.has_error():
        raise ModelCallError(f"{model_name}: {response.error().message()}")
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}


def embed(inputs: dict[str, np.ndarray]) -> Embedding:
    """dnsvr_embed on one video (`video` or `frames`) -> Embedding, batch axis dropped."""
    out = call("dnsvr_embed", inputs, ["coarse", "fine", "selector"])
    return Embedding(out["coarse"][0], out["fine"][0], float(out["selector"].reshape(-1)[0]))


def error_tag(error: Exception) -> str:
    if isinstance(error, ModelCallError):
        found = TAG_PATTERN.search(str(error))
        return found["tag"] if found else "internal"
    if isinstance(error, (BadRequest, InvalidVideo)):
        return "invalid_video"
    if isinstance(error, VideoNotFound):
        return "not_found"
    if isinstance(error, StoreUnavailable):
        return "unavailable"
    return "internal"


def error_response(model_name: str, error: Exception) -> pb_utils.InferenceResponse:
    """A Triton error response carrying the error's tag and code; called-model errors pass through as is."""
    tag = error_tag(error)
    if isinstance(error, ModelCallError) and TAG_PATTERN.search(str(error)):
        message = str(error)[str(error).index("[dnsvr:"):]
    else:
        detail = f"video {error.args[0]!r} is not indexed" if isinstance(error, VideoNotFound) else str(error)
        message = tagged(tag, f"{model_name}: {detail}")
    code = getattr(pb_utils.TritonError, TRITON_CODES[tag], pb_utils.TritonError.INTERNAL)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
