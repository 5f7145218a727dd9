"""Triton python model `text_tokenize`: a text query -> CLIP token ids for the text encoder.

Config parameter `max_words` (the token count, SOT and EOT included: 32 as TeachCLIP).  The work:
`dnsvr.serving.pipelines.text_search.tokenize_request`; the BPE vocabulary ships in the `open_clip_torch`
wheel (`dnsvr.training.data.clip_tokenizer`), loaded once per instance.
"""

from __future__ import annotations

import numpy as np
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.text_search import tokenize_request
from dnsvr.serving.triton.base import PythonModel
from dnsvr.training.data.clip_tokenizer import default_tokenizer


class TritonPythonModel(PythonModel):
    def setup(self) -> None:
        self.max_words = int(self.parameters.get("max_words") or 32)
        default_tokenizer()  # load the vocabulary now, not on the first query

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return tokenize_request(inputs, self.max_words)
