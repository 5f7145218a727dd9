"""`dnsvr store ...`: inspect and repair the Milvus video store (check, stats, delete)."""

from __future__ import annotations

import argparse
import sys

STORE_EPILOG = """\
The store is found by --store, else $DNSVR_MILVUS_URI, else [store] uri in the config file
($DNSVR_CONFIG or ~/.config/dnsvr/config.toml), else the default store of `dnsvr serve`:
~/.local/share/dnsvr/milvus-server (the local Milvus server, reached through the Unix socket of the running
`dnsvr serve`), or embedded Milvus Lite at ~/.local/share/dnsvr/milvus.db where only that exists.  --store
also takes a local data path: a .db path (Milvus Lite; through a running `dnsvr serve` when one holds it) or
a server data directory of a running `dnsvr serve`.  A server token comes from $DNSVR_MILVUS_TOKEN or the
config file (never put it on the command line of a shared machine).

examples:
  dnsvr store stats --store http://127.0.0.1:19530
  dnsvr store check                 # report orphan frames and text vectors / incomplete videos (exit 1 if any)
  dnsvr store check --repair        # remove them
  dnsvr store delete my-video-42
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    store = subparsers.add_parser(
        "store", help="inspect and repair the Milvus video store",
        description="Inspect and repair the Milvus store of coarse vectors and fine-grained frame codes.",
        epilog=STORE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = store.add_subparsers(dest="store_command", metavar="COMMAND")

    def add(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text, epilog=STORE_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--store", metavar="URI", help="http(s)://host:port or unix:/path of Milvus, a .db "
                            "path, or the data directory of a running `dnsvr serve`'s Milvus server")
        parser.add_argument("--prefix", help="collection name prefix (default dnsvr)")
        parser.add_argument("--config", metavar="TOML", help="config file with a [store] table")
        parser.set_defaults(handler=handler)
        return parser

    check = add("check", "find frames no video points to and videos whose frames are incomplete", _check)
    check.add_argument("--repair", action="store_true",
                       help="delete orphan frames, incomplete videos and ids the id rule refuses (re-index them)")
    check.add_argument("--grace", type=float, default=600.0, metavar="SECONDS",
                       help="skip orphans younger than this: upserts may be writing them (default 600)")
    add("stats", "rows, frames and bytes per video", _stats)
    delete = add("delete", "delete one video (row first, then its frames)", _delete)
    delete.add_argument("video_id", help="id of the video to delete")
    store.set_defaults(handler=lambda args: store.print_help() or 2)


def _open(args: argparse.Namespace):
    """The store of the flags (nothing configured: the store `dnsvr serve` uses by default); a local store that a
    running `dnsvr serve` holds is reached through that serve's engine: the Unix socket of its Milvus server, or
    its Milvus Lite server (only one process may open Lite's files)."""
    from dataclasses import replace

    from dnsvr.serving.local.engine_choice import choose_engine
    from dnsvr.serving.local.milvus_servers import serving_lite_uri, serving_server_uri
    from dnsvr.serving.store.settings import StoreSettings, is_lite_file, is_server_uri
    from dnsvr.serving.store.video_store import VideoStore
    from dnsvr.training import paths

    store = args.store
    if store is None and StoreSettings.resolve(config_path=args.config).uri == str(paths.default_store_path()):
        store = str(choose_engine(store=None).store)  # nothing configured: the store `dnsvr serve` would use
    if store is not None and not is_server_uri(store) and not is_lite_file(store):  # a server data directory
        live = serving_server_uri(store)
        if live is None:
            raise ValueError(f"{store} is a Milvus server's data directory and no `dnsvr serve` runs its server: "
                             "start `dnsvr serve` (the server runs under it), or pass --store URI")
        store = live
    settings = StoreSettings.resolve(config_path=args.config, uri=store, prefix=args.prefix)
    if settings.embedded:
        live = serving_lite_uri(settings.uri)
        if live is not None:
            print(f"{settings.uri} is open in a running dnsvr serve: reaching it through {live}", file=sys.stderr)
            settings = replace(settings, uri=live)
    return VideoStore(settings, create=False)


def _run(args: argparse.Namespace, action) -> int:
    import logging

    from dnsvr.serving.local.milvus_servers import ServerStartError
    from dnsvr.serving.store.video_store import StoreError

    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # the one-line error below says it all
    try:
        with _open(args) as store:
            return action(store)
    except (StoreError, ServerStartError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> int:
    def action(store) -> int:
        report = store.check(repair=args.repair, grace_s=args.grace)
        print(f"videos: {report.videos}  frame rows: {report.frame_rows}")
        print(f"orphan frame rows: {report.orphan_rows}  orphan text-vector rows: {report.orphan_text_rows}  "
              f"orphan view rows: {report.orphan_view_rows} (of {len(report.orphan_video_ids)} video ids)"
              + (f"  {', '.join(report.orphan_video_ids[:20])}" if report.orphan_video_ids else ""))
        if report.skipped_recent_rows:
            print(f"skipped {report.skipped_recent_rows} orphan rows younger than {args.grace:.0f} s")
        print(f"incomplete videos: {len(report.incomplete_video_ids)}"
              + (f"  {', '.join(report.incomplete_video_ids[:20])}" if report.incomplete_video_ids else ""))
        print(f"ids the id rule refuses: {len(report.invalid_video_ids)}"
              + (f"  {', '.join(map(repr, report.invalid_video_ids[:20]))}" if report.invalid_video_ids else ""))
        if report.repaired:
            print("repaired: orphan frames, text vectors and crop views, incomplete videos and refused ids removed")
            return 0
        return 0 if report.clean else 1

    return _run(args, action)


def _stats(args: argparse.Namespace) -> int:
    def action(store) -> int:
        stats = store.stats()
        meta = stats.meta
        print(f"store:           {store.settings.display_uri}  ({store.server_version})")
        text = f", {store.text_collection}" if meta.text_dim else ""
        views = f", {store.view_collection}" if meta.view_vectors else ""
        print(f"collections:     {store.video_collection}, {store.frame_collection}{text}{views}")
        print(f"model version:   {meta.model_version}   coarse dim: {meta.coarse_dim}  "
              f"representation: {meta.representation}  layout: {meta.layout} ({meta.frames_per_row}/row)")
        vectors = f"{meta.text_dim}-d text-video vectors ({stats.text_rows} rows)" if meta.text_dim else "none"
        print(f"text search:     {vectors}")
        views = (f"full frame + {meta.views} crops + {meta.segments} frame windows a video ({stats.view_rows} rows)"
                 if meta.view_vectors else "full frame alone")
        print(f"coarse views:    {views}")
        print(f"videos:          {stats.videos}")
        print(f"frames:          {stats.frames}  in {stats.frame_rows} rows")
        print(f"payload/video:   {stats.payload_bytes_per_video:,.0f} B")
        if stats.disk_bytes is not None:
            per_video = f"  ({stats.disk_bytes_per_video:,.0f} B/video)" if stats.videos else ""
            print(f"disk:            {stats.disk_bytes:,} B{per_video}")
        return 0

    return _run(args, action)


def _delete(args: argparse.Namespace) -> int:
    def action(store) -> int:
        if store.delete(args.video_id):
            print(f"deleted {args.video_id}")
            return 0
        print(f"not found: {args.video_id} (any stray frames of it were removed)", file=sys.stderr)
        return 1

    return _run(args, action)
