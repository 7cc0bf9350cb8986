"""The ImageBind network in plain torch, with parameter names that load the official checkpoint.

Written from the published architecture (not from upstream's code, which is CC-BY-NC-SA): six
towers (vision, text, audio, depth, thermal, IMU), each a patch or token stem with a class token and
learned positions, a pre-norm transformer, a head that projects the class (or end-of-text) token
to the shared space, and a postprocessor that unit-normalises and multiplies by the modality's
logit scale. The module tree mirrors the checkpoint's key layout:
``modality_preprocessors`` / ``modality_trunks`` / ``modality_heads`` / ``modality_postprocessors``,
each a dict by modality key (1,311 keys at the huge size).

Inputs here are the model's own (already normalised images, log-mel clips, token ids); the raw
domain front ends live in ``fbank.py``, ``tokenizer.py`` and ``encoder.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bindguard.encoders.imagebind.config import (
    AUDIO_KERNEL,
    AUDIO_STRIDE,
    CLIP_FRAMES,
    CONTEXT_LENGTH,
    IMAGE_SIZE,
    IMU_CHANNELS,
    IMU_KERNEL,
    IMU_SAMPLES,
    LOGIT_SCALE_INIT,
    MAX_LOGIT_SCALE,
    MEL_BINS,
    MEL_FRAMES,
    PATCH_SIZE,
    PLANE_PATCH_SIZE,
    ImageBindConfig,
)

#: The checkpoint's modality keys, in its order.
MODALITY_KEYS = ("vision", "text", "audio", "depth", "thermal", "imu")
NORM_EPS = 1e-6  # every LayerNorm of trunks and heads; the stems' norms keep torch's default 1e-5
MLP_RATIO = 4
TEXT_MASK = "modality_preprocessors.text.mask"  # a fixed causal mask the checkpoint stores
INIT_STD = 0.02


# --- stems -----------------------------------------------------------------------------------------


class RepeatToClip(nn.Module):
    """(B, 3, H, W) images -> (B, 3, 2, H, W) clips of one repeated frame; 2-frame clips pass unchanged.

    The vision stem is a Conv3d with temporal kernel 2, so an image is seen as a still 2-frame clip.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(2)  # (B, 3, 1, H, W)
        if x.shape[2] == 1:
            x = x.expand(-1, -1, CLIP_FRAMES, -1, -1)
        return x


class PatchStem(nn.Module):
    """A strided projection to tokens (B, N, width), then an optional LayerNorm over the width."""

    def __init__(self, proj: nn.Module, norm_layer: nn.LayerNorm | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x)
        if tokens.dim() > 3:  # a convolution's (B, width, [T,] H, W) grid
            tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, width)
        return tokens if self.norm_layer is None else self.norm_layer(tokens)


class PositionEmbedding(nn.Module):
    """Learned positions of the class token and every patch (held one level down, as the checkpoint names it)."""

    def __init__(self, tokens: int, width: int):
        super().__init__()
        self.pos_embed = nn.Parameter(INIT_STD * torch.randn(1, tokens, width))


class PatchPreprocessor(nn.Module):
    """Patch stem, a class token in front, learned positions added: vision, audio, depth, thermal.

    Args:
        stem_name: the stem's attribute name in the checkpoint (``rgbt_stem`` or ``depth_stem``).
        stem: the patch projection.
        patches: how many patch tokens the stem makes of a valid input.
        width: token width.
    """

    def __init__(self, stem_name: str, stem: PatchStem, patches: int, width: int):
        super().__init__()
        self.stem_name = stem_name
        self.add_module(stem_name, stem)
        self.patches = patches
        self.cls_token = nn.Parameter(INIT_STD * torch.randn(1, 1, width))
        self.pos_embedding_helper = PositionEmbedding(1 + patches, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = getattr(self, self.stem_name)(x)  # (B, N, W)
        if tokens.shape[1] != self.patches:
            raise ValueError(
                f"input {tuple(x.shape)} makes {tokens.shape[1]} patches; the model's positions fit {self.patches}"
            )
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + N, W)
        return tokens + self.pos_embedding_helper.pos_embed


