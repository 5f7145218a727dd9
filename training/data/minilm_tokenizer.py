"""The WordPiece tokenizer of all-MiniLM-L6-v2: text -> (input_ids, attention_mask) for `networks.minilm.MiniLM`.

The tokenizer is the package's own `tokenizer.json` (BERT uncased: clean-up, lower-case, accents kept as the file
says, BERT pre-tokenisation, WordPiece over a 30522-entry vocabulary, `[CLS] ... [SEP]`) run by HF `tokenizers`;
only its truncation and padding are set here: every text becomes exactly `max_len` ids (truncated with `[SEP]`
kept last, padded with `[PAD]` = 0).  Outputs are numpy int64 (the Triton image has no PyTorch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from dnsvr.training.networks.minilm import read_minilm_archive
from tokenizers import Tokenizer

DEFAULT_MAX_LEN = 32  # query length of the text-video student, as TeachCLIP's 32 CLIP tokens
MAX_TEXT_CHARS = 2048


class MiniLMTokenizer:
    """`encode(texts, max_len)` -> ids `[B, L]` int64 and attention mask `[B, L]` int64 (1 on real tokens)."""

    def __init__(self, tokenizer_json: str | None = None):
        self._tokenizer = Tokenizer.from_str(tokenizer_json or read_minilm_archive().tokenizer_json)
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.pad_id = self._tokenizer.token_to_id("[PAD]")
        self.sep_id = self._tokenizer.token_to_id("[SEP]")
        if self.pad_id is None or self.sep_id is None:
            raise ValueError("the tokenizer has no [PAD] / [SEP] token: not a BERT WordPiece tokenizer")

    def encode(self, texts: Sequence[str], max_len: int = DEFAULT_MAX_LEN) -> tuple[np.ndarray, np.ndarray]:
        """texts -> (input_ids `[B, max_len]` int64, attention_mask `[B, max_len]` int64).

        Raises ValueError for a non-string, an empty (or whitespace-only) text, a text over 2048 characters, no
        texts, or max_len < 2 (room for `[CLS]` and `[SEP]`).
        """
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, got one string (wrap it in a list)")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 ([CLS] and [SEP]), got {max_len}")
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to encode")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"text {i} is a {type(text).__name__}, not a string")
            if not text.strip():
                raise ValueError(f"text {i} is empty")
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"text {i} has {len(text)} characters, more than {MAX_TEXT_CHARS}")
        ids = np.full((len(texts), max_len), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), max_len), dtype=np.int64)
        for row, encoding in enumerate(self._tokenizer.encode_batch(texts)):
            tokens = encoding.ids
            if len(tokens) > max_len:
                tokens = [*tokens[: max_len - 1], self.sep_id]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask
