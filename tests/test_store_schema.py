"""Store schema, validation and settings, without a Milvus process: encodings, limits, config precedence."""

from __future__ import annotations

import base64
import binascii

import numpy as np
import pytest
from dnsvr.serving.store.schema import (
    MAX_FRAMES,
    MAX_VIDEO_ID_BYTES,
    IndexedVideo,
    InvalidVideo,
    StoreMeta,
    check_video,
    decode_row,
    frame_rows,
    generation_time,
    make_meta,
    new_generations,
)
from dnsvr.serving.store.settings import StoreSettings, redact_uri
from dnsvr.training.networks.codes import pack_codes, unpack_codes


def unit(dim: int, seed: int = 0) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def good_video(frames: int = 5) -> IndexedVideo:
    signs = np.random.default_rng(1).choice([-1.0, 1.0], size=(frames, 9, 512))
    return IndexedVideo("clip-1", unit(16), 0.25, pack_codes(signs), source_uri="file:///a.mp4",
                        metadata={"lang": "en"})


@pytest.mark.parametrize("layout", ["vector", "chunk"])
@pytest.mark.parametrize("representation", ["binary", "float"])
def test_frame_rows_round_trip_bit_exact(layout: str, representation: str) -> None:
    meta = make_meta("v1", 16, representation, layout)
    rng = np.random.default_rng(0)
    frames = 2 * meta.frames_per_row + 3
    if representation == "binary":
        codes = pack_codes(rng.choice([-1.0, 1.0], size=(frames, 9, 512)))
    else:
        codes = rng.normal(size=(frames, 9, 512)).astype(np.float32)
    rows = frame_rows("clip", 7, codes, meta)
    assert len(rows) == meta.rows_for(frames)
    decoded = np.concatenate([decode_row(row, meta) for row in sorted(rows, key=lambda r: r["frame_start"])])
    assert decoded.dtype == codes.dtype
    assert decoded.tobytes() == codes.tobytes()
    if representation == "binary":
        np.testing.assert_array_equal(unpack_codes(decoded), unpack_codes(codes))


def test_chunk_rows_are_standard_base64_and_a_corrupt_one_is_refused() -> None:
    """Rows written before the SIMD codec (stdlib base64) read the same; a character outside the alphabet is an
    error, not a silently shorter code."""
    meta = make_meta("v1", 16, "binary", "chunk")
    codes = pack_codes(np.random.default_rng(2).choice([-1.0, 1.0], size=(meta.frames_per_row, 9, 512)))
    row = frame_rows("clip", 7, codes, meta)[0]
    assert row["codes"] == base64.b64encode(codes.tobytes()).decode("ascii")
    assert decode_row(row, meta).tobytes() == codes.tobytes()
    with pytest.raises(binascii.Error):
        decode_row(dict(row, codes="*" + row["codes"][1:]), meta)


def test_chunk_rows_fit_a_server_varchar() -> None:
    for representation in ("binary", "float"):
        meta = make_meta("v1", 16, representation, "chunk")
        codes = np.zeros((meta.frames_per_row, *meta.frame_shape), meta.frame_dtype)
        assert len(frame_rows("c", 1, codes, meta)[0]["codes"]) <= 65_535


def test_meta_json_round_trip() -> None:
    meta = make_meta("pack-2024.1", 1024, "binary", "chunk")
    assert StoreMeta.from_json(meta.to_json()) == meta
    assert StoreMeta.from_json('{"something": "else"}') is None


def test_generations_of_one_call_are_distinct_and_dated() -> None:
    """The old per-video draw (ms << 20 | 20 random bits) repeated values within one 100k-video run."""
    generations = new_generations(100_000)
    assert len(set(generations)) == 100_000
    assert all(0 < g < 2**63 for g in generations)
    assert abs(generation_time(generations[0]) - __import__("time").time()) < 5
    assert len(set(new_generations((1 << 20) + 5))) == (1 << 20) + 5


BAD_INPUTS = {
    "empty id": dict(video_id=""),
    "oversized id": dict(video_id="x" * (MAX_VIDEO_ID_BYTES + 1)),
    "quote in id": dict(video_id='a"b'),
    "control char in id": dict(video_id="a\nb"),
    "wrong coarse dim": dict(coarse=unit(8)),
    "int coarse": dict(coarse=np.ones(16, np.int32)),
    "nan coarse": dict(coarse=np.full(16, np.nan, np.float32)),
    "inf coarse": dict(coarse=np.array([np.inf] + [0.0] * 15, np.float32)),
    "unnormalised coarse": dict(coarse=unit(16) * 3),
    "nan selector": dict(selector=float("nan")),
    "zero frames": dict(fine_codes=np.zeros((0, 9, 64), np.uint8)),
    "float codes for binary": dict(fine_codes=np.zeros((3, 9, 64), np.float32)),
    "wrong code shape": dict(fine_codes=np.zeros((3, 9, 32), np.uint8)),
    "unpacked codes": dict(fine_codes=np.ones((3, 9, 512), np.uint8)),
    "too many frames": dict(fine_codes=np.zeros((MAX_FRAMES + 1, 9, 64), np.uint8)),
    "frame_count disagrees": dict(frame_count=9),
    "metadata not json": dict(metadata={"x": object()}),
    "metadata too big": dict(metadata={"x": "y" * 70_000}),
}


