"""The Milvus schema of the video store: its collections, their metadata, limits, frame-code encodings.

Per-video collection `{prefix}_videos` (one row makes a video searchable):
    video_id VARCHAR pk | coarse FLOAT_VECTOR[dim] (IP, L2-normalised) | selector FLOAT | frame_count INT64 |
    generation INT64 | model_version VARCHAR | source_uri VARCHAR | indexed_at INT64 (unix ms) | metadata JSON |
    thumbnail VARCHAR (base64 JPEG, "" for none; from schema 2 on: a store made by schema 1 has no thumbnails)
Per-frame collection `{prefix}_frames` (rows of one index run share a `generation`):
    pk INT64 auto | video_id VARCHAR | generation INT64 | frame_start INT64 | frames INT64 | codes ...
(in a store made for crop views that keeps their codes, `StoreMeta.has_view_codes` (schema 3 on, an export's
`--view-codes`), each crop view's codes follow as more rows of the same generation: view v's frame i at
frame_start v * VIEW_FRAME_STRIDE + i)
with two layouts of `codes`:
    "vector": one row per frame, BINARY_VECTOR(4608) (packed S^f_B bits, [9, 64] uint8) or FLOAT_VECTOR(4608)
              (S^f_A [9, 512] float32); frame-level search possible.  Needs a real Milvus server.
    "chunk":  one row per chunk of up to `frames_per_row` frames, the raw bytes base64-encoded in a VARCHAR
              (bit-exact, ≤ 49,152 characters so it also fits a server's 65,535 limit), plus a 2-d placeholder
              float vector because a collection must hold one.  The embedded default (Milvus Lite 3.x has no
              binary vectors); see docs/storage.md for the measurements behind it.
Per-video text-video vectors `{prefix}_text` (only in a store made for a text-video student, `text_dim` > 0):
    pk INT64 auto | video_id VARCHAR | generation INT64 | vector FLOAT_VECTOR[text_dim] (IP, L2-normalised)
    a separate collection because a Milvus 2.3 server allows one vector field per collection; rows follow
    the frames' generation protocol (written before the switch, old generations deleted after it).
Per-view coarse vectors `{prefix}_views` (only in a store made for crop views, `views` = B > 0, issue 15):
    pk INT64 auto | video_id VARCHAR | generation INT64 | view INT64 | vector FLOAT_VECTOR[dim] (IP, L2-normalised)
    1 + B rows per video: view 0 its full frame's coarse vector, 1..B its crop views' (the grid's order); the
    coarse search then ranks a video by its best view.  Rows follow the same generation protocol.
`{prefix}_meta` holds one row, `StoreMeta` as JSON (Milvus Lite 3.2.2 drops collection descriptions): a store
refuses collections built for another model-pack version, coarse dimension, representation, layout, text-video
dimension or number of crop views.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pybase64
from dnsvr.client.errors import InvalidVideo
from dnsvr.client.ids import MAX_VIDEO_ID_BYTES, check_video_id
from dnsvr.client.spec import CODE_BYTES, FEATURE_DIMS, MAX_THUMBNAIL_BYTES, REGIONS

SCHEMA_VERSION = 3  # 2: the per-video JPEG thumbnail; 3: the crop views' fine codes, where kept (`view_codes`)
THUMBNAIL_SCHEMA = 2  # the first schema whose video rows hold a thumbnail
THUMBNAIL_FIELD_CHARS = 4 * math.ceil(MAX_THUMBNAIL_BYTES / 3)  # base64 of the largest thumbnail
JPEG_MAGIC = b"\xff\xd8\xff"
FRAME_DIM = REGIONS * FEATURE_DIMS  # 4608: the per-frame vector (bits or floats)
REPRESENTATIONS = ("binary", "float")
LAYOUTS = ("vector", "chunk")
CHUNK_BYTES = 36_864  # raw bytes per chunk row: 64 binary frames or 2 float frames; base64 -> 49,152 chars
CHUNK_FIELD_CHARS = 65_535
PLACEHOLDER_DIM = 2
META_KEY = "store"

MAX_FRAMES = 100_000
VIEW_FRAME_STRIDE = MAX_FRAMES  # frame_start of crop view v's frame i: v * VIEW_FRAME_STRIDE + i
MAX_VIEWS = 64  # crop views per video (a grid of 0.3:0.175 has 25)
MAX_MODEL_VERSION_BYTES = 128
MAX_SOURCE_URI_BYTES = 4_096
MAX_METADATA_BYTES = 60_000  # JSON text; Milvus 2.3 caps a JSON value at 65,536 bytes
MAX_QUERY_ROWS = 16_384  # Milvus returns at most this many rows per query
QUERY_BYTE_BUDGET = 32 << 20  # keep one query response well under gRPC message limits
COARSE_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class StoreMeta:
    """What a pair of collections holds; stored as JSON in both collection descriptions."""

    model_version: str
    coarse_dim: int
    representation: str  # "binary" (S^f_B packed bits) or "float" (S^f_A)
    layout: str  # "vector" or "chunk"
    frames_per_row: int
    schema: int = SCHEMA_VERSION
    text_dim: int = 0  # the text-video vectors' dimension; 0: no text-video student, no text search
    views: int = 0  # crop views each video is stored by beside its full frame (`{prefix}_views`); 0: none
    view_codes: bool = False  # each crop view's fine codes kept too (10x the fine codes; schema 3 on)
    segments: int = 0  # segment views (S^c of frame windows) each video is stored by after its crops'; 0: none

    def to_json(self) -> str:
        return json.dumps({"dnsvr_store": asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StoreMeta | None:
        try:
            return cls(**json.loads(text)["dnsvr_store"])
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def frame_bytes(self) -> int:
        return frame_bytes(self.representation)

    @property
    def has_thumbnails(self) -> bool:
        """Whether the video rows hold a thumbnail (stores made by schema 2 on)."""
        return self.schema >= THUMBNAIL_SCHEMA

    @property
    def has_view_codes(self) -> bool:
        """Whether each crop view's fine codes are kept beside the full frame's (a store made with crop views for
        an export with `--view-codes`): the fine student then compares a candidate's best view
        (`CoarseHits.code_views`)."""
        return self.views > 0 and self.view_codes

    @property
    def view_vectors(self) -> int:
        """Rows of one video in the view collection (`{prefix}_views`): its full frame, each crop view and each
        segment view; 0 in a store without that collection."""
        return 1 + self.views + self.segments if self.views or self.segments else 0

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (REGIONS, CODE_BYTES) if self.representation == "binary" else (REGIONS, FEATURE_DIMS)

    @property
    def frame_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.representation == "binary" else np.dtype(np.float32)

    def rows_for(self, frame_count: int) -> int:
        """Frame rows of one view of `frame_count` frames."""
        return math.ceil(frame_count / self.frames_per_row)

    def video_frame_rows(self, frame_count: int) -> int:
        """Frame rows of one video: its full frame's and, where kept, each crop view's."""
        return self.rows_for(frame_count) * (1 + self.views if self.has_view_codes else 1)

    @property
    def row_bytes(self) -> int:
        return self.frame_bytes * self.frames_per_row

    @property
    def rows_per_query(self) -> int:
        return max(1, min(MAX_QUERY_ROWS, QUERY_BYTE_BUDGET // (self.row_bytes * (2 if self.layout == "chunk"
                                                                                   else 1))))


def frame_bytes(representation: str) -> int:
    return REGIONS * (CODE_BYTES if representation == "binary" else FEATURE_DIMS * 4)


def make_meta(model_version: str, coarse_dim: int, representation: str, layout: str, text_dim: int = 0,
              views: int = 0, view_codes: bool = False, segments: int = 0) -> StoreMeta:
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not 1 <= coarse_dim <= 32_768:
        raise ValueError(f"coarse_dim must be in 1..32768, got {coarse_dim}")
    if not 0 <= text_dim <= 32_768:
        raise ValueError(f"text_dim must be in 0..32768, got {text_dim}")
    if not 0 <= views <= MAX_VIEWS:
        raise ValueError(f"views must be in 0..{MAX_VIEWS}, got {views}")
    if view_codes and not views:
        raise ValueError("view_codes needs crop views (views > 0)")
    if not 0 <= segments <= MAX_VIEWS:
        raise ValueError(f"segments must be in 0..{MAX_VIEWS}, got {segments}")
    check_text("model_version", model_version, MAX_MODEL_VERSION_BYTES, allow_empty=False)
    frames_per_row = 1 if layout == "vector" else CHUNK_BYTES // frame_bytes(representation)
    return StoreMeta(model_version, coarse_dim, representation, layout, frames_per_row, text_dim=text_dim,
                     views=views, view_codes=bool(view_codes), segments=segments)


@dataclass
class IndexedVideo:
    """One video as the networks produce it.

    coarse [D] float32 (L2-normalised); selector float; fine_codes [T, 9, 64] uint8 (S^f_B packed bits, see
    dnsvr.training.networks.codes) or [T, 9, 512] float32 (S^f_A); frame_count = T; metadata: JSON-serialisable dict;
    text [text_dim] float32 (L2-normalised): the text-video student's vector, required by a store with text_dim > 0
    and refused by one without; thumbnail: JPEG bytes (at most spec.MAX_THUMBNAIL_BYTES) or None, kept by stores
    that hold thumbnails (`StoreMeta.has_thumbnails`), ignored by older ones; views [B, D] float32 (each row
    L2-normalised): the coarse vectors of its B crop views, required by a store with views = B > 0 and refused by
    one without; view_codes [B, T, 9, 64] uint8 / [B, T, 9, 512] float32: each crop view's fine codes, required
    by a store that keeps them (`StoreMeta.has_view_codes`), ignored by a store with views that keeps none;
    segments [W, D] float32 (each row L2-normalised): the coarse vectors of its W segment views (frame windows,
    `SegmentLayout`), required by a store with segments = W > 0 and refused by one without.
    `indexed_at` (unix seconds) is set by the store on read.
    """

    video_id: str
    coarse: np.ndarray
    selector: float
    fine_codes: np.ndarray
    frame_count: int | None = None
    source_uri: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    model_version: str = ""
    indexed_at: float | None = None
    text: np.ndarray | None = None
    thumbnail: bytes | None = None
    views: np.ndarray | None = None
    view_codes: np.ndarray | None = None
    segments: np.ndarray | None = None


def check_text(name: str, value: object, max_bytes: int, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidVideo(f"{name} must be a str, got {type(value).__name__}")
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        raise InvalidVideo(f"{name} is {size} bytes of UTF-8, the maximum is {max_bytes}")
    if not allow_empty and not value:
        raise InvalidVideo(f"{name} must not be empty")
    return value


def check_unit_vector(vector: object, dim: int, name: str = "coarse vector") -> np.ndarray:
    """[dim] floating, finite, unit L2 norm -> [dim] float32; InvalidVideo naming `name` otherwise."""
    array = np.asarray(vector)
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidVideo(f"{name} must be floating point, got dtype {array.dtype}")
    if array.shape != (dim,):
        raise InvalidVideo(f"{name} must have shape [{dim}], got {list(array.shape)}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InvalidVideo(f"{name} contains NaN or Inf")
    norm = float(np.linalg.norm(array))
    if abs(norm - 1.0) > COARSE_NORM_TOLERANCE:
        raise InvalidVideo(f"{name} must be L2-normalised (inner product), its norm is {norm:.4f}")
    return array


def check_text_vector(text: object, meta: StoreMeta) -> np.ndarray | None:
    """The text-video vector a video of this store must carry: [text_dim] unit float32, None without text."""
    if not meta.text_dim:
        if text is not None:
            raise InvalidVideo("this store holds no text-video vectors (it was made for a model pack without a "
                               "text-video student)")
        return None
    if text is None:
        raise InvalidVideo(f"this store needs each video's {meta.text_dim}-d text-video vector")
    return check_unit_vector(text, meta.text_dim, "text-video vector")


def _no_crop_views() -> InvalidVideo:
    return InvalidVideo("this store holds no crop views (it was made for a repository that indexes full frames "
                        "alone)")


def check_view_vectors(views: object, meta: StoreMeta) -> np.ndarray | None:
    """The crop views' coarse vectors a video of this store must carry: [views, coarse_dim] float32, each row
    finite and of unit norm; None for a store without views.  InvalidVideo naming the problem otherwise."""
    if not meta.views and views is not None:
        raise _no_crop_views()
    return _unit_rows(views, meta.views, meta.coarse_dim, "crop view")


def check_segment_vectors(segments: object, meta: StoreMeta) -> np.ndarray | None:
    """The segment views' coarse vectors a video of this store must carry: [segments, coarse_dim] float32, each
    row finite and of unit norm; None for a store without them.  InvalidVideo naming the problem otherwise."""
    if not meta.segments and segments is not None:
        raise InvalidVideo("this store holds no segment views (it was made for a repository that indexes no "
                           "frame windows)")
    return _unit_rows(segments, meta.segments, meta.coarse_dim, "segment view")


def _unit_rows(vectors: object, count: int, dim: int, kind: str) -> np.ndarray | None:
    """`count` vectors of one kind of view -> [count, dim] float32 unit rows (None where count is 0)."""
    if not count:
        return None
    if vectors is None:
        raise InvalidVideo(f"this store needs each video's {count} {kind.replace(' ', '-')} coarse vectors")
    array = np.asarray(vectors)
    if array.ndim != 2 or len(array) != count:
        raise InvalidVideo(f"{kind}s must have shape [{count}, {dim}], got {list(array.shape)}")
    return np.stack([check_unit_vector(row, dim, f"{kind} {i + 1}") for i, row in enumerate(array)])


def check_thumbnail(thumbnail: object) -> bytes | None:
    """None, or JPEG bytes of at most MAX_THUMBNAIL_BYTES; InvalidVideo naming the problem otherwise."""
    if thumbnail is None:
        return None
    if not isinstance(thumbnail, bytes):
        raise InvalidVideo(f"thumbnail must be JPEG bytes, got {type(thumbnail).__name__}")
    if not thumbnail.startswith(JPEG_MAGIC):
        raise InvalidVideo("thumbnail is not a JPEG image (it must start with the JPEG marker FF D8 FF)")
    if len(thumbnail) > MAX_THUMBNAIL_BYTES:
        raise InvalidVideo(f"thumbnail is {len(thumbnail)} bytes, the maximum is {MAX_THUMBNAIL_BYTES}")
    return thumbnail


def check_fine_codes(codes: object, meta: StoreMeta) -> np.ndarray:
    """[T, 9, 64] uint8 or [T, 9, 512] float32 (finite), 1 <= T <= MAX_FRAMES."""
    array = np.asarray(codes)
    shape = meta.frame_shape
    if meta.representation == "binary" and array.dtype != np.uint8:
        raise InvalidVideo(f"binary fine codes must be packed uint8 [T, 9, 64], got dtype {array.dtype}")
    if meta.representation == "float":
        if not np.issubdtype(array.dtype, np.floating):
            raise InvalidVideo(f"float fine features must be floating [T, 9, 512], got dtype {array.dtype}")
        array = array.astype(np.float32)
    if array.ndim != 3 or array.shape[1:] != shape:
        raise InvalidVideo(f"fine codes must have shape [T, {shape[0]}, {shape[1]}], got {list(array.shape)}")
    if array.shape[0] == 0:
        raise InvalidVideo("video has zero frames")
    if array.shape[0] > MAX_FRAMES:
        raise InvalidVideo(f"video has {array.shape[0]} frames, the maximum is {MAX_FRAMES}")
    if meta.representation == "float" and not np.isfinite(array).all():
        raise InvalidVideo("fine features contain NaN or Inf")
    return np.ascontiguousarray(array)


def check_view_codes(view_codes: object, frame_count: int, meta: StoreMeta) -> np.ndarray | None:
    """The crop views' fine codes a video of this store must carry: [views, T, 9, 64] uint8 / [views, T, 9, 512]
    float32 (each view as `check_fine_codes`), None where the store keeps none (ignored: a store with views that
    keeps no codes of them).  InvalidVideo naming the problem otherwise."""
    if view_codes is not None and not meta.views:
        raise _no_crop_views()
    if not meta.has_view_codes:
        return None
    if view_codes is None:
        raise InvalidVideo(f"this store needs each video's {meta.views} crop views' fine codes")
    array = np.asarray(view_codes)
    shape = [meta.views, frame_count, *meta.frame_shape]
    if array.ndim != 4 or list(array.shape[:2]) != shape[:2]:
        raise InvalidVideo(f"crop views' fine codes must have shape {shape}, got {list(array.shape)}")
    return np.stack([check_fine_codes(view, meta) for view in array])


def check_video(video: IndexedVideo, meta: StoreMeta) -> IndexedVideo:
    """Validate every field against the store's metadata; returns a normalised copy. Raises InvalidVideo."""
    check_video_id(video.video_id)
    coarse = check_unit_vector(video.coarse, meta.coarse_dim)
    text = check_text_vector(video.text, meta)
    views = check_view_vectors(video.views, meta)
    segments = check_segment_vectors(video.segments, meta)
    try:
        selector = float(video.selector)
    except (TypeError, ValueError) as error:
        raise InvalidVideo(f"selector must be a float, got {video.selector!r}") from error
    if not math.isfinite(selector):
        raise InvalidVideo(f"selector must be finite, got {selector}")
    codes = check_fine_codes(video.fine_codes, meta)
    thumbnail = check_thumbnail(video.thumbnail)
    if video.frame_count is not None and video.frame_count != codes.shape[0]:
        raise InvalidVideo(f"frame_count {video.frame_count} != frames in fine_codes ({codes.shape[0]})")
    view_codes = check_view_codes(video.view_codes, codes.shape[0], meta)
    check_text("source_uri", video.source_uri, MAX_SOURCE_URI_BYTES)
    if not isinstance(video.metadata, dict):
        raise InvalidVideo(f"metadata must be a dict, got {type(video.metadata).__name__}")
    try:
        metadata_text = json.dumps(video.metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidVideo(f"metadata is not JSON-serialisable: {error}") from error
    if len(metadata_text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidVideo(f"metadata JSON is {len(metadata_text)} bytes, over {MAX_METADATA_BYTES}")
    return IndexedVideo(video.video_id, coarse, selector, codes, codes.shape[0], video.source_uri,
                        json.loads(metadata_text), meta.model_version, text=text, thumbnail=thumbnail, views=views,
                        view_codes=view_codes, segments=segments)


def video_schema(client_cls: Any, meta: StoreMeta) -> Any:
    """The per-video collection schema (explicit fields only: no dynamic fields the 2.3 server lacks)."""
    from pymilvus import DataType

    schema = client_cls.create_schema(auto_id=False, enable_dynamic_field=False, description=meta.to_json())
    schema.add_field("video_id", DataType.VARCHAR, is_primary=True, max_length=MAX_VIDEO_ID_BYTES)
    schema.add_field("coarse", DataType.FLOAT_VECTOR, dim=meta.coarse_dim)
    schema.add_field("selector", DataType.FLOAT)
    schema.add_field("frame_count", DataType.INT64)
    schema.add_field("generation", DataType.INT64)
    schema.add_field("model_version", DataType.VARCHAR, max_length=MAX_MODEL_VERSION_BYTES)
    schema.add_field("source_uri", DataType.VARCHAR, max_length=MAX_SOURCE_URI_BYTES)
    schema.add_field("indexed_at", DataType.INT64)
    schema.add_field("metadata", DataType.JSON)
    if meta.has_thumbnails:
        schema.add_field("thumbnail", DataType.VARCHAR, max_length=THUMBNAIL_FIELD_CHARS)
    return schema


def frame_schema(client_cls: Any, meta: StoreMeta) -> Any:
    """The per-frame (or per-chunk) collection schema for `meta.layout`."""
    from pymilvus import DataType

    schema = client_cls.create_schema(auto_id=True, enable_dynamic_field=False, description=meta.to_json())
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("video_id", DataType.VARCHAR, max_length=MAX_VIDEO_ID_BYTES)
    schema.add_field("generation", DataType.INT64)
    schema.add_field("frame_start", DataType.INT64)
    schema.add_field("frames", DataType.INT64)
    if meta.layout == "vector":
        vector_type = DataType.BINARY_VECTOR if meta.representation == "binary" else DataType.FLOAT_VECTOR
        schema.add_field("codes", vector_type, dim=FRAME_DIM)
    else:
        schema.add_field("codes", DataType.VARCHAR, max_length=CHUNK_FIELD_CHARS)
        schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=PLACEHOLDER_DIM)
    return schema


def text_schema(client_cls: Any, meta: StoreMeta) -> Any:
    """The text-video vector collection: one row per (video_id, generation)."""
    from pymilvus import DataType

    schema = client_cls.create_schema(auto_id=True, enable_dynamic_field=False, description=meta.to_json())
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("video_id", DataType.VARCHAR, max_length=MAX_VIDEO_ID_BYTES)
    schema.add_field("generation", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=meta.text_dim)
    return schema


def views_schema(client_cls: Any, meta: StoreMeta) -> Any:
    """The view collection: `meta.view_vectors` rows per (video_id, generation), `view` 0 the full frame's coarse
    vector, 1..views the crops' in the grid's order, then the segment views' in their layout's order."""
    from pymilvus import DataType

    schema = client_cls.create_schema(auto_id=True, enable_dynamic_field=False, description=meta.to_json())
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("video_id", DataType.VARCHAR, max_length=MAX_VIDEO_ID_BYTES)
    schema.add_field("generation", DataType.INT64)
    schema.add_field("view", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=meta.coarse_dim)
    return schema


def view_rows(video: IndexedVideo, generation: int) -> list[dict[str, Any]]:
    """A checked video's rows of the view collection: its full frame (view 0), each crop view, each segment view."""
    vectors = [video.coarse, *(video.views if video.views is not None else ()),
               *(video.segments if video.segments is not None else ())]
    return [{"video_id": video.video_id, "generation": generation, "view": view, "vector": vector.tolist()}
            for view, vector in enumerate(vectors)]


def meta_schema(client_cls: Any) -> Any:
    """The one-row metadata collection: key VARCHAR pk, value VARCHAR (StoreMeta JSON), placeholder vector."""
    from pymilvus import DataType

    schema = client_cls.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("value", DataType.VARCHAR, max_length=4_096)
    schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=PLACEHOLDER_DIM)
    return schema


