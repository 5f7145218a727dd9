"""What `dnsvr_search_text` and `text_tokenize` do, free of Triton: text query -> vector -> Milvus top-k.

    checked_query(text) -> the text, or BadRequest (empty, only whitespace, over spec.MAX_TEXT_BYTES)
    tokenizer(kind, max_words) -> text -> the text encoder's inputs, each int64 [1, max_words]:
        "teachclip": {"token_ids"} (CLIP BPE, the official loaders' ids); "offline_minilm_effnet": {"input_ids",
        "attention_mask"} (MiniLM WordPiece, [CLS] ... [SEP], truncated with [SEP] kept)
    tokenize_request(inputs, tokenize) -> tokenize(the request's checked text)
    search_text_request(inputs, stores, embed_text, consistency) -> {"video_ids": BYTES [n], "scores": float32 [n],
                                                                     "timings": BYTES [1] JSON ms}

Request of dnsvr_search_text: text BYTES [1], top_k int32 [1], filter BYTES [1] (optional, a Milvus expression
over the per-video fields, as in dnsvr_search).  `embed_text(text)` is dnsvr_text_embed (tokenizer + text
encoder: a unit vector [D]); None when the served model pack has no text-video student, which is answered with
`NoTextStudent`, as a store without text-video vectors is (`NoTextVectors`): the client raises NoTextSearch.
Scores are cosines of the text and video vectors of the student (TeachCLIP's evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs, Stopwatch, bytes_array, shortened
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.video_store import NoTextVectors, StoreError, StoreUnavailable


class NoTextStudent(RuntimeError):
    """The served model pack has no text-video student: text search cannot answer."""

    tag = "no_text_search"  # how a served pipeline reports it (dnsvr.client.errors)


def checked_query(text: str | None) -> str:
    """A text query as given, once known to be non-empty (after stripping whitespace) and within MAX_TEXT_BYTES."""
    if text is None or not text.strip():
        raise BadRequest("the text query is empty")
    size = len(text.encode("utf-8"))
    if size > spec.MAX_TEXT_BYTES:
        raise BadRequest(f"the text query is {size} bytes of UTF-8, the maximum is {spec.MAX_TEXT_BYTES}")
    return text


Tokenize = Callable[[str], dict[str, np.ndarray]]


def _clip_tokenizer(max_words: int) -> Tokenize:
    from dnsvr.training.data.clip_tokenizer import default_tokenizer, encode

    default_tokenizer()  # the vocabulary is read now, not on the first query

    def tokenize(text: str) -> dict[str, np.ndarray]:
        return {"token_ids": encode(text, max_words)[0]}

    return tokenize


def _minilm_tokenizer(max_words: int) -> Tokenize:
    from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer

    wordpiece = MiniLMTokenizer()

    def tokenize(text: str) -> dict[str, np.ndarray]:
        input_ids, attention_mask = wordpiece.encode([text], max_words)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    return tokenize


TOKENIZERS: dict[str, Callable[[int], Tokenize]] = {
    spec.TEACHCLIP.name: _clip_tokenizer,
    spec.OFFLINE_MINILM_EFFNET.name: _minilm_tokenizer,
}


def tokenizer(kind: str, max_words: int) -> Tokenize:
    """The tokenizer of a text-video student of kind `kind` (loaded now): text -> its text encoder's inputs."""
    return TOKENIZERS[kind](max_words)


def tokenize_request(inputs: RequestInputs, tokenize: Tokenize) -> dict[str, np.ndarray]:
    """`text_tokenize`: one request's text, checked (`checked_query`), -> `tokenize(text)`."""
    return tokenize(checked_query(inputs.text("text", required=True)))


def search_text_request(inputs: RequestInputs, stores: ServiceStore,
                        embed_text: Callable[[str], np.ndarray] | None,
                        consistency: str = "Session") -> dict[str, np.ndarray]:
    """One `dnsvr_search_text` request -> its outputs (module docstring)."""
    watch = Stopwatch()
    text = checked_query(inputs.text("text", required=True))
    top_k = inputs.integer("top_k")
    if not 1 <= top_k <= spec.MAX_TOP_K:
        raise BadRequest(f"top_k must be in 1..{spec.MAX_TOP_K}, got {top_k}")
    expression = inputs.text("filter") or None
    if expression is not None and len(expression.encode("utf-8")) > spec.MAX_FILTER_BYTES:
        raise BadRequest(f"filter is {len(expression.encode('utf-8'))} bytes, the maximum is {spec.MAX_FILTER_BYTES}")
    if embed_text is None:
        raise NoTextStudent("the served model pack has no text-video student; export one with "
                            "`dnsvr export --weights ... --text-weights TEACHCLIP_CHECKPOINT` or a pack with one")
    with watch.stage("embed"):
        query = embed_text(text)
    store = stores.existing()
    if store is None:
        hits_ids, scores = [], np.zeros(0, np.float32)
    else:
        try:
            with watch.stage("search"):
                hits = store.search_text(query, top_k, expression, consistency)
        except (StoreUnavailable, NoTextVectors):
            raise
        except StoreError as error:
            if expression is None:
                raise
            raise BadRequest(f"filter {shortened(expression)} was rejected by the store: "
                             f"{shortened(str(error))}") from None
        hits_ids, scores = hits.ids, hits.scores
    return {"video_ids": bytes_array(list(hits_ids)), "scores": scores.astype(np.float32),
            "timings": watch.report()}
