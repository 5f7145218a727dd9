"""The CLIP tokenizer with the token ids of the official TeachCLIP / CLIP4Clip loaders.

Rule (TeachCLIP `modules/tokenization_clip.py:Tokenizer._get_text`):
  1. clean-up: `ftfy.fix_text`, `html.unescape` twice, strip, collapse whitespace runs to one space, lower-case;
  2. pre-tokenisation with the CLIP regex (the two special tokens, English contractions, runs of letters, single
     digits, runs of other non-space characters);
  3. byte-level BPE (each UTF-8 byte mapped to a printable character, `</w>` marks the end of a word) with the
     vocabulary `bpe_simple_vocab_16e6.txt.gz`; a literal `<|startoftext|>` / `<|endoftext|>` in a caption becomes
     the special id;
  4. `input_ids = [SOT] + bpe[:max_words - 2] + [EOT]`, zero-padded to `max_words`; `attention_mask` is 1 on SOT..EOT
     (both numpy int64: the Triton image has no PyTorch; `torch.from_numpy` for the student).

The vocabulary file is the one that ships inside the `open_clip_torch` wheel, found through the distribution's file
list (`open_clip` itself is never imported: it imports torchvision) and checked against its sha256.  The BPE merges
run in HF `tokenizers` (its BPE model with `end_of_word_suffix="</w>"`), which reproduces the official ids of every
golden caption; clean-up and pre-tokenisation stay in Python with `ftfy` and `regex`, as in the official code.
The mojibake repairs of `ftfy` are version-dependent: TeachCLIP pins ftfy 6.2.0.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex
from dnsvr.training import paths
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import BPE

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_DISTRIBUTION = "open_clip_torch"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = 49406
EOT_ID = 49407
PAD_ID = 0
DEFAULT_MAX_WORDS = 32  # TeachCLIP / CLIP4Clip max_words
N_MERGES = 49152 - 256 - 2  # merges used by CLIP: vocabulary 49408 = 2 * 256 bytes + merges + 2 specials
END_OF_WORD = "</w>"

CLIP_PRETOKEN_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE_RUN = regex.compile(r"\s+")


class VocabularyError(RuntimeError):
    """The BPE vocabulary file is missing or is not the expected file."""


def byte_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character table of byte-level BPE (GPT-2 / CLIP), 256 entries.

    Printable Latin-1 bytes map to themselves; the others (controls, space, ...) to code points from 256 on.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def clean_caption(text: str) -> str:
    """The official clean-up: ftfy, HTML entities (twice), whitespace collapsed and stripped, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE_RUN.sub(" ", text).strip().lower()


def find_vocabulary_file() -> Path:
    """Path of `bpe_simple_vocab_16e6.txt.gz` inside the installed `open_clip_torch` distribution."""
    return paths.distribution_file(VOCAB_DISTRIBUTION, VOCAB_FILENAME, "the CLIP BPE vocabulary", VocabularyError)


def read_merges(path: Path) -> list[tuple[str, str]]:
    """The CLIP BPE merges of a vocabulary file, in rank order, after checking its sha256."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != VOCAB_SHA256:
        raise VocabularyError(f"{path}: sha256 {digest}, expected {VOCAB_SHA256} (not CLIP's BPE vocabulary)")
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    pairs = (line.split() for line in lines[1 : N_MERGES + 1])  # line 0 is a version header
    return [(first, second) for first, second in pairs]


class CLIPTokenizer:
    """CLIP's byte-level BPE tokenizer with the TeachCLIP / CLIP4Clip loaders' ids (see the module docstring)."""

    def __init__(self, vocabulary_path: str | Path | None = None):
        path = Path(vocabulary_path) if vocabulary_path is not None else find_vocabulary_file()
        merges = read_merges(path)
        self.byte_encoder = byte_to_unicode()
        symbols = list(self.byte_encoder.values())
        tokens = symbols + [s + END_OF_WORD for s in symbols] + [a + b for a, b in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.vocabulary: dict[str, int] = {token: i for i, token in enumerate(tokens)}
        self.id_to_token = tokens
        self._bpe = Tokenizer(BPE(vocab=self.vocabulary, merges=merges, end_of_word_suffix=END_OF_WORD))
        self._bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (SOT_TOKEN, EOT_TOKEN)])

    def pretokenize(self, text: str) -> list[str]:
        """Cleaned, regex-split, byte-encoded words of a caption (the units BPE runs on)."""
        words = CLIP_PRETOKEN_PATTERN.findall(clean_caption(text))
        return ["".join(self.byte_encoder[b] for b in word.encode("utf-8")) for word in words]

    def bpe_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """BPE ids of each caption: no SOT/EOT added, no truncation."""
        words = [self.pretokenize(_checked_text(text)) for text in texts]
        encoded = self._bpe.encode_batch([w for w in words if w], is_pretokenized=True, add_special_tokens=False)
        results = iter(encoded)
        return [next(results).ids if w else [] for w in words]

    def encode(self, texts: str | Sequence[str], max_words: int = DEFAULT_MAX_WORDS) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (input_ids `[N, max_words]` int64, attention_mask `[N, max_words]` int64).

        `input_ids` = SOT, the first `max_words - 2` BPE ids, EOT, then 0; the text encoder reads the position of
        the first EOT (`argmax`).  A single string gives N = 1.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 2:
            raise ValueError(f"max_words must be an int >= 2 (room for SOT and EOT), got {max_words!r}")
        input_ids = np.full((len(texts), max_words), PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((len(texts), max_words), dtype=np.int64)
        for row, ids in enumerate(self.bpe_ids(texts)):
            tokens = [SOT_ID, *ids[: max_words - 2], EOT_ID]
            input_ids[row, : len(tokens)] = tokens
            attention_mask[row, : len(tokens)] = 1
        return input_ids, attention_mask


def _checked_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"captions must be str, got {type(text).__name__}: {text!r:.80}")
    return text


@lru_cache(maxsize=1)
def default_tokenizer() -> CLIPTokenizer:
    """The tokenizer on the vocabulary of the installed `open_clip_torch` (built once per process)."""
    return CLIPTokenizer()


def encode(texts: str | Sequence[str], max_words: int = DEFAULT_MAX_WORDS) -> tuple[np.ndarray, np.ndarray]:
    """`default_tokenizer().encode(texts, max_words)`: (input_ids, attention_mask), both `[N, max_words]` int64."""
    return default_tokenizer().encode(texts, max_words)
