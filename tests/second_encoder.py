"""A test-only second encoder: proof that generic code never asks which encoder it runs.

``SecondEncoder`` shares nothing with TinyBind: a ViT-style image tower at 224 px (CLIP
normalisation, 32-px patches, class token, pre-norm transformer blocks), a strided-convolution
audio tower at 8 kHz and a byte-level text tower, all in plain torch and randomly initialised from
a seed. ``extra_towers`` adds any of five more, each at its own size, unlike TinyBind's: events
(3 bins, 24 x 40, not square), video (3 frames at 224 px: a one-block ViT per frame, then a
temporal block), depth (1 x 48 x 64) and thermal (1 x 64 x 48) patch towers, and a PointNet over
192 points. Per-modality logit scales follow ImageBind, which learns one per modality. Everything
generic (evaluation, attacks, calibration, save/load, reports) must run on it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bindguard._types import Modality
from bindguard.encoders import Encoder
from bindguard.encoders.base import fingerprint_tensors
from bindguard.errors import ConfigError, UnknownNameError
from bindguard.modalities import (
    InputSpec,
    audio_spec,
    depth_spec,
    event_spec,
    image_spec,
    point_spec,
    thermal_spec,
    video_spec,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
PATCH = 32  # 7 x 7 = 49 patch tokens at 224 px
SAMPLE_RATE = 8_000
AUDIO_SAMPLES = SAMPLE_RATE  # one second
AUDIO_KERNEL, AUDIO_STRIDE = 160, 80  # 20 ms windows, 10 ms hop: 99 tokens per second
TEXT_LENGTH = 32  # UTF-8 bytes; longer strings are cut, shorter ones padded
PAD = 0  # token 0 is padding; byte b is token b + 1
EVENT_BINS, EVENT_HEIGHT, EVENT_WIDTH = 3, 24, 40
EVENT_PATCH = 8  # 3 x 5 = 15 patch tokens
VIDEO_FRAMES = 3  # at IMAGE_SIZE
DEPTH_HEIGHT, DEPTH_WIDTH = 48, 64
THERMAL_HEIGHT, THERMAL_WIDTH = 64, 48
PLANE_PATCH = 8  # 6 x 8 = 48 patch tokens for depth and for thermal
POINTS = 192
# Towers beyond image, audio and text, in the order their weights are drawn (after the base three's).
EXTRA_TOWERS = (Modality.EVENT, Modality.VIDEO, Modality.DEPTH, Modality.THERMAL, Modality.POINT)
# ImageBind learns one scale per modality (its audio scale is fixed at 20); these are distinct on purpose,
# so a test can tell that the losses use the encoder's own scale and not a default.
LOGIT_SCALES = {
    Modality.IMAGE: 50.0,
    Modality.VIDEO: 45.0,
    Modality.AUDIO: 20.0,
    Modality.POINT: 15.0,
    Modality.DEPTH: 25.0,
    Modality.THERMAL: 35.0,
    Modality.EVENT: 30.0,
    Modality.TEXT: 1 / 0.07,
}

EXTRA_SPECS = {
    Modality.EVENT: event_spec(EVENT_BINS, EVENT_HEIGHT, EVENT_WIDTH),
    Modality.VIDEO: video_spec(VIDEO_FRAMES, IMAGE_SIZE, IMAGE_SIZE, mean=CLIP_MEAN, std=CLIP_STD),
    Modality.DEPTH: depth_spec(DEPTH_HEIGHT, DEPTH_WIDTH),
    Modality.THERMAL: thermal_spec(THERMAL_HEIGHT, THERMAL_WIDTH),
    Modality.POINT: point_spec(POINTS),
}


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, W) tokens; ``padding`` (B, N) is True where a token is padding and must not be attended to."""
        batch, tokens, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
        mask = None if padding is None else ~padding[:, None, None, :]  # (B, 1, 1, N), True = attend
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, N, d)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, tokens, width))
        return x + self.mlp(self.norm2(x))


