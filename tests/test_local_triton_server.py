"""The real local Triton server over a repository built here: cpu_local ONNX models, an ensemble, BLS.

One server is shared by the module (start ~1 s); tests that stop a server or break a repository start
their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from dnsvr.client.spec import ModelSpec, TensorSpec
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.repository import network_files
from dnsvr.serving.local.processes import descendants
from dnsvr.serving.local.triton_server import (
    ALLOCATOR_ENVIRONMENT,
    THREAD_ENVIRONMENT,
    TritonServer,
    TritonStartError,
    find_triton,
    server_environment,
)
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

WIDTH = 4
ENSEMBLE_CONFIG = """
name: "affine_then_normalize"  platform: "ensemble"  max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: 4 }
output { name: "y" data_type: TYPE_FP32 dims: 4 }
ensemble_scheduling {
  step { model_name: "affine" model_version: -1
         input_map { key: "x" value: "x" } output_map { key: "y" value: "shifted" } }
  step { model_name: "normalize" model_version: -1
         input_map { key: "x" value: "shifted" } output_map { key: "y" value: "y" } }
}
"""
BLS_CONFIG = """
name: "bls_chain"  backend: "python"  max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: 4 }
output { name: "y" data_type: TYPE_FP32 dims: 4 }
output { name: "tag" data_type: TYPE_STRING dims: 1 }
instance_group { kind: KIND_CPU count: 1 }
"""


class Affine(torch.nn.Module):
    """[B, 4] float32 -> [B, 4] float32: y = 2x + 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x + 1


class L2Normalize(torch.nn.Module):
    """[B, 4] float32 -> [B, 4] float32 rows of unit length."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1)


class Pick(torch.nn.Module):
    """x [B, 4] float32, index [B, 1] int64 -> [B, 1] float32: x[b, index[b]] (ONNX GatherElements)."""

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 1, index)


BLS_MODEL = textwrap.dedent(
    '''
    """BLS: y = normalize(affine(x)) by two InferenceRequest(...).exec() calls; tag = $DNSVR_TEST_TAG."""
    import os

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                tensor = pb_utils.get_input_tensor_by_name(request, "x")
                for model in ("affine", "normalize"):
                    inner = pb_utils.InferenceRequest(
                        model_name=model, requested_output_names=["y"],
                        inputs=[pb_utils.Tensor("x", tensor.as_numpy())],
                    ).exec()
                    if inner.has_error():
                        raise pb_utils.TritonModelException(inner.error().message())
                    tensor = pb_utils.get_output_tensor_by_name(inner, "y")
                seen = os.environ.get("DNSVR_TEST_TAG", "") + "|" + os.environ.get("OMP_WAIT_POLICY", "")
                tag = np.full((len(tensor.as_numpy()), 1), seen, dtype=object)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", tensor.as_numpy()),
                                                             pb_utils.Tensor("tag", tag)]))
            return responses
    '''
)


def write_files(repository: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (repository / relative).parent.mkdir(parents=True, exist_ok=True)
        (repository / relative).write_text(text)


def write_config(repository: Path, text: str) -> None:
    """A hand-written config, checked against Triton's proto, with its (empty) version folder."""
    name = text_format.Parse(text, model_config_pb2.ModelConfig()).name
    write_files(repository, {f"{name}/config.pbtxt": text})
    (repository / name / "1").mkdir(exist_ok=True)


def add_onnx_model(repository: Path, name: str, module: torch.nn.Module, config_width: int = WIDTH) -> Path:
    """Export `module` ([B, 4] -> [B, 4], B dynamic) as <repository>/<name>/1/model.onnx, add configs, adapter.

    config_width: the width the configs declare (-1: looser than the graph, so the runner's own checks run).
    """
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    with warnings.catch_warnings():  # TorchScript exporter: the dynamo one needs onnxscript (not installed)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, (torch.zeros(2, WIDTH),), model_dir / "1" / "model.onnx", input_names=["x"],
            output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
        )
    model = ModelSpec(name, inputs=(TensorSpec("x", "float32", (-1, config_width)),),
                      outputs=(TensorSpec("y", "float32", (-1, config_width)),), max_batch_size=8,
                      dynamic_batching=True)
    write_files(repository, network_files(model))
    return model_dir


