"""open_clip ViT checkpoints as CLIP encoders: converted in memory, tokenized with CLIP's own BPE.

An open_clip file (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``) holds the
weights only. Its keys are renamed into ``transformers.CLIPModel``'s layout (``open_clip_keys``),
and its text is tokenized by the BPE that open_clip and OpenAI's CLIP share (the merges shipped
with ImageBind's tokenizer), so no Hugging Face folder is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from bindguard._optional import require
from bindguard.encoders.checkpoints import read_state_dict
from bindguard.encoders.clip import EXTRA, CLIPEncoder, load_strict
from bindguard.encoders.imagebind.tokenizer import tokenize
from bindguard.encoders.open_clip_keys import convert_open_clip
from bindguard.errors import DataError

PUBLISHED = "e.g. laion/CLIP-ViT-B-32-laion2B-s34B-b79K on huggingface.co (open_clip_model.safetensors)"


class BpeTokenizer:
    """CLIP's BPE in the call shape ``CLIPEncoder`` uses: ``{"input_ids", "attention_mask"}`` of (B, 77).

    Ids are folded into a smaller vocabulary for test models (``imagebind.tokenizer.fold_ids``), so
    the end-of-text token stays the largest id, where open_clip's text tower pools.
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, texts: Sequence[str], **_: object) -> dict[str, torch.Tensor]:
        ids = tokenize(list(texts), vocab_size=self.vocab_size)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}  # causal: padding after EOT is never seen


def create_open_clip(
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    activation: str = "gelu",
    vision_heads: int | None = None,
    text_heads: int | None = None,
    device: str | torch.device = "cpu",
) -> CLIPEncoder:
    """A CLIP encoder from an open_clip ViT checkpoint file, frozen, in eval mode.

    Args:
        checkpoint: the file (or a folder holding one weights file); ``weights`` is the same.
        activation: ``gelu`` (LAION and most open_clip training) or ``quick_gelu`` (OpenAI weights).
        vision_heads, text_heads: attention heads per tower when they differ from open_clip's
            configs (width / 64); the keys cannot tell them.
        device: where the model runs.

    Raises:
        DataError: no checkpoint, an unreadable one, or a tower ``CLIPModel`` cannot represent.
    """
    path = checkpoint if checkpoint is not None else weights
    if path is None:
        raise DataError(
            f"open_clip needs its checkpoint file ({PUBLISHED}); bindguard downloads nothing: fetch it and pass "
            "checkpoint=FILE (CLI: --checkpoint FILE)"
        )
    transformers = require("transformers", extra=EXTRA)
    transformers.utils.logging.set_verbosity_error()
    state, config = convert_open_clip(
        read_state_dict(path, strip_prefixes=()),
        activation=activation,
        vision_heads=vision_heads,
        text_heads=text_heads,
    )
    model = transformers.CLIPModel(config)
    fingerprint = load_strict(model, state, source=str(path))
    tokenizer = BpeTokenizer(int(config.text_config.vocab_size))
    return CLIPEncoder(model, tokenizer, fingerprint=fingerprint).to(device)