class ImageTower(nn.Module):
    """ViT-style: 32-px patch embedding, class token, learned positions, pre-norm blocks, final norm.

    The patch embedding is a linear map of each flattened patch (a stride-32 convolution in
    another form), which runs backward several times faster on a CPU.
    """

    def __init__(self, width: int, heads: int, depth: int, embed_dim: int):
        super().__init__()
        tokens = (IMAGE_SIZE // PATCH) ** 2
        self.patch = nn.Linear(3 * PATCH * PATCH, width)
        self.class_token = nn.Parameter(0.02 * torch.randn(1, 1, width))
        self.position = nn.Parameter(0.02 * torch.randn(1, 1 + tokens, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, side = x.shape[0], IMAGE_SIZE // PATCH
        patches = x.view(batch, 3, side, PATCH, side, PATCH).permute(0, 2, 4, 1, 3, 5)  # (B, 7, 7, 3, 32, 32)
        tokens = self.patch(patches.reshape(batch, side * side, -1))  # (B, 49, W)
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.position  # (B, 50, W)
        for block in self.blocks:
            tokens = block(tokens)
        return self.projection(self.norm(tokens[:, 0]))  # (B, D)


class AudioTower(nn.Module):
    """Linear front end on overlapping 20 ms windows of the raw waveform, one block, mean pool.

    Differentiable end to end from the samples (a strided Conv1d in another form).
    """

    def __init__(self, width: int, heads: int, embed_dim: int):
        super().__init__()
        tokens = (AUDIO_SAMPLES - AUDIO_KERNEL) // AUDIO_STRIDE + 1
        self.front = nn.Linear(AUDIO_KERNEL, width)
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens, width))
        self.block = Block(width, heads)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        windows = waveform.unfold(1, AUDIO_KERNEL, AUDIO_STRIDE)  # (B, 99, 160)
        tokens = F.gelu(self.front(windows)) + self.position  # (B, 99, W)
        return self.projection(self.norm(self.block(tokens)).mean(1))  # (B, D)


class PatchTower(nn.Module):
    """Square patches over every channel of a (B, C, H, W) plane, learned positions, one block, mean pool.

    Events are such a plane once their bins and polarities are flattened into channels.
    """

    def __init__(self, plane: tuple[int, int, int], patch: int, width: int, heads: int, embed_dim: int):
        super().__init__()
        channels, height, columns = plane
        self.channels, self.rows, self.columns, self.size = channels, height // patch, columns // patch, patch
        self.patch = nn.Linear(channels * patch * patch, width)
        self.position = nn.Parameter(0.02 * torch.randn(1, self.rows * self.columns, width))
        self.block = Block(width, heads)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, size = x.shape[0], self.size
        grid = x.reshape(batch, self.channels, self.rows, size, self.columns, size)  # (B, C, r, p, c, p)
        patches = grid.permute(0, 2, 4, 1, 3, 5).reshape(batch, self.rows * self.columns, -1)  # (B, r*c, C*p*p)
        tokens = self.patch(patches) + self.position  # (B, r*c, W)
        return self.projection(self.norm(self.block(tokens)).mean(1))  # (B, D)


class VideoTower(nn.Module):
    """A one-block ViT on each frame, then learned frame positions, one temporal block, mean pool."""

    def __init__(self, width: int, heads: int, embed_dim: int):
        super().__init__()
        self.frame = ImageTower(width, heads, 1, width)  # its projection is the per-frame token map
        self.time = nn.Parameter(0.02 * torch.randn(1, VIDEO_FRAMES, width))
        self.block = Block(width, heads)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        batch, frames = clips.shape[:2]
        tokens = self.frame(clips.flatten(0, 1)).view(batch, frames, -1) + self.time  # (B, T, W)
        return self.projection(self.norm(self.block(tokens)).mean(1))  # (B, D)


class PointTower(nn.Module):
    """PointNet: one MLP shared by every point, max pool over the points (order-free), norm, projection."""

    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3, width), nn.GELU(), nn.Linear(width, width))
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        features = self.mlp(points)  # (B, N, W)
        return self.projection(self.norm(features.amax(1)))  # (B, D)


