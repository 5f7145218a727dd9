"""Local CPU Triton: start-up time, gRPC round-trip latency, memory and stop time on a small repository.

    .venv/bin/python benchmarks/triton_server_bench.py [--requests 300] [--starts 3]

Builds a temporary repository of cpu_local models (each an ONNX file run by ONNX Runtime in a python
model): `affine` [B, 4] float32, `features` [B, 64, 9, 512] float32 (1.2 MB per video, the size of a
64-frame DnS feature tensor), the ensemble `affine_then_normalize` and a BLS model making two
`InferenceRequest(...).exec()` calls. Prints medians and 99th percentiles of the gRPC round trip (one
request at a time, loopback), the server's start-up and stop times, and the resident memory of the server
and its python stub processes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as grpcclient
from dnsvr.client.spec import ModelSpec, TensorSpec
from dnsvr.export.repository import network_files
from dnsvr.serving.local.processes import descendants
from dnsvr.serving.local.triton_server import TritonServer
from tqdm import tqdm

ENSEMBLE_CONFIG = """name: "affine_then_normalize" platform: "ensemble" max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: 4 }
output { name: "y" data_type: TYPE_FP32 dims: 4 }
ensemble_scheduling {
  step { model_name: "affine" model_version: -1
         input_map { key: "x" value: "x" } output_map { key: "y" value: "s" } }
  step { model_name: "normalize" model_version: -1
         input_map { key: "x" value: "s" } output_map { key: "y" value: "y" } }
}
"""
BLS_CONFIG = """name: "bls_chain" backend: "python" max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: 4 }
output { name: "y" data_type: TYPE_FP32 dims: 4 }
instance_group { kind: KIND_CPU count: 1 }
"""
BLS_MODEL = '''"""BLS: y = normalize(affine(x)) by two InferenceRequest(...).exec() calls."""
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
                tensor = pb_utils.get_output_tensor_by_name(inner, "y")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", tensor.as_numpy())]))
        return responses
'''


class Affine(torch.nn.Module):
    """[B, ...] float32 -> [B, ...] float32: 2x + 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x + 1


class L2Normalize(torch.nn.Module):
    """[B, 4] float32 -> [B, 4] float32 unit rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1)


def write_files(repository: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (repository / relative).parent.mkdir(parents=True, exist_ok=True)
        (repository / relative).write_text(text)


def add_onnx_model(repository: Path, name: str, module: torch.nn.Module, dims: tuple[int, ...]) -> None:
    """<repository>/<name>: `module` exported to 1/model.onnx for [B, *dims] float32, its configs, adapter."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, (torch.zeros(1, *dims),), model_dir / "1" / "model.onnx", input_names=["x"],
            output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
        )
    model = ModelSpec(name, inputs=(TensorSpec("x", "float32", (-1, *dims)),),
                      outputs=(TensorSpec("y", "float32", (-1, *dims)),), max_batch_size=8)
    write_files(repository, network_files(model))


def build_repository(root: Path) -> Path:
    """The four models described above under <root>/models."""
    repository = root / "models"
    add_onnx_model(repository, "affine", Affine(), (4,))
    add_onnx_model(repository, "normalize", L2Normalize(), (4,))
    add_onnx_model(repository, "features", Affine(), (64, 9, 512))
    write_files(repository, {"affine_then_normalize/config.pbtxt": ENSEMBLE_CONFIG,
                             "bls_chain/config.pbtxt": BLS_CONFIG, "bls_chain/1/model.py": BLS_MODEL})
    (repository / "affine_then_normalize" / "1").mkdir()
    return repository


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, MiB (shared pages counted once per process)."""
    total_kib = 0
    for member in [pid, *descendants(pid)]:
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def round_trips_ms(
    client: grpcclient.InferenceServerClient, model: str, x: np.ndarray, count: int
) -> list[float]:
    """`count` sequential round-trip times of `model` on input `x`, ms, after 10 warm-up requests."""
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    outputs = [grpcclient.InferRequestedOutput("y")]
    for _ in range(10):
        client.infer(model, [tensor], outputs=outputs)
    times = []
    for _ in tqdm(range(count), desc=model, leave=False):
        began = time.perf_counter()
        client.infer(model, [tensor], outputs=outputs)
        times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="timed requests per model (default: 300)")
    parser.add_argument("--starts", type=int, default=3, help="start/stop cycles timed (default: 3)")
    args = parser.parse_args()
    repository = build_repository(Path(tempfile.mkdtemp(prefix="dnsvr-bench-")))
    starts, stops = [], []
    for _ in range(args.starts):
        server = TritonServer(repository).start()
        starts.append(server.startup_seconds)
        began = time.perf_counter()
        server.stop()
        stops.append(time.perf_counter() - began)
    print(f"start-up to ready (5 models, 4 python stubs): median {statistics.median(starts):.2f} s "
          f"(of {[round(s, 2) for s in starts]})")
    print(f"stop (SIGTERM to exit, stubs gone): median {statistics.median(stops):.2f} s")
    inputs = {
        "affine": np.ones((1, 4), np.float32),
        "affine_then_normalize": np.ones((1, 4), np.float32),
        "bls_chain": np.ones((1, 4), np.float32),
        "features": np.ones((1, 64, 9, 512), np.float32),
    }
    with TritonServer(repository) as server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        print(f"memory, server + stubs, idle: {rss_mib(server.pid):.0f} MiB RSS")
        for model, x in inputs.items():
            times = sorted(round_trips_ms(client, model, x, args.requests))
            p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
            shape = str(list(x.shape))
            print(f"gRPC round trip {model:<22} {shape:<18} median {statistics.median(times):6.2f} ms"
                  f"   p99 {p99:6.2f} ms")
        print(f"memory, server + stubs, after the runs: {rss_mib(server.pid):.0f} MiB RSS")


if __name__ == "__main__":
    main()