def add_pick_model(repository: Path) -> None:
    """`Pick` as a batched cpu_local model: an out-of-range index fails only when ONNX Runtime runs it."""
    model_dir = repository / "pick"
    (model_dir / "1").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Pick(), (torch.zeros(2, WIDTH), torch.zeros(2, 1, dtype=torch.int64)), model_dir / "1" / "model.onnx",
            input_names=["x", "index"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "index": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
        )
    model = ModelSpec("pick", inputs=(TensorSpec("x", "float32", (-1, WIDTH)), TensorSpec("index", "int64", (-1, 1))),
                      outputs=(TensorSpec("y", "float32", (-1, 1)),), max_batch_size=8, dynamic_batching=True)
    files = network_files(model)
    config = text_format.Parse(files["pick/configs/cpu_local.pbtxt"].split("\n", 1)[1], model_config_pb2.ModelConfig())
    config.dynamic_batching.max_queue_delay_microseconds = 20000  # room for the requests to meet in one batch
    config.parameters["intra_op_threads"].string_value = "2"  # the adapter's thread parameters, served
    config.parameters["allow_spinning"].string_value = "0"
    files["pick/configs/cpu_local.pbtxt"] = text_format.MessageToString(config)
    write_files(repository, files)


def build_repository(root: Path) -> Path:
    """affine, normalize, pick (ONNX, cpu_local); affine_then_normalize (ensemble); bls_chain (BLS)."""
    repository = root / "models"
    add_onnx_model(repository, "affine", Affine())
    add_onnx_model(repository, "normalize", L2Normalize(), config_width=-1)
    add_pick_model(repository)
    write_config(repository, ENSEMBLE_CONFIG)
    write_config(repository, BLS_CONFIG)
    (repository / "bls_chain" / "1" / "model.py").write_text(BLS_MODEL)
    return repository


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("triton"))


@pytest.fixture(scope="module")
def server(repository: Path):
    with TritonServer(repository, env={"DNSVR_TEST_TAG": "passed-through"}) as running:
        yield running


@pytest.fixture()
def client(server: TritonServer):
    with grpcclient.InferenceServerClient(server.grpc_url) as connection:
        yield connection


def infer(client: grpcclient.InferenceServerClient, model: str, x: np.ndarray, outputs=("y",)) -> dict:
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32" if x.dtype == np.float32 else "FP64")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(n) for n in outputs])
    return {name: result.as_numpy(name) for name in outputs}


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for a non-reaping PID 1 in a container counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def reference(repository: Path, x: np.ndarray) -> np.ndarray:
    shifted = OnnxRunner(repository / "affine" / "1" / "model.onnx").run({"x": x})["y"]
    return OnnxRunner(repository / "normalize" / "1" / "model.onnx").run({"x": shifted})["y"]


def test_cpu_local_model_matches_onnxruntime(server, client, repository):
    x = np.random.default_rng(0).standard_normal((3, WIDTH)).astype(np.float32)
    expected = OnnxRunner(repository / "affine" / "1" / "model.onnx").run({"x": x})["y"]
    np.testing.assert_array_equal(infer(client, "affine", x)["y"], expected)
    assert server.startup_seconds < 30


def test_concurrent_requests_are_batched_and_split_back(client, repository):
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((n, WIDTH)).astype(np.float32) for n in (1, 2, 3, 1, 2, 1, 3, 2)]
    with ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(lambda x: infer(client, "affine", x)["y"], batches))
    for x, y in zip(batches, results, strict=True):
        np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-6)


def test_bad_request_in_a_dynamic_batch_fails_alone(client):
    widths = [WIDTH, WIDTH + 1, WIDTH, WIDTH, WIDTH + 1, WIDTH]
    batches = [np.full((2, width), 3.0, np.float32) for width in widths]

    def send(x: np.ndarray):
        try:
            return infer(client, "normalize", x)["y"]
        except InferenceServerException as error:
            return error

    with ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(send, batches))
    for width, result in zip(widths, results, strict=True):
        if width == WIDTH:
            np.testing.assert_allclose(result, 0.5, rtol=1e-6)
        else:
            assert "axis 1 differs" in result.message()