class TextTower(nn.Module):
    """UTF-8 bytes (padded or cut to 32), embedding, one block, masked mean pool."""

    def __init__(self, width: int, heads: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(257, width, padding_idx=PAD)
        self.position = nn.Parameter(0.02 * torch.randn(1, TEXT_LENGTH, width))
        self.block = Block(width, heads)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    @staticmethod
    def tokenize(texts: Sequence[str]) -> torch.Tensor:
        """(B, 32) token ids: byte + 1, cut at 32 bytes, padded with 0."""
        ids = torch.full((len(texts), TEXT_LENGTH), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            data = list(text.encode("utf-8"))[:TEXT_LENGTH]
            ids[row, : len(data)] = torch.tensor(data, dtype=torch.long) + 1
        return ids

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenize(texts).to(self.position.device)  # (B, 32)
        padding = ids == PAD
        padding[:, 0] = False  # a row of padding only would attend to nothing
        tokens = self.norm(self.block(self.embedding(ids) + self.position, padding))  # (B, 32, W)
        keep = (~padding).unsqueeze(-1).to(tokens.dtype)  # (B, 32, 1)
        return self.projection((tokens * keep).sum(1) / keep.sum(1))  # (B, D)


class SecondEncoder(Encoder):
    """Random ViT-style image, audio and text towers (and any of five more), frozen; two seeds, two identities.

    Args:
        seed: initialises every weight; the global random state is left as it was.
        extra_towers: towers to add, any of ``EXTRA_TOWERS`` (event, video, depth, thermal, point).
            Their weights are drawn after the base three's, in that order, so adding towers never
            changes the weights of those drawn before them.
        width, heads: of every transformer block (``width`` is also the PointNet's).
        image_depth: image transformer blocks.
        embed_dim: size of the shared embedding.

    Raises:
        ConfigError: for an extra tower that is one of the base three.
        UnknownNameError: for a name that is no modality.
    """

    name = "second"
    modalities = (Modality.IMAGE, Modality.AUDIO, Modality.TEXT)

    def __init__(
        self,
        seed: int = 0,
        *,
        width: int = 64,
        heads: int = 4,
        image_depth: int = 2,
        embed_dim: int = 32,
        extra_towers: Iterable[Modality | str] = (),
    ):
        super().__init__()
        self.seed = seed
        self.embed_dim = embed_dim
        extra = _check_extra_towers(extra_towers)
        self.modalities = tuple(m for m in Modality if m in {*SecondEncoder.modalities, *extra})
        self.specs = {
            Modality.IMAGE: image_spec(IMAGE_SIZE, IMAGE_SIZE, mean=CLIP_MEAN, std=CLIP_STD),
            Modality.AUDIO: audio_spec(AUDIO_SAMPLES, SAMPLE_RATE),
        } | {modality: EXTRA_SPECS[modality] for modality in extra}
        # seeded weights without touching the caller's random state (modules initialise on the CPU generator)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            self.image = ImageTower(width, heads, image_depth, embed_dim)
            self.audio = AudioTower(width, heads, embed_dim)
            self.text = TextTower(width, heads, embed_dim)
            for modality in extra:
                setattr(self, modality.value, _extra_tower(modality, width, heads, embed_dim))
        self.requires_grad_(False)
        self.eval()

    def logit_scale(self, modality: Modality | str) -> float:
        return LOGIT_SCALES[self.check_modality(modality)]

    @property
    def text_identity(self) -> str:
        """Only the text tower decides the semantic centers, so only it keys their cache."""
        return f"{self.name}-text@{fingerprint_tensors(self.text.state_dict())}"

    def input_spec(self, modality: Modality) -> InputSpec:
        modality = self.check_modality(modality)
        if modality not in self.specs:
            raise UnknownNameError(f"{modality.value} is text, not a raw-input modality; it has no input spec")
        return self.specs[modality]

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return self.text(x)
        # normalised inside (CLIP's for image and video, the spec's for depth and thermal): raw inputs outside
        return getattr(self, modality.value)(self.specs[modality].normalize(x))


def _check_extra_towers(extra_towers: Iterable[Modality | str]) -> tuple[Modality, ...]:
    """The asked-for extra towers in ``EXTRA_TOWERS`` order (the order their weights are drawn)."""
    asked = {Modality.parse(name) for name in extra_towers}
    if not asked <= set(EXTRA_TOWERS):
        allowed = ", ".join(m.value for m in EXTRA_TOWERS)
        base = ", ".join(sorted(m.value for m in asked - set(EXTRA_TOWERS)))
        raise ConfigError(f"extra_towers may name {allowed}; got {base}, which the second encoder always has")
    return tuple(m for m in EXTRA_TOWERS if m in asked)


def _extra_tower(modality: Modality, width: int, heads: int, embed_dim: int) -> nn.Module:
    if modality is Modality.VIDEO:
        return VideoTower(width, heads, embed_dim)
    if modality is Modality.POINT:
        return PointTower(width, embed_dim)
    patch = EVENT_PATCH if modality is Modality.EVENT else PLANE_PATCH
    shape = EXTRA_SPECS[modality].shape  # (bins, 2, H, W) for events: bins and polarities become channels
    return PatchTower((math.prod(shape[:-2]), *shape[-2:]), patch, width, heads, embed_dim)
