"""ImageBind's sizes as data: one frozen record per tower, the official huge sizes and a tiny test size.

Only widths, depths, head counts, the shared output size and the text vocabulary vary; the input
geometry below is fixed by the official checkpoint (its position embeddings are sized for it).
"""

from __future__ import annotations

from dataclasses import dataclass

from bindguard.errors import ConfigError, UnknownNameError

# Input geometry of every ImageBind checkpoint.
IMAGE_SIZE = 224
PATCH_SIZE = 14  # vision patches: (2, 14, 14) voxels of a 2-frame clip
CLIP_FRAMES = 2  # the vision stem's temporal kernel; an image is repeated to 2 frames
PLANE_PATCH_SIZE = 16  # depth and thermal patches
MEL_BINS = 128
MEL_FRAMES = 204  # spectrogram frames per audio clip after zero padding
AUDIO_KERNEL, AUDIO_STRIDE = 16, 10  # overlapping spectrogram patches: 12 x 19 of them
IMU_CHANNELS, IMU_SAMPLES, IMU_KERNEL = 6, 2000, 8
CONTEXT_LENGTH = 77  # text tokens
CLIP_VOCAB_SIZE = 49408  # the CLIP BPE vocabulary: 256 bytes x 2, 48,894 merges, start and end
# Each postprocessor's logit scale at initialisation. Text's is learned (CLIP's 1/0.07 to start); the
# others are fixed, but the checkpoint carries them anyway (as buffers). Vision has none.
LOGIT_SCALE_INIT = {"text": 1 / 0.07, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}
MAX_LOGIT_SCALE = 100.0  # the postprocessors clamp exp(log_logit_scale) here


@dataclass(frozen=True)
class TowerConfig:
    """One modality's transformer: token width, number of blocks, attention heads."""

    width: int
    blocks: int
    heads: int

    def __post_init__(self) -> None:
        for name in ("width", "blocks", "heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"tower {name} must be an integer >= 1, got {value!r}")
        if self.width % self.heads:
            raise ConfigError(f"tower width {self.width} must be divisible by its {self.heads} attention heads")


@dataclass(frozen=True)
class ImageBindConfig:
    """The sizes of every tower and of the shared embedding."""

    name: str
    vision: TowerConfig
    text: TowerConfig
    audio: TowerConfig
    depth: TowerConfig
    thermal: TowerConfig
    imu: TowerConfig
    out_dim: int = 1024
    vocab_size: int = CLIP_VOCAB_SIZE

    def __post_init__(self) -> None:
        if isinstance(self.out_dim, bool) or not isinstance(self.out_dim, int) or self.out_dim < 1:
            raise ConfigError(f"out_dim must be an integer >= 1, got {self.out_dim!r}")
        # the end token must stay the largest id: the text head finds it with argmax
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 3:
            raise ConfigError(f"vocab_size must be an integer >= 3 (start, end and one word), got {self.vocab_size!r}")

    def tower(self, modality: str) -> TowerConfig:
        return getattr(self, modality)


#: The official ``imagebind_huge`` sizes (1,311 state-dict keys).
HUGE = ImageBindConfig(
    name="huge",
    vision=TowerConfig(1280, 32, 16),
    text=TowerConfig(1024, 24, 16),
    audio=TowerConfig(768, 12, 12),
    depth=TowerConfig(384, 12, 8),
    thermal=TowerConfig(768, 12, 12),
    imu=TowerConfig(512, 6, 8),
    out_dim=1024,
)


def tiny() -> ImageBindConfig:
    """Every tower 32 wide, 2 blocks, 2 heads; a 32-d embedding and a 1,000-token vocabulary (tests)."""
    tower = TowerConfig(32, 2, 2)
    return ImageBindConfig(
        name="tiny",
        vision=tower,
        text=tower,
        audio=tower,
        depth=tower,
        thermal=tower,
        imu=tower,
        out_dim=32,
        vocab_size=1000,
    )


CONFIGS = {"huge": lambda: HUGE, "tiny": tiny}


def get_config(name: str) -> ImageBindConfig:
    """``"huge"`` or ``"tiny"``.

    Raises:
        UnknownNameError: for another name.
    """
    if name not in CONFIGS:
        raise UnknownNameError(f"unknown ImageBind config {name!r}; allowed: {', '.join(CONFIGS)}")
    return CONFIGS[name]()