def test_runtime_failure_in_a_merged_batch_fails_only_its_request(client):
    indices = [0, 1, 7, 2, 3, 1]  # 7 is out of range for width 4: ONNX Runtime fails on that request only

    def send(index: int):
        x = np.arange(WIDTH, dtype=np.float32)[None] * 10
        inputs = [grpcclient.InferInput("x", [1, WIDTH], "FP32"), grpcclient.InferInput("index", [1, 1], "INT64")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(np.array([[index]], np.int64))
        try:
            return client.infer("pick", inputs).as_numpy("y")
        except InferenceServerException as error:
            return error

    with ThreadPoolExecutor(len(indices)) as pool:
        results = list(pool.map(send, indices))
    for index, result in zip(indices, results, strict=True):
        if index < WIDTH:
            np.testing.assert_array_equal(result, [[10.0 * index]])
        else:
            assert "pick: " in result.message() and "ONNX Runtime failed" in result.message()


def test_bad_inputs_give_clear_errors_and_server_stays_up(client):
    with pytest.raises(InferenceServerException, match=r"(?i)data.?type|FP64|FP32"):
        infer(client, "affine", np.zeros((2, WIDTH), np.float64))
    with pytest.raises(InferenceServerException, match=r"(?i)shape|dims"):
        infer(client, "affine", np.zeros((2, WIDTH + 1), np.float32))
    with pytest.raises(InferenceServerException, match="unknown_model"):
        infer(client, "unknown_model", np.zeros((1, WIDTH), np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[2, 5\].*axis 1 differs") as bad:
        infer(client, "normalize", np.zeros((2, WIDTH + 1), np.float32))
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_live() and client.is_model_ready("affine") and client.is_model_ready("normalize")
    np.testing.assert_array_equal(infer(client, "affine", np.zeros((1, WIDTH), np.float32))["y"], 1.0)


def test_ensemble_of_two_cpu_local_models(client, repository):
    x = np.random.default_rng(2).standard_normal((4, WIDTH)).astype(np.float32)
    result = infer(client, "affine_then_normalize", x)
    np.testing.assert_allclose(result["y"], reference(repository, x), rtol=1e-6)


def test_bls_model_calls_other_models_and_sees_passed_environment(client, repository):
    x = np.random.default_rng(3).standard_normal((2, WIDTH)).astype(np.float32)
    result = infer(client, "bls_chain", x, outputs=("y", "tag"))
    np.testing.assert_allclose(result["y"], reference(repository, x), rtol=1e-6)
    policy = os.environ.get("OMP_WAIT_POLICY", THREAD_ENVIRONMENT["OMP_WAIT_POLICY"])
    assert result["tag"].ravel().tolist() == [f"passed-through|{policy}".encode()] * 2


def test_server_environment_sleeps_openmp_threads_unless_told_otherwise(monkeypatch):
    install = find_triton()
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert server_environment(install, Path(sys.executable).parent)["OMP_WAIT_POLICY"] == "PASSIVE"
    assert server_environment(install, Path(sys.executable).parent, {"OMP_WAIT_POLICY": "ACTIVE"})[
        "OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert server_environment(install, Path(sys.executable).parent)["OMP_WAIT_POLICY"] == "ACTIVE"


def test_server_environment_keeps_freed_memory_unless_the_operator_sets_a_malloc_threshold(monkeypatch):
    install, bin_dir = find_triton(), Path(sys.executable).parent
    for name in (*ALLOCATOR_ENVIRONMENT, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert ALLOCATOR_ENVIRONMENT.items() <= server_environment(install, bin_dir).items()
    own = server_environment(install, bin_dir, {"MALLOC_TRIM_THRESHOLD_": "0"})  # one of them: none of ours
    assert own["MALLOC_TRIM_THRESHOLD_"] == "0" and "MALLOC_MMAP_THRESHOLD_" not in own
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert not set(ALLOCATOR_ENVIRONMENT) & set(server_environment(install, bin_dir))


def test_server_uses_cpu_local_configs_and_keeps_production_ones(client, repository):
    served = client.get_model_config("affine", as_json=True)["config"]
    assert served["backend"] == "python" and served["instance_group"][0]["kind"] == "KIND_CPU"
    text = (repository / "affine" / "config.pbtxt").read_text()
    production = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert production.platform == "onnxruntime_onnx"
    assert production.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert [t.name for t in production.input] == [i["name"] for i in served["input"]]


@pytest.mark.parametrize("grace_s", [15.0, 0.0], ids=["sigterm", "sigkill-after-grace"])
def test_stop_leaves_no_process_and_no_shared_memory(tmp_path, grace_s):
    repository = tmp_path / "models"
    add_onnx_model(repository, "affine", Affine())
    server = TritonServer(repository, stop_grace_s=grace_s, log_path=tmp_path / "triton.log").start()
    children = descendants(server.pid)
    assert any("triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_text() for pid in children)
    assert list(Path("/dev/shm").glob(f"{server._shm_prefix}*"))
    assert server.stop() == (0 if grace_s else -signal.SIGKILL)
    assert not server.running
    assert [pid for pid in children if alive(pid)] == []
    assert not list(Path("/dev/shm").glob(f"{server._shm_prefix}*"))


def test_broken_model_fails_startup_naming_it(tmp_path):
    repository = tmp_path / "models"
    add_onnx_model(repository, "affine", Affine())
    broken = add_onnx_model(repository, "broken_model", Affine())
    (broken / "1" / "model.onnx").write_bytes(b"not an onnx file")
    server = TritonServer(repository, startup_timeout_s=30, exit_timeout_s=1, log_path=tmp_path / "triton.log")
    with pytest.raises(TritonStartError, match="broken_model") as failure:
        server.start()
    assert failure.value.failed_models == ["broken_model"]
    assert not server.running


# What a non-interactive shell does to a command it starts with `&`: SIGINT ignored, kept across exec.  Done by a
# shell, not by preexec_fn: a preexec_fn makes Python fork() this process, which holds gRPC, and gRPC's fork handler
# restarts its poller in the child, which can die on its closed epoll descriptor before exec (grpc/grpc#43055).
IGNORING_SIGINT = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]


def starts_ignoring_sigint(prefix: list[str]) -> bool:
    """Whether a program started behind `prefix` begins with SIGINT ignored (the SigIgn mask in its /proc status)."""
    status = subprocess.run([*prefix, "cat", "/proc/self/status"], capture_output=True, text=True, check=True).stdout
    mask = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.parametrize(("signum", "prefix"), [(signal.SIGTERM, []), (signal.SIGINT, []),
                                                (signal.SIGINT, IGNORING_SIGINT)],
                         ids=["sigterm", "ctrl-c", "ctrl-c-started-with-sigint-ignored"])
def test_serve_triton_command_stops_cleanly_on_signal(tmp_path, signum, prefix):
    repository = tmp_path / "models"
    add_onnx_model(repository, "affine", Affine())
    assert not prefix or starts_ignoring_sigint(prefix)  # without one, it inherits this process's disposition
    command = [
        *prefix, str(Path(sys.executable).parent / "dnsvr"), "serve-triton", "--repository", str(repository),
        "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--log-file", str(tmp_path / "t.log"),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as cli:
        try:
            banner = cli.stdout.readline()
            assert banner.startswith("Triton ready"), banner + cli.stdout.read()
            family = descendants(cli.pid)
            assert len(family) >= 2  # tritonserver and the affine model's python stub
            cli.send_signal(signum)
            assert cli.wait(30) == 0, cli.stdout.read()
            assert cli.stdout.read().startswith("Triton stopped (exit code 0)")
        finally:
            if cli.poll() is None:  # the signal did not stop it: kill its group's server through its guard
                cli.terminate()
    assert [pid for pid in family if alive(pid)] == []
