"""Render the handwritten-digit glyphs as images, videos, depth reliefs, thermal maps, event streams and point clouds.

Every renderer is vectorised over a batch of glyphs. The pose of each glyph comes from a seed shared
by all modalities of an instance; colours and noise come from the given generator, so a split
rendered twice with the same seeds is bit-identical.

Pixel maps are drawn on a CANVAS x CANVAS canvas; ``resize`` brings them to another size
(antialiased bilinear), so every size shows the same scene. Videos take any number of frames along
the same sliding path, event tensors any number of time bins, point clouds any number of points.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bindguard.modalities.event import POLARITIES, event_density, time_weights

CANVAS = 32
FRAMES = 4
POINTS = 256
EVENT_BINS = 4
EVENT_SUBSTEPS = 16  # instants at which the simulated sensor compares log intensities along the path
CONTRAST_THRESHOLD = 0.15  # log-intensity change per event, the mean over pixels
THRESHOLD_MISMATCH = 0.1  # relative spread of the threshold across pixels (fixed-pattern noise)
BACKGROUND_RATE = 0.005  # spurious events per pixel, polarity and time bin (background activity)
LOG_OFFSET = 0.1  # log(I + offset): the photoreceptor's response stays finite on black


def _uniform(generator: torch.Generator, count: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def glyph_pose(count: int, pose_seed: int, *, jitter: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotation angle, zoom and (B, 2) offset of each glyph; one seed gives every modality the same pose.

    Sharing the pose is what makes the modalities of one instance a registered pair, as an RGB,
    depth and thermal camera looking at the same scene would be.
    """
    generator = torch.Generator().manual_seed(pose_seed)
    angle = _uniform(generator, count, -0.25, 0.25) * jitter
    scale = 1.3 + _uniform(generator, count, -0.15, 0.15) * jitter  # >1 zooms out: glyph ~24 px
    offset = torch.stack([_uniform(generator, count, -0.12, 0.12), _uniform(generator, count, -0.12, 0.12)], 1)
    return angle, scale, offset * jitter