class IMUPreprocessor(nn.Module):
    """(B, 6, 2000) IMU signals cut into 250 windows of 8 samples x 6 channels, projected, class token, positions."""

    def __init__(self, width: int):
        super().__init__()
        self.imu_stem = PatchStem(nn.Linear(IMU_CHANNELS * IMU_KERNEL, width, bias=False), nn.LayerNorm(width))
        self.cls_token = nn.Parameter(INIT_STD * torch.randn(1, 1, width))
        self.pos_embed = nn.Parameter(INIT_STD * torch.randn(1, 1 + IMU_SAMPLES // IMU_KERNEL, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = x.unfold(-1, IMU_KERNEL, IMU_KERNEL).permute(0, 2, 1, 3)  # (B, 250, 6, 8)
        tokens = self.imu_stem(windows.flatten(2))  # (B, 250, W)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embed


def causal_mask(length: int) -> torch.Tensor:
    """(L, L) additive mask: 0 on and below the diagonal, -inf above (a token sees only earlier ones)."""
    return torch.full((length, length), float("-inf")).triu(1)


class TextPreprocessor(nn.Module):
    """(B, 77) token ids -> embeddings plus learned positions; holds the causal mask the trunk uses."""

    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=INIT_STD)
        self.pos_embed = nn.Parameter(0.01 * torch.randn(1, CONTEXT_LENGTH, width))
        self.register_buffer("mask", causal_mask(CONTEXT_LENGTH))  # the checkpoint stores it

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.pos_embed  # (B, 77, W)


def _patch_grid(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def build_preprocessors(config: ImageBindConfig) -> nn.ModuleDict:
    vision, audio = config.vision.width, config.audio.width
    depth, thermal = config.depth.width, config.thermal.width
    vision_proj = nn.Sequential(
        RepeatToClip(),
        nn.Conv3d(
            3,
            vision,
            kernel_size=(CLIP_FRAMES, PATCH_SIZE, PATCH_SIZE),
            stride=(CLIP_FRAMES, PATCH_SIZE, PATCH_SIZE),
            bias=False,
        ),
    )
    audio_proj = nn.Conv2d(1, audio, kernel_size=AUDIO_KERNEL, stride=AUDIO_STRIDE, bias=False)
    plane_patches = (IMAGE_SIZE // PLANE_PATCH_SIZE) ** 2

    def plane_proj(width: int) -> nn.Conv2d:
        return nn.Conv2d(1, width, kernel_size=PLANE_PATCH_SIZE, stride=PLANE_PATCH_SIZE, bias=False)

    return nn.ModuleDict(
        {
            "vision": PatchPreprocessor("rgbt_stem", PatchStem(vision_proj), (IMAGE_SIZE // PATCH_SIZE) ** 2, vision),
            "text": TextPreprocessor(config.vocab_size, config.text.width),
            "audio": PatchPreprocessor(
                "rgbt_stem",
                PatchStem(audio_proj, nn.LayerNorm(audio)),
                _patch_grid(MEL_BINS, AUDIO_KERNEL, AUDIO_STRIDE) * _patch_grid(MEL_FRAMES, AUDIO_KERNEL, AUDIO_STRIDE),
                audio,
            ),
            "depth": PatchPreprocessor(
                "depth_stem", PatchStem(plane_proj(depth), nn.LayerNorm(depth)), plane_patches, depth
            ),
            "thermal": PatchPreprocessor(
                "rgbt_stem", PatchStem(plane_proj(thermal), nn.LayerNorm(thermal)), plane_patches, thermal
            ),
            "imu": IMUPreprocessor(config.imu.width),
        }
    )


# --- trunks ----------------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, MLP_RATIO * width)
        self.fc2 = nn.Linear(MLP_RATIO * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with the parameter names of ``nn.MultiheadAttention`` (which the checkpoint uses).

    Written out rather than calling ``nn.MultiheadAttention`` because that module switches to a
    fused kernel when no gradient is needed, so a forward with and without gradients would differ
    in the last bits; here both take the same path.

    ``bias_kv``: a learned key and value appended to every sequence (audio, depth, thermal, IMU).
    """

    def __init__(self, width: int, heads: int, *, bias_kv: bool):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * width, width)))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.zeros_(self.out_proj.bias)
        self.bias_k = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, 1, width))) if bias_kv else None
        self.bias_v = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, 1, width))) if bias_kv else None

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, width = x.shape
        query, key, value = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # (B, N, W) each
        if self.bias_k is not None and self.bias_v is not None:
            key = torch.cat([key, self.bias_k.expand(batch, 1, width)], dim=1)  # (B, N + 1, W)
            value = torch.cat([value, self.bias_v.expand(batch, 1, width)], dim=1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))  # every token may attend to the extra key

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, t.shape[1], self.heads, -1).transpose(1, 2)  # (B, heads, N, W / heads)

        attended = F.scaled_dot_product_attention(split(query), split(key), split(value), attn_mask=attn_mask)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm_1(x)), then x + mlp(norm_2(x))."""

    def __init__(self, width: int, heads: int, *, bias_kv: bool):
        super().__init__()
        self.attn = Attention(width, heads, bias_kv=bias_kv)
        self.norm_1 = nn.LayerNorm(width, eps=NORM_EPS)
        self.mlp = MLP(width)
        self.norm_2 = nn.LayerNorm(width, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), attn_mask)
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    """A stack of blocks over (B, N, W) tokens; vision alone normalises its tokens first."""

    def __init__(self, width: int, blocks: int, heads: int, *, pre_norm: bool, bias_kv: bool):
        super().__init__()
        # the checkpoint names the first norm `pre_transformer_layer.0`
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(width, eps=NORM_EPS)) if pre_norm else nn.Sequential()
        self.blocks = nn.ModuleList(Block(width, heads, bias_kv=bias_kv) for _ in range(blocks))

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            tokens = block(tokens, attn_mask)
        return tokens


def build_trunks(config: ImageBindConfig) -> nn.ModuleDict:
    def trunk(key: str, *, pre_norm: bool = False, bias_kv: bool = True) -> Trunk:
        tower = config.tower(key)
        return Trunk(tower.width, tower.blocks, tower.heads, pre_norm=pre_norm, bias_kv=bias_kv)

    # vision and text come from OpenCLIP (no key/value biases); the other towers were trained with them
    return nn.ModuleDict(
        {
            "vision": trunk("vision", pre_norm=True, bias_kv=False),
            "text": trunk("text", bias_kv=False),
            "audio": trunk("audio"),
            "depth": trunk("depth"),
            "thermal": trunk("thermal"),
            "imu": trunk("imu"),
        }
    )


# --- heads and postprocessors -------------------------------------------------------------------


class ClassToken(nn.Module):
    """(B, N, W) -> (B, W): the class token, first in the sequence."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]


class TextHead(nn.Module):
    """Norm and project the feature at each row's end-of-text position."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(width, eps=NORM_EPS), nn.Linear(width, out_dim, bias=False))

    def forward(self, tokens: torch.Tensor, end_positions: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        return self.proj(tokens[rows, end_positions])  # (B, D)


def class_token_head(width: int, out_dim: int, *, imu: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.LayerNorm(width, eps=NORM_EPS), ClassToken()]
    if imu:
        # upstream trains with dropout here (slot 2, no weights); inference is the identity
        layers.append(nn.Identity())
    layers.append(nn.Linear(width, out_dim, bias=False))
    return nn.Sequential(*layers)


def build_heads(config: ImageBindConfig) -> nn.ModuleDict:
    out = config.out_dim
    heads: dict[str, nn.Module] = {
        key: class_token_head(config.tower(key).width, out) for key in ("vision", "audio", "depth", "thermal")
    }
    heads["text"] = TextHead(config.text.width, out)
    heads["imu"] = class_token_head(config.imu.width, out, imu=True)
    return nn.ModuleDict({key: heads[key] for key in MODALITY_KEYS})


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class LogitScale(nn.Module):
    """Multiply by exp(log_logit_scale), capped at 100; learned (a parameter) or fixed (a buffer)."""

    def __init__(self, initial: float, *, learnable: bool):
        super().__init__()
        value = torch.tensor(initial).log()  # a 0-d tensor, as in the checkpoint
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale() * x


def build_postprocessors() -> nn.ModuleDict:
    processors: dict[str, nn.Module] = {"vision": Normalize()}  # vision has no scale of its own
    for key in MODALITY_KEYS[1:]:
        processors[key] = nn.Sequential(Normalize(), LogitScale(LOGIT_SCALE_INIT[key], learnable=key == "text"))
    return nn.ModuleDict(processors)


# --- the network ---------------------------------------------------------------------------------


class ImageBindNetwork(nn.Module):
    """All six towers; ``features`` gives a tower's head output, ``embed`` its postprocessed embedding.

    Inputs per modality key: ``vision`` (N, 3, 224, 224) normalised images or (N, 3, 2, 224, 224)
    2-frame clips; ``text`` (N, 77) token ids; ``audio`` (N, 1, 128, 204) normalised log-mel clips;
    ``depth`` and ``thermal`` (N, 1, 224, 224); ``imu`` (N, 6, 2000).
    """

    def __init__(self, config: ImageBindConfig):
        super().__init__()
        self.config = config
        self.modality_preprocessors = build_preprocessors(config)
        self.modality_trunks = build_trunks(config)
        self.modality_heads = build_heads(config)
        self.modality_postprocessors = build_postprocessors()

    def features(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """(N, out_dim) head outputs of one tower, before normalisation and scaling."""
        tokens = self.modality_preprocessors[key](x)  # (N, L, W)
        if key == "text":
            tokens = self.modality_trunks[key](tokens, self.modality_preprocessors[key].mask)
            # the end token has the largest id, so argmax finds its position (upstream's rule too)
            return self.modality_heads[key](tokens, x.argmax(dim=-1))
        return self.modality_heads[key](self.modality_trunks[key](tokens))

    def embed(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """(N, out_dim) unit-norm embeddings times the modality's logit scale (vision: unit norm only)."""
        return self.modality_postprocessors[key](self.features(key, x))

    def logit_scale(self, key: str) -> float | None:
        """exp(log_logit_scale) capped at 100, or None for vision, which has none."""
        processor = self.modality_postprocessors[key]
        if isinstance(processor, Normalize):
            return None
        return float(processor[1].scale())

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream's calling convention: a 5-d or higher input is (B, clips, ...), and its clip embeddings are averaged."""
        outputs = {}
        for key, x in inputs.items():
            if x.dim() >= 5:
                batch, clips = x.shape[:2]
                outputs[key] = self.embed(key, x.flatten(0, 1)).view(batch, clips, -1).mean(1)
            else:
                outputs[key] = self.embed(key, x)
        return outputs
