"""The served models' interface: model names, tensor names, dtypes, dims and the ONNX opset, in one place.

The export (`dnsvr.export`), the Triton model repository configs (generated from this file), the client and
the tests all read these objects; nothing else spells a tensor name.  Pure Python + numpy.

Dims are the full tensor shapes of the ONNX graph, -1 for a dynamic axis.  For a model with
`max_batch_size > 0` axis 0 is Triton's batch axis: the config lists `dims[1:]` and Triton's dynamic batcher
may merge requests whose other dims agree.  Masks are bool, True at real frames, and must be prefixes
(`mask[b, t] = t < length[b]`); every row needs at least one real frame (the graphs cannot raise: a row with
none gives an undefined output, so the server must reject it first).

Network models (one ONNX graph each):

    feature_extractor     frames uint8 [T, 224, 224, 3] RGB          -> features float32 [T, 9, 512]
    coarse_embed          features [B, T, 9, 512], mask [B, T]        -> embedding float32 [B, C]
    fine_index_bin        features, mask                              -> indexed uint8 [B, T, 9, 64] (packed ±1)
    fine_index_att        features, mask                              -> indexed float32 [B, T, 9, 512]
    selector_index        features, mask                              -> self_similarity float32 [B, 1]
    selector_score        pair_features float32 [K, 3]                -> scores float32 [K]
    fine_similarity_bin   query uint8 [Tq, 9, 64], query_mask [Tq],
                          candidates uint8 [K, Tt, 9, 64], candidate_mask [K, Tt] -> similarity float32 [K],
                          f2f float32 [K, Tq, Tt] (the frame-to-frame similarities of the real frames, not
                          repeated, 0 elsewhere: what copy localisation reads)
    fine_similarity_att   the same with float32 [.., 9, 512] representations
    text_encoder          token_ids int64 [B, L] (CLIP tokens)        -> embedding float32 [B, D] (unit norm)
    video_text_embed      frames uint8 [B, T, S, S, 3] RGB crops, mask [B, T] -> embedding float32 [B, D] (unit)
    feature_extractor_pooled  frames uint8 [T, 224, 224, 3]          -> features [T, 9, 512],
                          pooled float32 [T, 1280] (EfficientNet-Lite0's pre-classifier feature, same CNN pass)
    text_encoder_minilm   input_ids, attention_mask int64 [B, L] (MiniLM WordPiece) -> embedding [B, D] (unit)
    video_text_embed_effnet  frame_features float32 [B, T, 1280], mask [B, T] -> embedding float32 [B, D] (unit)
    fine_comparator       f2f float32 [K, Tq, Tt], query_mask [Tq], candidate_mask [K, Tt] -> similarity [K]
                          (a part graph: fine_similarity_bin's cpu_local model runs it after its Hamming
                          kernel; not in NETWORKS, not served on its own)

Only the models of the exported fine student (bin or att) are served, and the two text-video models of the
weights' text-video student, by its kind (`TEXT_KINDS`: a TeachCLIP checkpoint, or the offline MiniLM +
EfficientNet-Lite0 student, whose frame input comes from `feature_extractor_pooled` in place of
`feature_extractor`); `model_repository/manifest.json` lists them.  Served pipelines (ensembles / BLS models) go
in `pipeline_specs(fine, text)`, next to `NETWORKS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPSET = 17
FRAME_SIZE = 224
REGIONS = 9
FEATURE_DIMS = 512
CODE_BYTES = FEATURE_DIMS // 8
MIN_FRAMES = 4
DECODE_FPS = 1.0  # frames per second video_features samples (its `fps` parameter) and the store holds per video
DECODE_CHUNK_FRAMES = 4  # decoded frames per extractor request of video_features (`chunk_frames`; embed_bench.py)
POOLED_DIMS = 1280  # EfficientNet-Lite0's pooled pre-classifier feature of a frame (the offline text student's input)
THUMBNAIL_SIZE = 112  # px: a video's thumbnail, its middle sampled frame (224 centre crop) scaled down, as JPEG
MAX_THUMBNAIL_BYTES = 12_288  # the largest JPEG thumbnail the store keeps (the sample clips': 1-5 KB)

# numpy dtype name -> (Triton wire datatype used by tritonclient, Triton config data_type)
_TRITON_TYPES = {
    "bool": ("BOOL", "TYPE_BOOL"),
    "bytes": ("BYTES", "TYPE_STRING"),
    "uint8": ("UINT8", "TYPE_UINT8"),
    "int32": ("INT32", "TYPE_INT32"),
    "int64": ("INT64", "TYPE_INT64"),
    "float16": ("FP16", "TYPE_FP16"),
    "float32": ("FP32", "TYPE_FP32"),
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: `dims` are the full ONNX shape, -1 for a dynamic axis.

    `optional` (pipeline inputs only): a request may leave it out.  dtype "bytes" is Triton's BYTES (a
    numpy object array of `bytes` on the client).
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _TRITON_TYPES:
            raise ValueError(f"tensor '{self.name}': dtype {self.dtype!r} is not one of {sorted(_TRITON_TYPES)}")

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def triton_dtype(self) -> str:
        """The datatype string of `tritonclient.grpc.InferInput` ("FP32", "UINT8", "BOOL")."""
        return _TRITON_TYPES[self.dtype][0]

    @property
    def config_data_type(self) -> str:
        """The `data_type` of a Triton config.pbtxt ("TYPE_FP32", ...)."""
        return _TRITON_TYPES[self.dtype][1]


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its inputs and outputs, and how Triton batches it.

    `max_batch_size > 0`: axis 0 of every tensor is the batch axis (at most that many rows per request
    after dynamic batching); `frame_axes` names, per input, the axis that holds frames (TensorRT profiles).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    dynamic_batching: bool = False
    frame_axes: tuple[tuple[str, int], ...] = ()
    description: str = ""

    def input(self, name: str) -> TensorSpec:
        return _find(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _find(self.outputs, name, self.name)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


def _find(tensors: tuple[TensorSpec, ...], name: str, model: str) -> TensorSpec:
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    raise KeyError(f"model '{model}' has no tensor '{name}' (has {[t.name for t in tensors]})")


def _features(name: str = "features") -> TensorSpec:
    return TensorSpec(name, "float32", (-1, -1, REGIONS, FEATURE_DIMS))


def _mask(name: str = "mask") -> TensorSpec:
    return TensorSpec(name, "bool", (-1, -1))


def _mask_row(name: str = "mask") -> TensorSpec:
    return TensorSpec(name, "bool", (1, -1))


_VIDEO_BATCH = dict(max_batch_size=16, dynamic_batching=True, frame_axes=(("features", 1), ("mask", 1)))

FEATURE_EXTRACTOR = ModelSpec(
    "feature_extractor",
    inputs=(TensorSpec("frames", "uint8", (-1, FRAME_SIZE, FRAME_SIZE, 3)),),
    outputs=(TensorSpec("features", "float32", (-1, REGIONS, FEATURE_DIMS)),),
    max_batch_size=64,
    dynamic_batching=True,
    frame_axes=(("frames", 0),),
    description="uint8 RGB frames -> L2-normalised region features (normalisation inside the graph)",
)
FEATURE_EXTRACTOR_POOLED = ModelSpec(
    "feature_extractor_pooled",
    inputs=FEATURE_EXTRACTOR.inputs,
    outputs=(*FEATURE_EXTRACTOR.outputs, TensorSpec("pooled", "float32", (-1, POOLED_DIMS))),
    max_batch_size=FEATURE_EXTRACTOR.max_batch_size,
    dynamic_batching=True,
    frame_axes=FEATURE_EXTRACTOR.frame_axes,
    description="feature_extractor (EfficientNet-Lite0) + each frame's pooled pre-classifier feature from the same "
                "CNN pass: what the offline text-video student reads",
)
COARSE_EMBED = ModelSpec(
    "coarse_embed",
    inputs=(_features(), _mask()),
    outputs=(TensorSpec("embedding", "float32", (-1, -1)),),
    description="S^c index_video: one L2-normalised vector per video (C = 1024 official)",
    **_VIDEO_BATCH,
)
FINE_INDEX_BIN = ModelSpec(
    "fine_index_bin",
    inputs=(_features(), _mask()),
    outputs=(TensorSpec("indexed", "uint8", (-1, -1, REGIONS, CODE_BYTES)),),
    description="S^f_B codes packed MSB-first (dnsvr.training.networks.codes), bit 1 = +1; 0 bytes at padded frames",
    **_VIDEO_BATCH,
)
FINE_INDEX_ATT = ModelSpec(
    "fine_index_att",
    inputs=(_features(), _mask()),
    outputs=(TensorSpec("indexed", "float32", (-1, -1, REGIONS, FEATURE_DIMS)),),
    description="S^f_A attention-weighted region features; 0 at padded frames",
    **_VIDEO_BATCH,
)
SELECTOR_INDEX = ModelSpec(
    "selector_index",
    inputs=(_features(), _mask()),
    outputs=(TensorSpec("self_similarity", "float32", (-1, 1)),),
    description="selector index_video: a video's self-similarity score",
    **_VIDEO_BATCH,
)
SELECTOR_SCORE = ModelSpec(
    "selector_score",
    inputs=(TensorSpec("pair_features", "float32", (-1, 3)),),
    outputs=(TensorSpec("scores", "float32", (-1,)),),
    description="selector MLP over rows [query self-sim, target self-sim, coarse similarity] -> (0, 1)",
)


def _fine_similarity(name: str, dtype: str, width: int, what: str) -> ModelSpec:
    return ModelSpec(
        name,
        inputs=(
            TensorSpec("query", dtype, (-1, REGIONS, width)),
            TensorSpec("query_mask", "bool", (-1,)),
            TensorSpec("candidates", dtype, (-1, -1, REGIONS, width)),
            _mask("candidate_mask"),
        ),
        outputs=(TensorSpec("similarity", "float32", (-1,)), TensorSpec("f2f", "float32", (-1, -1, -1))),
        frame_axes=(("query", 0), ("query_mask", 0), ("candidates", 1), ("candidate_mask", 1)),
        description=f"one query against K candidates ({what}); a pair's score is its unpadded score; f2f: its "
                    "frame-to-frame similarities (real frames, not repeated; 0 elsewhere)",
    )


FINE_SIMILARITY_BIN = _fine_similarity("fine_similarity_bin", "uint8", CODE_BYTES, "packed S^f_B codes")
FINE_SIMILARITY_ATT = _fine_similarity("fine_similarity_att", "float32", FEATURE_DIMS, "S^f_A features")

TEXT_ENCODER = ModelSpec(
    "text_encoder",
    inputs=(TensorSpec("token_ids", "int64", (-1, -1)),),
    outputs=(TensorSpec("embedding", "float32", (-1, -1)),),
    max_batch_size=64,
    dynamic_batching=True,
    description="text-video student: CLIP token ids (SOT ... EOT, 0-padded) -> L2-normalised text vector",
)
VIDEO_TEXT_EMBED = ModelSpec(
    "video_text_embed",
    inputs=(TensorSpec("frames", "uint8", (-1, -1, -1, -1, 3)), _mask()),
    outputs=(TensorSpec("embedding", "float32", (-1, -1)),),
    max_batch_size=16,
    dynamic_batching=True,
    frame_axes=(("frames", 1), ("mask", 1)),
    description="text-video student: uint8 RGB crops [B, T <= max_frames, S, S, 3] (CLIP normalisation inside) "
                "-> L2-normalised video vector (AFA head; official mode pads to max_frames inside)",
)
TEXT_ENCODER_MINILM = ModelSpec(
    "text_encoder_minilm",
    inputs=(TensorSpec("input_ids", "int64", (-1, -1)), TensorSpec("attention_mask", "int64", (-1, -1))),
    outputs=(TensorSpec("embedding", "float32", (-1, -1)),),
    max_batch_size=64,
    dynamic_batching=True,
    description="offline text-video student: MiniLM WordPiece ids ([CLS] ... [SEP], 0-padded) and their mask -> "
                "all-MiniLM-L6-v2 sentence vector -> projection -> L2-normalised text vector",
)
VIDEO_TEXT_EMBED_EFFNET = ModelSpec(
    "video_text_embed_effnet",
    inputs=(TensorSpec("frame_features", "float32", (-1, -1, POOLED_DIMS)), _mask()),
    outputs=(TensorSpec("embedding", "float32", (-1, -1)),),
    max_batch_size=16,
    dynamic_batching=True,
    frame_axes=(("frame_features", 1), ("mask", 1)),
    description="offline text-video student: pooled EfficientNet-Lite0 features of <= max_frames frames -> "
                "L2-normalised video vector (TeachCLIP's head, AFA over the real frames)",
)
# A part graph, not served on its own: fine_similarity_bin's cpu_local model computes the frame-to-frame
# similarities with a Hamming kernel and runs this graph (`1/comparator.onnx`) for the learned rest.
FINE_COMPARATOR = ModelSpec(
    "fine_comparator",
    inputs=(TensorSpec("f2f", "float32", (-1, -1, -1)),),
    outputs=(TensorSpec("similarity", "float32", (-1,)),),
    description="f2f [K, Lq, Lt]: similarities of the real frames (not repeated, no padding: one candidate "
                "length per call) -> the fine student's scores (short-video rule, comparator, Chamfer)",
)

NETWORKS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (FEATURE_EXTRACTOR, FEATURE_EXTRACTOR_POOLED, COARSE_EMBED, FINE_INDEX_BIN, FINE_INDEX_ATT,
                 SELECTOR_INDEX, SELECTOR_SCORE, FINE_SIMILARITY_BIN, FINE_SIMILARITY_ATT, TEXT_ENCODER,
                 VIDEO_TEXT_EMBED, TEXT_ENCODER_MINILM, VIDEO_TEXT_EMBED_EFFNET)
}


@dataclass(frozen=True)
class FineKind:
    """A fine-grained student by its one name, "bin" (S^f_B, binary codes) or "att" (S^f_A, attention), and every
    other spelling derived from it: served model names, what a frame stores, official file-name infixes."""

    name: str
    dtype: str  # the indexed representation: packed uint8 bits or float32 features, per region
    width: int  # its last axis: CODE_BYTES or FEATURE_DIMS
    representation: str  # the store's word for it ("binary" / "float")

    @property
    def index_model(self) -> str:
        return f"fine_index_{self.name}"

    @property
    def similarity_model(self) -> str:
        return f"fine_similarity_{self.name}"

    @property
    def official(self) -> str:
        """The official release infix: dns_fg_bin_student.pth, dns_selector_cg-fg_bin.pth."""
        return f"fg_{self.name}"

    @property
    def checkpoint_kind(self) -> str:
        """What `dnsvr.training.load_checkpoint` calls such a checkpoint."""
        return f"fg_{self.name}_student"


FINE_KINDS: dict[str, FineKind] = {
    "bin": FineKind("bin", "uint8", CODE_BYTES, "binary"),
    "att": FineKind("att", "float32", FEATURE_DIMS, "float"),
}


def fine_kind(name: str) -> FineKind:
    """The FineKind called `name` ("bin" or "att"); ValueError naming the choices otherwise."""
    if name not in FINE_KINDS:
        raise ValueError(f"fine student must be one of {', '.join(FINE_KINDS)}, got {name!r}")
    return FINE_KINDS[name]


@dataclass(frozen=True)
class TextKind:
    """A kind of text-video student by its one name (a model pack's `text_kind`) and what serving it takes.

    `encoder` / `video`: its text and video networks; `tokenizer`: what `text_tokenize` runs (it gives exactly the
    encoder's inputs); `extractor`: the frame network of the DnS path, whose outputs also feed this student.  The
    video pipelines carry for it: `from_video` (what video_features adds for it), `video_feed` (the video
    network's inputs <- those tensors, in the dnsvr_embed ensemble).
    """

    name: str
    tokenizer: str
    encoder: ModelSpec
    video: ModelSpec
    extractor: ModelSpec
    from_video: tuple[TensorSpec, ...]
    video_feed: tuple[tuple[str, str], ...]

    @property
    def networks(self) -> tuple[str, str]:
        """Its two served networks: text encoder, video network."""
        return self.encoder.name, self.video.name


TEACHCLIP = TextKind(  # a TeachCLIP / CLIP4Clip checkpoint: CLIP crops of the sampled frames, CLIP BPE tokens
    "teachclip", "CLIP BPE", TEXT_ENCODER, VIDEO_TEXT_EMBED, FEATURE_EXTRACTOR,
    from_video=(TensorSpec("clip_frames", "uint8", (1, -1, -1, -1, 3)), _mask_row("clip_mask")),
    video_feed=(("frames", "clip_frames"), ("mask", "clip_mask")),
)
OFFLINE_MINILM_EFFNET = TextKind(  # the offline student: pooled EfficientNet-Lite0 features, MiniLM WordPiece
    "offline_minilm_effnet", "MiniLM WordPiece", TEXT_ENCODER_MINILM, VIDEO_TEXT_EMBED_EFFNET,
    FEATURE_EXTRACTOR_POOLED,
    from_video=(TensorSpec("text_features", "float32", (1, -1, POOLED_DIMS)), _mask_row("text_mask")),
    video_feed=(("frame_features", "text_features"), ("mask", "text_mask")),
)
TEXT_KINDS: dict[str, TextKind] = {kind.name: kind for kind in (TEACHCLIP, OFFLINE_MINILM_EFFNET)}
TEXT_NETWORKS = tuple(name for kind in TEXT_KINDS.values() for name in kind.networks)


def text_kind(name: str) -> TextKind:
    """The TextKind called `name`; ValueError naming the choices otherwise."""
    if name not in TEXT_KINDS:
        raise ValueError(f"text-video student kind must be one of {', '.join(TEXT_KINDS)}, got {name!r}")
    return TEXT_KINDS[name]


def extractor(text: str | None = None) -> ModelSpec:
    """The frame network the pipelines call for a text-video student of kind `text` (None: none)."""
    return text_kind(text).extractor if text else FEATURE_EXTRACTOR


# Served ensembles / BLS models built on NETWORKS (name -> ModelSpec).  No batch axis (max_batch_size 0):
# one request is one video (or one query); dims are full shapes.  See dnsvr.serving.pipeline_configs.
MAX_TOP_K = 1000
MAX_CANDIDATES = 10_000
MAX_FILTER_BYTES = 4096  # a search filter's UTF-8 size
MAX_TEXT_BYTES = 2048  # a text query's UTF-8 size (the tokenizer keeps 30 tokens of it anyway)


# dnsvr_search's copied segments, S of them over all hits, in hit order (dnsvr.serving.pipelines.localisation):
# segment_hits: the position in video_ids of each segment's hit; segment_times: [query start, query end, target
# start, target end] in seconds; segment_confidences: in [0, 1].
SEGMENT_OUTPUTS = (
    TensorSpec("segment_hits", "int32", (-1,)),
    TensorSpec("segment_times", "float32", (-1, 4)),
    TensorSpec("segment_confidences", "float32", (-1,)),
)


def _video_inputs() -> tuple[TensorSpec, ...]:
    """An encoded video file (`video`) or decoded RGB frames (`frames`): exactly one per request."""
    return (
        TensorSpec("video", "bytes", (1,), optional=True),
        TensorSpec("frames", "uint8", (-1, FRAME_SIZE, FRAME_SIZE, 3), optional=True),
    )


def pipeline_specs(fine: str = "bin", text: str | None = None) -> dict[str, ModelSpec]:
    """The served pipelines for the exported fine student (`bin` or `att`), by name.

    text: the kind of the weights' text-video student (`TEXT_KINDS`), None without one.  With one,
    video_features also gives what its video network reads (`TextKind.from_video`: the TeachCLIP student's
    crops, or the offline student's pooled features), dnsvr_embed its video vector (`text_video`), and the text
    path `text_tokenize` -> `dnsvr_text_embed` is served.
    `dnsvr_search_text` is always served (without a text student it answers with a clear error).
    """
    kind = fine_kind(fine)
    student = text_kind(text) if text else None
    fine_dtype, fine_width = kind.dtype, kind.width
    timings = TensorSpec("timings", "bytes", (1,))
    frame_count = TensorSpec("frame_count", "int64", (1,))
    thumbnail = TensorSpec("thumbnail", "bytes", (1,))  # JPEG, THUMBNAIL_SIZE px, of the middle sampled frame
    text_video = (TensorSpec("text_video", "float32", (1, -1)),) if student else ()
    specs = [
        ModelSpec(
            "video_features",
            inputs=_video_inputs(),
            outputs=(TensorSpec("features", "float32", (1, -1, REGIONS, FEATURE_DIMS)), _mask_row(), frame_count,
                     thumbnail, *(student.from_video if student else ())),
            description=f"BLS: PyAV decode at 1 fps, 224 centre crop (or check given frames), {extractor(text).name} "
                        f"on every {DECODE_CHUNK_FRAMES} frames decoded while the next decode; short clips repeated "
                        "to MIN_FRAMES; a JPEG thumbnail of the middle frame"
                        + ("; the text student's <= max_frames frames, selected uniformly" if student else ""),
        ),
        ModelSpec(
            "video_views",
            inputs=_video_inputs(),
            outputs=(TensorSpec("views", "float32", (1, -1, -1)),
                     TensorSpec("view_codes", fine_dtype, (1, -1, -1, REGIONS, fine_width))),
            description="BLS: the video decoded as video_features does -> the zoomed crops of the pack's crop grid "
                        f"(`index_views`) -> {extractor(text).name} -> coarse_embed and {kind.index_model} once "
                        "per crop: the crop views' S^c vectors [1, B, C] and fine codes [1, B, T, 9, W] an indexed "
                        "video is also stored by (the codes only for an export with --view-codes, else [1, 0, 0, "
                        "9, W]; refused when the repository indexes full frames alone)",
        ),
        ModelSpec(
            "dnsvr_embed",
            inputs=_video_inputs(),
            outputs=(
                TensorSpec("coarse", "float32", (1, -1)),
                TensorSpec("fine", fine_dtype, (1, -1, REGIONS, fine_width)),
                TensorSpec("selector", "float32", (1, 1)),
                frame_count,
                thumbnail,
                *text_video,
                TensorSpec("features", "float32", (1, -1, REGIONS, FEATURE_DIMS)),
                _mask_row(),
            ),
            description="ensemble: video_features -> coarse_embed | fine_index | selector_index"
                        + (f" | {student.video.name}" if student else "")
                        + "; also video_features' features and mask (dnsvr_index embeds segment views from them)",
        ),
        ModelSpec(
            "dnsvr_index",
            inputs=(
                TensorSpec("video_id", "bytes", (1,)),
                *_video_inputs(),
                TensorSpec("source_uri", "bytes", (1,), optional=True),
                TensorSpec("metadata", "bytes", (1,), optional=True),
                TensorSpec("on_duplicate", "bytes", (1,), optional=True),
                TensorSpec("duplicate_threshold", "float32", (1,), optional=True),
            ),
            outputs=(
                frame_count,
                TensorSpec("stored", "bool", (1,)),
                TensorSpec("duplicate_ids", "bytes", (-1,)),
                TensorSpec("duplicate_scores", "float32", (-1,)),
                timings,
            ),
            description="BLS: dnsvr_embed (and video_views beside it, with the pack's crop grid) -> (on_duplicate "
                        "report/skip: the search of dnsvr_search, hits >= the threshold) -> Milvus upsert unless "
                        "skipped (re-indexing an id replaces it)",
        ),
        ModelSpec(
            "dnsvr_search",
            inputs=(
                *_video_inputs(),
                TensorSpec("video_id", "bytes", (1,), optional=True),
                TensorSpec("top_k", "int32", (1,)),
                TensorSpec("rerank", "bytes", (1,), optional=True),
                TensorSpec("candidates", "int32", (1,), optional=True),
                TensorSpec("filter", "bytes", (1,), optional=True),
            ),
            outputs=(
                TensorSpec("video_ids", "bytes", (-1,)),
                TensorSpec("scores", "float32", (-1,)),
                TensorSpec("reranked", "bool", (-1,)),
                TensorSpec("coarse_scores", "float32", (-1,)),
                TensorSpec("selector_scores", "float32", (-1,)),
                *SEGMENT_OUTPUTS,
                timings,
            ),
            description="BLS: embed (or load an indexed id) -> coarse top-K' -> selector -> fine re-rank -> the "
                        "re-ranked hits' copied segments",
        ),
        ModelSpec(
            "dnsvr_search_text",
            inputs=(
                TensorSpec("text", "bytes", (1,)),
                TensorSpec("top_k", "int32", (1,)),
                TensorSpec("filter", "bytes", (1,), optional=True),
            ),
            outputs=(TensorSpec("video_ids", "bytes", (-1,)), TensorSpec("scores", "float32", (-1,)), timings),
            description="BLS: dnsvr_text_embed -> Milvus inner-product top-k over the text-video vectors",
        ),
        ModelSpec(
            "dnsvr_delete",
            inputs=(TensorSpec("video_id", "bytes", (1,)),),
            outputs=(TensorSpec("deleted", "bool", (1,)),),
            description="BLS: remove a video from the store (False when it was absent)",
        ),
        ModelSpec(
            "dnsvr_thumbnails",
            inputs=(TensorSpec("video_ids", "bytes", (-1,)),),
            outputs=(TensorSpec("thumbnails", "bytes", (-1,)),),
            description=f"python: the stored JPEG thumbnails of up to {MAX_TOP_K} indexed videos (empty where an id "
                        "is not indexed or was indexed without one)",
        ),
        ModelSpec(
            "dnsvr_stats",
            inputs=(TensorSpec("request", "bytes", (1,)),),
            outputs=(TensorSpec("report", "bytes", (1,)),),
            description="python: JSON report ('stats': store sizes and model versions; 'health': store reachable)",
        ),
    ]
    if student:
        specs += [
            ModelSpec(
                "text_tokenize",
                inputs=(TensorSpec("text", "bytes", (1,)),),
                outputs=tuple(TensorSpec(t.name, t.dtype, (1, -1)) for t in student.encoder.inputs),
                description=f"python: {student.tokenizer} tokenizer (max_words tokens) -> "
                            f"{student.encoder.name}'s inputs",
            ),
            ModelSpec(
                "dnsvr_text_embed",
                inputs=(TensorSpec("text", "bytes", (1,)),),
                outputs=(TensorSpec("embedding", "float32", (1, -1)),),
                description=f"ensemble: text_tokenize -> {student.encoder.name}",
            ),
        ]
    return {model_spec.name: model_spec for model_spec in specs}


PIPELINES: dict[str, ModelSpec] = pipeline_specs("bin", TEACHCLIP.name)  # every pipeline name (`model()` lookups)


def model(name: str) -> ModelSpec:
    """The spec of a served model (network or pipeline) by name; KeyError naming the known ones."""
    found = NETWORKS.get(name) or PIPELINES.get(name)
    if found is None:
        raise KeyError(f"unknown model '{name}'; known: {sorted(NETWORKS) + sorted(PIPELINES)}")
    return found
