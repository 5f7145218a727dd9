"""Where the video store lives and how to reach it: flag > environment > config file (TOML) > default.

Environment (`dnsvr.training.paths`): DNSVR_MILVUS_URI, DNSVR_MILVUS_TOKEN, DNSVR_MILVUS_TLS_CA,
DNSVR_MILVUS_PREFIX, DNSVR_MILVUS_RECONNECT_S, DNSVR_VIEW_DEPTH, DNSVR_CONFIG (path of the config file, default
$XDG_CONFIG_HOME/dnsvr/config.toml).
Config file:

    [store]
    uri = "https://milvus.internal:19530"   # or a path ending in .db for embedded Milvus Lite
    token = "user:password"
    tls_ca = "/etc/ssl/milvus-ca.pem"
    prefix = "dnsvr"
    layout = "auto"          # auto | vector | chunk
    coarse_index = "HNSW"    # FLAT | IVF_FLAT | HNSW | AUTOINDEX
    view_depth = 100         # a store with views ranks a search's first N videos exactly by their best view
    timeout_s = 30
    reconnect_s = 0          # while a new connection is refused, try again for this long (a restarting server)

The default URI is embedded Milvus Lite at `paths.default_store_path()` (~/.local/share/dnsvr/milvus.db).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dnsvr.training import paths

SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")
COARSE_INDEXES = ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX")
VIEW_DEPTH = 100  # exact best-view places by default: each costs a view read of `view_vectors` rows (docs/storage.md)
ENVIRONMENT = {
    "uri": paths.MILVUS_URI,
    "token": paths.MILVUS_TOKEN,
    "tls_ca": paths.MILVUS_TLS_CA,
    "prefix": paths.MILVUS_PREFIX,
    "reconnect_s": paths.MILVUS_RECONNECT_S,
    "view_depth": paths.VIEW_DEPTH,
}


def is_server_uri(uri: str) -> bool:
    return urlsplit(uri).scheme.lower() in SERVER_SCHEMES


def is_lite_file(uri: str) -> bool:
    """Whether `uri` names an embedded Milvus Lite file (a local path ending in .db)."""
    return uri.endswith(".db") and not is_server_uri(uri)


def redact_uri(uri: str) -> str:
    """The URI without user/password or query string, fit for error messages and logs."""
    if not is_server_uri(uri):
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class StoreSettings:
    """How to reach the store. `token` ("user:password" or an API key) never appears in repr or errors."""

    uri: str = field(default_factory=lambda: str(paths.default_store_path()))
    token: str = field(default="", repr=False)
    tls_ca: str | None = None
    prefix: str = "dnsvr"
    layout: str = "auto"
    coarse_index: str = "HNSW"
    view_depth: int = VIEW_DEPTH  # places of a search ranked exactly by best view (`VideoStore._best_view_per_video`)
    timeout_s: float = 30.0
    reconnect_s: float = 0.0  # how long a refused new connection is tried again (nothing was sent: safe to retry)

    def __post_init__(self) -> None:
        if not is_server_uri(self.uri) and not is_lite_file(self.uri):
            raise ValueError(
                f"store URI {self.uri!r}: use http(s)://host:port for a Milvus server or a path ending in "
                ".db for embedded Milvus Lite"
            )
        if self.layout not in ("auto", "vector", "chunk"):
            raise ValueError(f"layout must be auto, vector or chunk, got {self.layout!r}")
        if self.coarse_index not in COARSE_INDEXES:
            raise ValueError(f"coarse_index must be one of {COARSE_INDEXES}, got {self.coarse_index!r}")
        if not self.prefix.replace("_", "").isalnum() or not self.prefix[0].isalpha():
            raise ValueError(f"prefix must be letters, digits and _, starting with a letter: {self.prefix!r}")
        if isinstance(self.view_depth, bool) or not isinstance(self.view_depth, int) or self.view_depth < 1:
            raise ValueError(f"view_depth must be a whole number of places, 1 or more, got {self.view_depth!r}")
        if not 0.0 <= self.reconnect_s <= 3600.0:
            raise ValueError(f"reconnect_s must be between 0 and 3600 seconds, got {self.reconnect_s!r}")

    @property
    def embedded(self) -> bool:
        return not is_server_uri(self.uri)

    @property
    def display_uri(self) -> str:
        return redact_uri(self.uri)

    def client_kwargs(self) -> dict:
        """Keyword arguments for pymilvus.MilvusClient."""
        if self.embedded:
            Path(self.uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            return {"uri": str(Path(self.uri).expanduser()), "timeout": self.timeout_s}
        kwargs = {"uri": self.uri, "token": self.token, "timeout": self.timeout_s}
        if self.tls_ca:
            kwargs.update(secure=True, server_pem_path=self.tls_ca)
        elif urlsplit(self.uri).scheme.lower() == "https":
            kwargs["secure"] = True
        return kwargs

    @classmethod
    def resolve(cls, config_path: str | os.PathLike | None = None, **flags) -> StoreSettings:
        """Merge flags (None = unset) over the environment over the config file over the defaults."""
        values: dict = {}
        path = Path(config_path) if config_path else paths.config_path()
        if path.is_file():
            values.update(_read_store_table(path))
        elif config_path:
            raise FileNotFoundError(f"config file {path} does not exist")
        for key, variable in ENVIRONMENT.items():
            if paths.environment(variable):
                values[key] = paths.environment(variable)
        values.update({key: value for key, value in flags.items() if value is not None})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown store settings {sorted(unknown)} (in {path} or flags)")
        for key in ("timeout_s", "reconnect_s"):
            if key in values:
                values[key] = float(values[key])
        if isinstance(values.get("view_depth"), str):  # from the environment
            if not values["view_depth"].strip().isdigit():
                raise ValueError(f"view_depth must be a whole number of places, got {values['view_depth']!r}")
            values["view_depth"] = int(values["view_depth"])
        return replace(cls(**{k: v for k, v in values.items() if k == "uri"}), **values)


def _read_store_table(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError as error:  # Python 3.10
        raise RuntimeError(f"reading {path} needs Python 3.11+ (tomllib)") from error
    with open(path, "rb") as handle:
        table = tomllib.load(handle).get("store", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [store] must be a table")
    return table
