"""`dnsvr web`: serve the search page (dnsvr.serving.web) over a running service, reached by gRPC."""

from __future__ import annotations

import argparse
from pathlib import Path

from dnsvr.serving.web.uploads import DEFAULT_MAX_UPLOAD_MB

WEB_EPILOG = """\
The page's server talks to the service only through the client SDK (gRPC): it never reads the store or files.
Uploaded queries stay in memory (at most --max-upload-mb each); the page keeps thumbnails of recent queries
only, and shows a placeholder for indexed videos (the service stores features, not frames).  The page has no
login of its own and calls the service with this process's token ($DNSVR_ACCESS_TOKEN): keep --host 127.0.0.1
unless something in front of it checks who calls.
examples:
  dnsvr web                                      # the running `dnsvr serve`, page on http://127.0.0.1:8080
  dnsvr web --grpc-url 127.0.0.1:8001 --port 9000 --max-upload-mb 200
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    web = subparsers.add_parser(
        "web", help="serve a search page (upload a video, pick an id, or type text) over a running service",
        description="Serve a web page for near-duplicate and text search over a running dnsvr service.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=WEB_EPILOG)
    web.add_argument("--grpc-url", "--url", dest="url",
                     help="the service's gRPC address host:port (default: $DNSVR_URL, else the running `dnsvr serve`)")
    web.add_argument("--host", default="127.0.0.1", help="page address (default: %(default)s)")
    web.add_argument("--port", type=int, default=8080, help="page port (default: %(default)s)")
    web.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                     help="largest query video accepted, in MB (default: %(default)s)")
    web.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default: %(default)s)")
    web.add_argument("--tls-ca", type=Path, help="TLS: the PEM CA (or self-signed certificate) of the service")
    web.set_defaults(handler=web_command)


def web_command(args: argparse.Namespace) -> int:
    import uvicorn
    from dnsvr.serving.cli.service import client_from_args
    from dnsvr.serving.web.app import create_app
    from dnsvr.serving.web.uploads import UploadLimit

    try:
        limit = UploadLimit.from_megabytes(args.max_upload_mb)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    with client_from_args(args) as client:
        print(f"dnsvr web: http://{args.host}:{args.port}/ over the service at {client.url}", flush=True)
        uvicorn.run(create_app(client, limit), host=args.host, port=args.port, log_level="warning")
    return 0