@pytest.mark.parametrize("change", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_rejected_with_a_clear_error(change: dict) -> None:
    meta = make_meta("v1", 16, "binary", "chunk")
    video = good_video()
    for key, value in change.items():
        setattr(video, key, value)
    with pytest.raises(InvalidVideo) as error:
        check_video(video, meta)
    assert len(str(error.value)) > 10


def test_float_representation_rejects_nan_and_uint8() -> None:
    meta = make_meta("v1", 16, "float", "vector")
    video = good_video()
    video.fine_codes = np.zeros((2, 9, 512), np.uint8)
    with pytest.raises(InvalidVideo, match="floating"):
        check_video(video, meta)
    video.fine_codes = np.full((2, 9, 512), np.nan, np.float32)
    with pytest.raises(InvalidVideo, match="NaN"):
        check_video(video, meta)


def test_good_video_is_normalised() -> None:
    checked = check_video(good_video(), make_meta("v1", 16, "binary", "chunk"))
    assert checked.coarse.dtype == np.float32 and checked.frame_count == 5 and checked.model_version == "v1"


def test_settings_precedence_flag_env_file_default(tmp_path, monkeypatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[store]\nuri = "http://file-host:19530"\nprefix = "fromfile"\ntimeout_s = 7\n'
                      'view_depth = 1000\n')
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for variable in ("DNSVR_MILVUS_URI", "DNSVR_MILVUS_TOKEN", "DNSVR_MILVUS_PREFIX", "DNSVR_CONFIG",
                     "DNSVR_MILVUS_RECONNECT_S", "DNSVR_VIEW_DEPTH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    assert StoreSettings.resolve().uri == str(tmp_path / "data" / "dnsvr" / "milvus.db")
    from_file = StoreSettings.resolve(config_path=config)
    assert (from_file.uri, from_file.prefix, from_file.timeout_s) == ("http://file-host:19530", "fromfile", 7)
    assert from_file.view_depth == 1000 and StoreSettings(uri="a.db").view_depth == 100
    monkeypatch.setenv("DNSVR_MILVUS_URI", "https://env-host:443")
    monkeypatch.setenv("DNSVR_MILVUS_TOKEN", "user:secret")
    from_env = StoreSettings.resolve(config_path=config)
    assert (from_env.uri, from_env.prefix) == ("https://env-host:443", "fromfile")
    assert from_env.token == "user:secret"
    assert from_env.client_kwargs()["secure"] is True
    assert "secret" not in repr(from_env)
    assert StoreSettings.resolve(config_path=config, uri="http://flag:1").uri == "http://flag:1"
    assert from_env.reconnect_s == 0.0
    monkeypatch.setenv("DNSVR_MILVUS_RECONNECT_S", "2.5")
    assert StoreSettings.resolve(config_path=config).reconnect_s == 2.5
    monkeypatch.setenv("DNSVR_VIEW_DEPTH", "250")
    assert StoreSettings.resolve(config_path=config).view_depth == 250
    monkeypatch.setenv("DNSVR_VIEW_DEPTH", "lots")
    with pytest.raises(ValueError, match="view_depth"):
        StoreSettings.resolve(config_path=config)


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match=".db"):
        StoreSettings(uri="/var/lib/store")
    with pytest.raises(ValueError, match="layout"):
        StoreSettings(uri="a.db", layout="rows")
    with pytest.raises(ValueError, match="prefix"):
        StoreSettings(uri="a.db", prefix="bad-prefix")
    for seconds in (-1.0, float("nan"), 1e9):
        with pytest.raises(ValueError, match="reconnect_s"):
            StoreSettings(uri="a.db", reconnect_s=seconds)
    for depth in (0, -5, 2.5, True, "100"):
        with pytest.raises(ValueError, match="view_depth"):
            StoreSettings(uri="a.db", view_depth=depth)


def test_redact_uri_drops_credentials() -> None:
    assert redact_uri("https://user:pw@host:19530/?token=x") == "https://host:19530/"
    assert redact_uri("/data/milvus.db") == "/data/milvus.db"
