"""Media files decoded into an encoder's raw domain: fixed, documented and deterministic steps.

- **Images** (Pillow): converted to RGB (or to one channel for thermal), the shorter side resized
  to the target's with bicubic filtering (Pillow's resize is antialiased), then centre-cropped to
  (H, W); values in [0, 1].
- **Depth** (16-bit PNG, NYU-D / SUN-D style): stored values are depth in ``units_per_metre``
  (1000: millimetres); 0 means no reading. Bind encoders take disparity, so we give normalised
  disparity ``clamp(NEAREST_METRES / depth, 0, 1)``: 1 at 0.5 m or nearer, 0.1 at 5 m, 0 where
  there is no reading; then resized and cropped as images (bilinear).
- **Audio** (soundfile): channels averaged to mono, resampled to the encoder's rate with scipy's
  polyphase filter (``resample_poly``, exact for integer ratios), then centre-cropped or
  zero-padded at the end to S samples and clamped to [-1, 1].
- **Video** (PyAV): every frame decoded, T frame indices spaced evenly over the clip
  (``round(linspace(0, frames - 1, T))``), each frame treated as an image.
- **Meshes** (``.off``): N points sampled on the surface with probability proportional to face
  area (a generator seeded from the file's content, so the same mesh gives the same cloud), then
  centred on their mean and scaled into the unit sphere.

Every failure names the file and says what to do with it.
"""

from __future__ import annotations

import hashlib
from math import gcd
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bindguard.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

#: Depth at which normalised disparity reaches 1 (nearer readings saturate).
NEAREST_METRES = 0.5
_FIX = "fix: replace or remove the file, or pass --skip-bad-files to leave such files out"


def _unreadable(path: Path, what: str, error: Exception) -> DataError:
    message = " ".join(str(error).split())[:160] or type(error).__name__
    return DataError(f"{path}: cannot be read as {what} ({message}); {_FIX}")


def _fit(image: Image.Image, height: int, width: int, resample: int) -> Image.Image:
    """Resize the shorter side to the target's, then centre-crop to (height, width)."""
    scale = max(height / image.height, width / image.width)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, resample=resample)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def decode_image(path: Path, channels: int, height: int, width: int) -> torch.Tensor:
    """(channels, H, W) in [0, 1] from an image file: 3 channels RGB, 1 channel luminance."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB" if channels == 3 else "L")
            image = _fit(image, height, width, Image.Resampling.BICUBIC)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as error:
        raise _unreadable(path, "an image", error) from error
    tensor = torch.from_numpy(pixels.copy())
    return tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor[None]


def decode_depth(path: Path, height: int, width: int, *, units_per_metre: float = 1000.0) -> torch.Tensor:
    """(1, H, W) normalised disparity in [0, 1] from a 16-bit depth PNG (see the module docstring)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            if opened.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise ValueError(f"mode {opened.mode}, not a 16-bit depth map")
            depth = np.asarray(opened, dtype=np.float32) / units_per_metre
    except (OSError, ValueError, SyntaxError) as error:
        raise _unreadable(path, "a 16-bit depth PNG", error) from error
    disparity = np.where(depth > 0, np.clip(NEAREST_METRES / np.maximum(depth, 1e-6), 0.0, 1.0), 0.0)
    image = Image.fromarray(disparity.astype(np.float32), mode="F")
    image = _fit(image, height, width, Image.Resampling.BILINEAR)
    return torch.from_numpy(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0).copy())[None]


