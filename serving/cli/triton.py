"""`dnsvr serve-triton`: run the local CPU Triton server on a model repository until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
examples:
  dnsvr serve-triton                                   # ./model_repository, ports 8000/8001/8002
  dnsvr serve-triton --grpc-port 0 --http-port 0 --metrics-port 0      # any free ports
  dnsvr serve-triton --env DNSVR_MILVUS_URI=http://127.0.0.1:19530 --log-file var/triton.log
  dnsvr serve-triton --config-name ''                  # plain config.pbtxt (needs a GPU Triton build)

The python models see this environment plus every --env; they run in this virtual environment, so they
import its numpy (< 2), onnxruntime and dnsvr. Stop with Ctrl-C or SIGTERM: the server gets SIGTERM,
is killed after --stop-grace seconds, and no stub process is left behind.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve-triton",
        help="run the local Triton server (CPU, cpu_local configs) on a model repository",
        description="Run the Triton Inference Server bundled in nvidia-pytriton on this machine's CPU, with "
        "each model's configs/cpu_local.pbtxt (ONNX models run by ONNX Runtime in python models).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="model repository folder (default: %(default)s)")
    parser.add_argument("--config-name", default="cpu_local",
                        help="use configs/NAME.pbtxt where a model has one; '' for config.pbtxt "
                        "(default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001,
                        help="gRPC port, 0 for any free one (default: %(default)s)")
    parser.add_argument("--http-port", type=int, default=8000,
                        help="HTTP port, 0 for any free one (default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=8002,
                        help="Prometheus metrics port, 0 for any free one (default: %(default)s)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for the python models, repeatable")
    parser.add_argument("--log-file", type=Path, default=Path("var/triton.log"),
                        help="server log, overwritten at start (default: %(default)s)")
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton verbose log level (default: 0)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds to wait for every model to be ready (default: %(default)s)")
    parser.add_argument("--stop-grace", type=float, default=15.0,
                        help="seconds between SIGTERM and SIGKILL when stopping (default: %(default)s)")
    parser.set_defaults(handler=serve_triton)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise SystemExit(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def serve_triton(args: argparse.Namespace) -> int:
    from dnsvr.serving.local.triton_server import TritonServer, TritonStartError, serve_until_stopped

    server = TritonServer(
        args.repository,
        model_config_name=args.config_name or None,
        grpc_port=args.grpc_port or None,
        http_port=args.http_port or None,
        metrics_port=args.metrics_port or None,
        env=_parse_env(args.env),
        log_path=args.log_file,
        log_verbose=args.log_verbose,
        startup_timeout_s=args.startup_timeout,
        stop_grace_s=args.stop_grace,
    )
    try:
        code = serve_until_stopped(server, on_ready=_announce)
    except (TritonStartError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Triton stopped (exit code {code}); log {server.log_path}", flush=True)
    return code


def _announce(server) -> None:
    print(
        f"Triton ready in {server.startup_seconds:.1f} s: gRPC {server.grpc_url}, HTTP {server.http_url}, "
        f"metrics {server.metrics_url}; log {server.log_path}. Ctrl-C to stop.",
        flush=True,
    )
