"""Which local Milvus serves a store path: the one home of the rule behind `dnsvr serve --engine`.

Engines (docs/storage.md, "Coarse search: which engine"):
- `server`: the Milvus 2.3.5 server of the `milvus` wheel (C++ search: a top-1000 coarse search in ~10 ms at
  10k videos), in a network namespace of its own and reached through a Unix socket only this user can open
  (`dnsvr.serving.local.isolated_milvus`); where this machine refuses the namespaces, only when asked with
  `isolate=False`: then its ports listen on every interface.
- `lite`: Milvus Lite 3.2.2 (pure Python: ~0.1-0.5 s per top-1000 search at 10k videos), on a `.db` path.
- `auto` (the default): a store path ending in `.db` is Milvus Lite's, any other the server's; with no path,
  the default store: the server's (`paths.default_store_path("server")`), unless only a Milvus Lite store exists
  there (`milvus.db`, made before the server became the default: its videos stay reachable) or the server
  cannot run isolated here (then Milvus Lite, saying why).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from dnsvr.serving.local.isolated_milvus import namespace_support
from dnsvr.training import paths

ENGINE_NAMES = ("auto", "server", "lite")


class EngineUnavailable(ValueError):
    """The asked engine cannot run here (the message says why and what to pass instead)."""


@dataclass(frozen=True)
class EngineChoice:
    """engine: "server" or "lite"; store: the local data path it serves; isolated: the server runs in its own
    network namespace; reason: one line on why this engine, for the start-up message."""

    engine: str
    store: str
    isolated: bool
    reason: str

    @property
    def label(self) -> str:
        if self.engine == "lite":
            return "Milvus Lite"
        return "the Milvus server" + (" (private network namespace)" if self.isolated else " (every interface)")


def server_support(isolated: bool = True) -> str | None:
    """None when the Milvus server can run here (in its own network namespace when `isolated`); else why not,
    in a sentence."""
    if importlib.util.find_spec("milvus") is None:
        return "the `milvus` wheel (the Milvus 2.3.5 server) is not installed"
    return namespace_support() if isolated else None


def choose_engine(engine: str = "auto", store: str | Path | None = None, isolate: bool = True) -> EngineChoice:
    """The engine and store path for `engine` ("auto", "server" or "lite") and a local `store` path (None: the
    default store); EngineUnavailable when "server" is asked (or implied by the path) and cannot run isolated
    here while `isolate` is True."""
    if engine not in ENGINE_NAMES:
        raise ValueError(f"engine must be one of {list(ENGINE_NAMES)}, got {engine!r}")
    if engine == "auto":
        engine, reason = _auto_engine(store, isolate)
    else:
        reason = f"--engine {engine}"
    path = str(store) if store is not None else str(paths.default_store_path(engine))
    if engine == "lite":
        return EngineChoice("lite", path, False, reason)
    missing = server_support(isolate)
    if missing and not isolate:
        raise EngineUnavailable(f"the Milvus server cannot run here: {missing}; use Milvus Lite (--engine lite)")
    if not isolate:
        return EngineChoice("server", path, False, reason + "; not isolated: its ports listen on every interface")
    if missing:
        raise EngineUnavailable(f"the Milvus server cannot run in a network namespace of its own here: {missing}. "
                                "Use Milvus Lite (a store path ending in .db, or --engine lite), or run the server "
                                "on every interface on a trusted host (--no-isolation)")
    return EngineChoice("server", path, True, reason)


def _auto_engine(store: str | Path | None, isolate: bool) -> tuple[str, str]:
    """("server" | "lite", why) for engine "auto" (module docstring)."""
    if store is not None:
        if str(store).endswith(".db"):
            return "lite", "a store path ending in .db is Milvus Lite's"
        return "server", "a store path not ending in .db is the Milvus server's"
    lite, server = paths.default_store_path("lite"), paths.default_store_path("server")
    if lite.exists() and not server.exists():
        return "lite", f"the default store {lite} was made by Milvus Lite"
    missing = server_support(isolate)
    if missing:
        return "lite", f"the Milvus server cannot run isolated here ({missing})"
    return "server", "the default engine"