def decode_audio(path: Path, samples: int, sample_rate: int) -> torch.Tensor:
    """(S,) mono waveform in [-1, 1] at ``sample_rate`` (see the module docstring)."""
    import soundfile
    from scipy.signal import resample_poly

    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, soundfile.LibsndfileError) as error:
        raise _unreadable(path, "audio", error) from error
    if wave.shape[0] == 0:
        raise DataError(f"{path}: the audio has no samples; {_FIX}")
    mono = wave.mean(axis=1)
    if rate != sample_rate:
        divisor = gcd(int(rate), int(sample_rate))
        mono = resample_poly(mono, sample_rate // divisor, int(rate) // divisor).astype(np.float32)
    if mono.shape[0] >= samples:
        start = (mono.shape[0] - samples) // 2
        mono = mono[start : start + samples]
    else:
        mono = np.pad(mono, (0, samples - mono.shape[0]))
    return torch.from_numpy(np.clip(mono, -1.0, 1.0).copy())


def decode_video(path: Path, frames: int, height: int, width: int) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1]: T frames spaced evenly over the clip (see the module docstring)."""
    import av
    from PIL import Image

    try:
        with av.open(str(path)) as container:
            streams = container.streams.video  # a clip written without frames keeps no video stream
            decoded = [frame.to_image() for frame in container.decode(streams[0])] if streams else []
    except (av.error.FFmpegError, OSError, ValueError, IndexError, StopIteration) as error:
        raise _unreadable(path, "a video", error) from error
    if not decoded:
        raise DataError(f"{path}: the video has no frames; {_FIX}")
    chosen = np.round(np.linspace(0, len(decoded) - 1, frames)).astype(int)
    clip = []
    for index in chosen:
        image = _fit(decoded[index].convert("RGB"), height, width, Image.Resampling.BICUBIC)
        clip.append(torch.from_numpy(np.asarray(image, dtype=np.float32).copy() / 255.0).permute(2, 0, 1))
    return torch.stack(clip)


def read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3), triangles (F, 3)) of an OFF mesh; polygons are fanned into triangles.

    ModelNet40's files sometimes run the header into the counts line (``OFF490 518 0``); that is read too.
    """
    try:
        tokens = path.read_text(encoding="ascii").split()
        if not tokens or not tokens[0].startswith("OFF"):
            raise ValueError("no OFF header")
        if tokens[0] != "OFF":
            tokens = ["OFF", tokens[0][3:], *tokens[1:]]
        vertex_count, face_count = int(tokens[1]), int(tokens[2])
        values = tokens[4:]
        vertices = np.asarray(values[: 3 * vertex_count], dtype=np.float64).reshape(vertex_count, 3)
        triangles, position = [], 3 * vertex_count
        for _ in range(face_count):
            corners = int(values[position])
            polygon = [int(v) for v in values[position + 1 : position + 1 + corners]]
            position += 1 + corners
            triangles += [(polygon[0], polygon[k], polygon[k + 1]) for k in range(1, corners - 1)]
        faces = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
        if len(vertices) < vertex_count or not len(faces) or faces.max() >= vertex_count or faces.min() < 0:
            raise ValueError("counts and data disagree")
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as error:
        raise _unreadable(path, "an OFF mesh", error) from error
    return vertices, faces


def mesh_points(path: Path, points: int) -> torch.Tensor:
    """(N, 3) points sampled by area on an OFF mesh, centred and scaled into the unit sphere."""
    vertices, faces = read_off(path)
    corners = vertices[faces]  # (F, 3, 3)
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    if not areas.sum() > 0:
        raise DataError(f"{path}: the mesh has no area to sample points from; {_FIX}")
    seed = int.from_bytes(hashlib.sha256(path.read_bytes()).digest()[:8], "little")
    generator = np.random.default_rng(seed)
    chosen = generator.choice(len(faces), size=points, p=areas / areas.sum())
    first, second = generator.random((2, points, 1))
    flip = first + second > 1  # reflect into the triangle: uniform barycentric coordinates
    first, second = np.where(flip, 1 - first, first), np.where(flip, 1 - second, second)
    a, b, c = corners[chosen, 0], corners[chosen, 1], corners[chosen, 2]
    cloud = a + first * (b - a) + second * (c - a)
    return torch.from_numpy(normalise_cloud(cloud).astype(np.float32))


def normalise_cloud(cloud: np.ndarray) -> np.ndarray:
    """Centred on the mean point and scaled so the farthest point is at distance 1."""
    cloud = cloud - cloud.mean(axis=0, keepdims=True)
    radius = np.linalg.norm(cloud, axis=1).max()
    return cloud / radius if radius > 0 else cloud