def meta_row(meta: StoreMeta) -> dict[str, Any]:
    return {"key": META_KEY, "value": meta.to_json(), "placeholder": [1.0] + [0.0] * (PLACEHOLDER_DIM - 1)}


def new_generations(count: int) -> list[int]:
    """`count` distinct, time-ordered ids for one index run: unix ms << 20 | 20 random bits (fits INT64).

    Distinct within the call (drawn without replacement; 2^20 per millisecond, the next millisecond after
    that), from a freshly OS-seeded generator so forked writers do not repeat each other.  Independent calls
    in the same millisecond can still collide (p ~ n1*n2 / 2^20), which is why readers key frames by
    (video_id, generation), never by generation alone.
    """
    per_ms = 1 << 20
    now_ms = int(time.time() * 1000)
    rng = np.random.default_rng()
    generations: list[int] = []
    for offset in range(0, count, per_ms):
        suffixes = rng.choice(per_ms, size=min(per_ms, count - offset), replace=False)
        generations += [((now_ms + offset // per_ms) << 20) | int(suffix) for suffix in suffixes]
    return generations


def generation_time(generation: int) -> float:
    """Unix seconds at which a generation was created."""
    return (generation >> 20) / 1000.0


def frame_rows(video_id: str, generation: int, codes: np.ndarray, meta: StoreMeta,
               view: int = 0) -> list[dict[str, Any]]:
    """[T, 9, 64] uint8 / [T, 9, 512] float32 -> row dicts for the frame collection in `meta.layout`; `view` > 0:
    a crop view's codes, from frame_start view * VIEW_FRAME_STRIDE on."""
    flat = codes.reshape(codes.shape[0], -1)
    rows = []
    for start in range(0, flat.shape[0], meta.frames_per_row):
        block = flat[start:start + meta.frames_per_row]
        row = {"video_id": video_id, "generation": generation, "frame_start": view * VIEW_FRAME_STRIDE + start,
               "frames": block.shape[0]}
        if meta.layout == "chunk":
            row["codes"] = pybase64.b64encode(block.tobytes()).decode("ascii")
            row["placeholder"] = [1.0] + [0.0] * (PLACEHOLDER_DIM - 1)
        elif meta.representation == "binary":
            row["codes"] = block[0].tobytes()
        else:
            row["codes"] = block[0].tolist()
        rows.append(row)
    return rows


def decode_row(row: dict[str, Any], meta: StoreMeta) -> np.ndarray:
    """One frame-collection row -> [frames, 9, 64] uint8 or [frames, 9, 512] float32.  A chunk row's base64 is
    decoded strictly (pybase64's SIMD path, ~10x the stdlib's: 0.4 vs 5.3 ms for 50 videos of 60 frames; a
    character outside the alphabet raises binascii.Error instead of being skipped)."""
    value = row["codes"]
    if meta.layout == "chunk":
        raw = np.frombuffer(pybase64.b64decode(value, validate=True), dtype=meta.frame_dtype)
    elif meta.representation == "binary":
        raw = np.frombuffer(value[0] if isinstance(value, list) else value, dtype=np.uint8)
    else:
        raw = np.asarray(value, dtype=np.float32)
    return raw.reshape((-1, *meta.frame_shape))