def place_glyphs(
    glyphs: torch.Tensor,
    pose_seed: int,
    *,
    jitter: float,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw 8x8 glyphs onto a CANVAS x CANVAS canvas with a seeded similarity transform.

    Args:
        glyphs: (B, 8, 8) intensities in [0, 1].
        pose_seed: seed of the poses (see ``glyph_pose``).
        jitter: 0 renders every glyph upright and centred; 1 uses the full pose range.
        shift: optional extra (B, 2) translation in canvas fractions (used for video motion).

    Returns:
        (B, 1, CANVAS, CANVAS) coverage in [0, 1].
    """
    count = glyphs.shape[0]
    angle, scale, offset = glyph_pose(count, pose_seed, jitter=jitter)
    if shift is not None:
        offset = offset + shift
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [count, 1, CANVAS, CANVAS], align_corners=False)
    padded = F.pad(glyphs[:, None], (1, 1, 1, 1))  # zero border so samples outside stay blank
    grid = grid * (8 / 10)  # map the 8 px glyph into the padded 10 px frame
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def _colours(generator: torch.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random foreground and background colours with a luminance gap of at least 0.35."""
    background = torch.rand(count, 3, generator=generator)
    foreground = torch.rand(count, 3, generator=generator)
    weights = torch.tensor([0.299, 0.587, 0.114])
    gap = (foreground - background) @ weights
    sign = torch.where(gap >= 0, 1.0, -1.0)
    foreground = (foreground + sign[:, None] * (0.35 - gap.abs()).clamp(min=0)[:, None]).clamp(0, 1)
    background = (background - sign[:, None] * (0.35 - gap.abs()).clamp(min=0)[:, None]).clamp(0, 1)
    return foreground[:, :, None, None], background[:, :, None, None]


def render_image(
    glyphs: torch.Tensor, pose_seed: int, generator: torch.Generator, *, jitter: float = 1.0
) -> torch.Tensor:
    """Coloured glyph on a coloured background with sensor noise. Returns (B, 3, 32, 32) in [0, 1]."""
    coverage = place_glyphs(glyphs, pose_seed, jitter=jitter)
    foreground, background = _colours(generator, glyphs.shape[0])
    image = background * (1 - coverage) + foreground * coverage
    noise = 0.03 * torch.randn(image.shape, generator=generator)
    return (image + noise).clamp(0, 1)


def render_video(
    glyphs: torch.Tensor, pose_seed: int, generator: torch.Generator, *, jitter: float = 1.0, frames: int = FRAMES
) -> torch.Tensor:
    """The glyph sliding across the frame in a random direction.

    Any number of frames samples the same path: evenly spaced positions from the start of the
    FRAMES-frame path to its end (one frame: its midpoint).

    Returns:
        (B, frames, 3, 32, 32) in [0, 1].
    """
    count = glyphs.shape[0]
    direction = _uniform(generator, count, 0, 2 * math.pi)
    velocity = torch.stack([torch.cos(direction), torch.sin(direction)], 1) * 0.1  # canvas fraction per FRAMES step
    foreground, background = _colours(generator, count)
    clip = []
    for index in range(frames):
        # in steps of the FRAMES-frame path, centred; exactly index - (FRAMES - 1) / 2 when frames == FRAMES
        step = (index - (frames - 1) / 2) * (FRAMES - 1) / (frames - 1) if frames > 1 else 0.0
        shift = velocity * step  # same pose every frame; only the shift moves
        coverage = place_glyphs(glyphs, pose_seed, jitter=jitter, shift=shift)
        frame = background * (1 - coverage) + foreground * coverage
        clip.append(frame + 0.03 * torch.randn(frame.shape, generator=generator))
    return torch.stack(clip, 1).clamp(0, 1)


def render_events(
    glyphs: torch.Tensor, pose_seed: int, generator: torch.Generator, *, jitter: float = 1.0, bins: int = EVENT_BINS
) -> torch.Tensor:
    """What an event camera reports of the video's sliding glyph, as event densities.

    The glyph moves along the video's path (``render_video``), seen in grey levels at
    ``EVENT_SUBSTEPS`` instants. Each pixel keeps the log intensity of its last event; whenever the
    current one differs by ``n`` whole thresholds, it fires ``|n|`` events of that sign and moves its
    reference by ``n`` thresholds (the DVS pixel model). Thresholds vary across pixels
    (``THRESHOLD_MISMATCH``) and spurious events arrive at ``BACKGROUND_RATE``. Events between two
    instants are placed at their midpoint and binned as ``modalities.event.events_to_tensor`` bins
    times; the counts become densities by ``event_density``.

    Returns:
        (B, bins, 2, 32, 32) in [0, 1].
    """
    count = glyphs.shape[0]
    direction = _uniform(generator, count, 0, 2 * math.pi)
    velocity = torch.stack([torch.cos(direction), torch.sin(direction)], 1) * 0.1
    foreground, background = _colours(generator, count)
    luminance = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    foreground, background = (
        (foreground * luminance).sum(1, keepdim=True),
        (background * luminance).sum(1, keepdim=True),
    )
    threshold = CONTRAST_THRESHOLD * (
        1 + THRESHOLD_MISMATCH * torch.randn(count, 1, CANVAS, CANVAS, generator=generator)
    )
    threshold = threshold.clamp(min=CONTRAST_THRESHOLD / 3)
    counts = torch.zeros(count, bins, POLARITIES, CANVAS, CANVAS)
    reference = None
    for index in range(EVENT_SUBSTEPS):
        step = (index / (EVENT_SUBSTEPS - 1) - 0.5) * (FRAMES - 1)  # the video's path, start to end
        coverage = place_glyphs(glyphs, pose_seed, jitter=jitter, shift=velocity * step)
        level = torch.log(background * (1 - coverage) + foreground * coverage + LOG_OFFSET)
        if reference is None:
            reference = level
            continue
        fired = torch.trunc((level - reference) / threshold)  # (B, 1, H, W) signed event counts
        reference = reference + fired * threshold
        tau = torch.tensor((index - 0.5) / (EVENT_SUBSTEPS - 1) * (bins - 1))
        lower, lower_weight, upper_weight = time_weights(tau, bins)
        signed = torch.cat([fired.clamp(min=0), (-fired).clamp(min=0)], 1)  # (B, 2, H, W): ON, OFF
        counts[:, lower] += lower_weight * signed
        counts[:, min(int(lower) + 1, bins - 1)] += upper_weight * signed
    counts += torch.poisson(torch.full(counts.shape, BACKGROUND_RATE), generator=generator)
    return torch.stack([event_density(sample) for sample in counts])


def resize(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (..., C, h, w) pixel maps to (..., C, height, width), antialiased bilinear, clamped to [0, 1].

    Maps already of that size are returned as they are (so the native size stays bit-identical).
    """
    if tuple(maps.shape[-2:]) == (height, width):
        return maps
    flat = maps.reshape(-1, *maps.shape[-3:])  # (B * T, C, h, w)
    resized = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return resized.reshape(*maps.shape[:-2], height, width).clamp(0, 1)


def _blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    positions = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-(positions**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    maps = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(maps, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def render_depth(
    glyphs: torch.Tensor, pose_seed: int, generator: torch.Generator, *, jitter: float = 1.0
) -> torch.Tensor:
    """Normalised disparity of the glyph embossed on a tilted plane. Returns (B, 1, 32, 32) in [0, 1]."""
    count = glyphs.shape[0]
    coverage = place_glyphs(glyphs, pose_seed, jitter=jitter)
    ramp = torch.linspace(-1, 1, CANVAS)
    tilt_x, tilt_y = _uniform(generator, count, -0.1, 0.1), _uniform(generator, count, -0.1, 0.1)
    plane = (
        0.25
        + tilt_x[:, None, None, None] * ramp.view(1, 1, 1, -1)
        + tilt_y[:, None, None, None] * ramp.view(1, 1, -1, 1)
    )
    height = _uniform(generator, count, 0.35, 0.6)[:, None, None, None]
    relief = _blur(coverage, 1.0) * height
    noise = 0.01 * torch.randn(coverage.shape, generator=generator)
    return (plane + relief + noise).clamp(0, 1)


def render_thermal(
    glyphs: torch.Tensor, pose_seed: int, generator: torch.Generator, *, jitter: float = 1.0
) -> torch.Tensor:
    """The glyph as a warm object diffusing heat over a cool, noisy background. Returns (B, 1, 32, 32)."""
    count = glyphs.shape[0]
    coverage = place_glyphs(glyphs, pose_seed, jitter=jitter)
    ambient = _uniform(generator, count, 0.1, 0.3)[:, None, None, None]
    warmth = _uniform(generator, count, 0.45, 0.7)[:, None, None, None]
    heat = _blur(coverage, 1.6) * warmth + 0.15 * _blur(torch.rand(coverage.shape, generator=generator), 3.0)
    noise = 0.02 * torch.randn(coverage.shape, generator=generator)
    return (ambient + heat + noise).clamp(0, 1)


def render_points(
    glyphs: torch.Tensor, pose_seed: int, generator: torch.Generator, *, jitter: float = 1.0, point_count: int = POINTS
) -> torch.Tensor:
    """Points sampled on the glyph extruded into a thin slab, centred in the unit sphere.

    Returns:
        (B, point_count, 3) xyz with every norm at most 1.
    """
    count = glyphs.shape[0]
    weights = glyphs.reshape(count, 64) + 1e-6
    cells = torch.multinomial(weights, point_count, replacement=True, generator=generator)  # (B, N)
    rows, cols = (cells // 8).float(), (cells % 8).float()
    x = cols + torch.rand(count, point_count, generator=generator)
    y = 8 - (rows + torch.rand(count, point_count, generator=generator))  # image rows grow downwards
    z = (torch.rand(count, point_count, generator=generator) - 0.5) * 1.5
    points = torch.stack([x, y, z], -1) - 4.0  # (B, N, 3)
    angle, _, _ = glyph_pose(count, pose_seed, jitter=jitter)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zeros, ones = torch.zeros_like(angle), torch.ones_like(angle)
    rotation = torch.stack(
        [torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1), torch.stack([zeros, zeros, ones], 1)], 1
    )
    points = points @ rotation.transpose(1, 2)
    points = points - points.mean(dim=1, keepdim=True)
    radius = points.norm(dim=-1).amax(dim=1).clamp(min=1e-6)
    return points / radius[:, None, None] * 0.95
