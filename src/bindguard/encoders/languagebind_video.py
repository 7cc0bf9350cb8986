"""LanguageBind's video blocks: factorised attention over time, then the usual CLIP block over space.

Every encoder layer of the video tower first lets each token position attend across the clip's
frames (a learned per-frame embedding is added first, a pre-norm residual attention follows),
then runs the spatial CLIP block on each frame alone. Frames travel in the batch axis,
``(B * T, tokens, width)``, frame-major within each clip. The LanguageBind checkpoints name the
extra weights ``temporal_embedding``, ``temporal_attn.{q,k,v,out}_proj``, ``temporal_layer_norm1``
and, in the variant that has a temporal feed-forward, ``temporal_mlp.fc{1,2}`` and
``temporal_layer_norm2``; the names here are the same, so state dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def spatial_block(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """A pre-norm CLIP encoder layer (``self_attn``, ``layer_norm1``, ``mlp``, ``layer_norm2``) on (N, L, D) tokens.

    Calls the layer's parts rather than its ``forward``, whose signature and return type change
    between transformers releases; attention modules return ``(output, weights)`` in all of them.
    """
    hidden = hidden + layer.self_attn(layer.layer_norm1(hidden))[0]
    return hidden + layer.mlp(layer.layer_norm2(hidden))


class TemporalLayer(nn.Module):
    """Time attention (and optionally a time MLP) across the frames of a clip, then a spatial CLIP block.

    Args:
        spatial: a CLIP encoder layer; its parts become this layer's ``self_attn``, ``layer_norm1``,
            ``mlp`` and ``layer_norm2``.
        make_attention: builds one more attention module of the same kind (the time attention).
        make_mlp: builds a feed-forward module of the same kind, for checkpoints with a time MLP;
            None: no time MLP (the released video towers have none).
        frames: frames per clip (the length of ``temporal_embedding``).
        width: token width.
        eps: layer-norm epsilon.
    """

    def __init__(
        self,
        spatial: nn.Module,
        make_attention: Callable[[], nn.Module],
        *,
        make_mlp: Callable[[], nn.Module] | None,
        frames: int,
        width: int,
        eps: float,
    ):
        super().__init__()
        self.frames = frames
        self.self_attn, self.layer_norm1 = spatial.self_attn, spatial.layer_norm1
        self.mlp, self.layer_norm2 = spatial.mlp, spatial.layer_norm2
        self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, width))
        self.temporal_attn = make_attention()
        self.temporal_layer_norm1 = nn.LayerNorm(width, eps=eps)
        if make_mlp is not None:
            self.temporal_mlp = make_mlp()
            self.temporal_layer_norm2 = nn.LayerNorm(width, eps=eps)

    def _over_time(self, hidden: torch.Tensor, block: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Apply ``block`` to each token position's sequence of frames: (B*T, L, D) -> (B*T, L, D)."""
        frames_total, tokens, width = hidden.shape
        clips = frames_total // self.frames
        sequences = hidden.view(clips, self.frames, tokens, width).transpose(1, 2).reshape(-1, self.frames, width)
        out = block(sequences)  # (B*L, T, D)
        return out.view(clips, tokens, self.frames, width).transpose(1, 2).reshape(frames_total, tokens, width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B*T, L, D) frame tokens -> (B*T, L, D)."""
        if self.frames > 1:
            hidden = self._over_time(hidden, lambda sequences: sequences + self.temporal_embedding)
        hidden = hidden + self._over_time(
            hidden, lambda sequences: self.temporal_attn(self.temporal_layer_norm1(sequences))[0]
        )
        if hasattr(self, "temporal_mlp"):
            hidden = hidden + self._over_time(
                hidden, lambda sequences: self.temporal_mlp(self.temporal_layer_norm2(sequences))
            )
        return spatial_block(self, hidden)
