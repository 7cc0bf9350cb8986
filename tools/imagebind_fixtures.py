"""Build the ImageBind golden fixtures (tests/fixtures/imagebind-tiny-*.safetensors) from the upstream code.

Not part of bindguard and not run in CI. Run it with the python of a reference virtual environment that holds the
upstream ImageBind package (imagebind-unofficial 0.1.1, byte-identical to facebookresearch/ImageBind HEAD 53680b0):

    python3 -m venv /tmp/ib
    /tmp/ib/bin/pip install torch==2.13.0
    /tmp/ib/bin/pip install imagebind-unofficial==0.1.1 torch==2.13.0 einops
    /tmp/ib/bin/python tools/imagebind_fixtures.py --out tests/fixtures

The upstream package cannot be imported normally beside CPU torch (its ``__init__`` imports ``data.py``, which needs
``pkg_resources``, torchaudio and torchvision, whose PyPI wheels are CUDA builds). This script therefore registers
bare packages and small stubs in ``sys.modules`` before importing the upstream modules. The stubs live here only;
none of this is library code. Nothing of the upstream code is copied: the script calls the installed package.

What it writes: a tiny, seeded, random-weight ImageBind (every tower 32 wide, 2 blocks, 2 heads; output 32) in the
upstream key layout, deterministic inputs, and the upstream model's output embeddings. See tests/fixtures/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

SEED = 20261130
FORMAT = "bindguard-imagebind-fixture/1"
UPSTREAM = "imagebind-unofficial 0.1.1 (byte-identical imagebind/ to facebookresearch/ImageBind HEAD 53680b0)"
VOCAB_KEPT = 1000  # rows of the text token table kept in the fixture; every text input id is < VOCAB_KEPT
TEXT_SOT, TEXT_EOT = 998, 999  # stand-ins for CLIP's 49406/49407: EOT must be the largest id in each row
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # upstream data.py's image/video normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_SAMPLES = 40_000  # 2.5 s at 16 kHz: upstream's 3 clips of 2 s start at 0, 1/6 s and 1/3 s (overlapping)
VIDEO_UPSAMPLE = 2  # video pixels are stored at 112x112 and nearest-upsampled x2 to 224 (keeps the file < 1 MB)

# The tiny configuration: the names are ImageBindModel's constructor arguments (imagebind_model.py).
TINY_CONFIG: dict[str, Any] = {
    "out_embed_dim": 32,
    "vision_embed_dim": 32,
    "vision_num_blocks": 2,
    "vision_num_heads": 2,
    "text_embed_dim": 32,
    "text_num_blocks": 2,
    "text_num_heads": 2,
    "audio_embed_dim": 32,
    "audio_num_blocks": 2,
    "audio_num_heads": 2,
    "depth_embed_dim": 32,
    "depth_num_blocks": 2,
    "depth_num_heads": 2,
    "thermal_embed_dim": 32,
    "thermal_num_blocks": 2,
    "thermal_num_heads": 2,
    "imu_embed_dim": 32,
    "imu_num_blocks": 2,
    "imu_num_heads": 2,
}
# Left at ImageBindModel's defaults (the same values imagebind_huge uses): video_frames=2, kernel_size=(2,14,14),
# audio_kernel_size=16, audio_stride=10, audio_num_mel_bins=128, audio_target_len=204, depth_kernel_size=16,
# thermal_kernel_size=16, imu_kernel_size=8; drop paths are irrelevant in eval mode.
DEFAULTS_KEPT = {
    "video_frames": 2,
    "kernel_size": [2, 14, 14],
    "audio_kernel_size": 16,
    "audio_stride": 10,
    "audio_num_mel_bins": 128,
    "audio_target_len": 204,
    "depth_kernel_size": 16,
    "thermal_kernel_size": 16,
    "imu_kernel_size": 8,
}

MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")


# --------------------------------------------------------------------------------------------------------------
# import stubs (test-harness only)
# --------------------------------------------------------------------------------------------------------------


def _bare_package(name: str) -> types.ModuleType:
    """Register ``name`` as a package whose ``__init__`` is not run, so its submodules import on their own."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit(f"{name} is not installed in this interpreter ({sys.executable})")
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _stub_module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


class _DropPathStub(nn.Module):
    """Stands in for timm's DropPath; the fixtures only run the model in eval mode, where DropPath is the identity."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_prob > 0:
            raise RuntimeError("the fixture tool's DropPath stub supports eval mode only")
        return x


def install_stubs(waveforms: dict[str, torch.Tensor]) -> None:
    """Make ``imagebind.models.imagebind_model`` and ``imagebind.data`` importable beside CPU torch.

    ``waveforms`` maps fake audio paths to ``(1, N)`` 16 kHz tensors; the ``torchaudio.load`` stub returns them, so
    upstream's ``load_and_transform_audio_data`` runs unchanged on them.
    """
    # imagebind: skip __init__ (it imports data.py); models/ and data.py then import as submodules.
    _bare_package("imagebind")
    _bare_package("imagebind.models")
    # timm.layers imports torchvision; upstream only needs DropPath and trunc_normal_ from it.
    _stub_module("timm")
    _stub_module("timm.layers", DropPath=_DropPathStub, trunc_normal_=nn.init.trunc_normal_)
    # data.py: pkg_resources is gone from setuptools >= 81 (only used for the BPE path, at call time).
    _stub_module("pkg_resources", resource_filename=lambda *_: "")
    # torchaudio: its wheel needs libc10_cuda; compliance.kaldi (the fbank) is pure torch, so load only that file.
    _bare_package("torchaudio")

    def _load(path: str) -> tuple[torch.Tensor, int]:
        return waveforms[path].clone(), 16_000

    def _no_resample(*_: object, **__: object) -> torch.Tensor:
        raise RuntimeError("the fixture waveforms are already at 16 kHz")

    def _no_dct(*_: object, **__: object) -> torch.Tensor:
        raise RuntimeError("mfcc is not used by ImageBind")

    sys.modules["torchaudio"].load = _load  # type: ignore[attr-defined]
    _stub_module("torchaudio.functional", resample=_no_resample, create_dct=_no_dct)
    import torchaudio.compliance.kaldi  # noqa: F401  (the real file)

    # torchvision: its __init__ loads the CUDA-only _C; torchvision.transforms itself is pure python + PIL + torch.
    _bare_package("torchvision")
    import torchvision.transforms  # noqa: F401  (the real package)

    # pytorchvideo: clip_sampling.py is pure python; transforms and encoded_video (video decoding) are not used.
    _bare_package("pytorchvideo")
    _bare_package("pytorchvideo.data")
    _stub_module("pytorchvideo.transforms")
    _stub_module("pytorchvideo.data.encoded_video", EncodedVideo=None)
    import pytorchvideo.data.clip_sampling  # noqa: F401  (the real file)


# --------------------------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------------------------


def randomise(model: nn.Module, generator: torch.Generator) -> dict[str, str]:
    """Re-draw every parameter so no tensor is left at a constant init value (ones, zeros), in place.

    Upstream's init leaves LayerNorms at 1/0 and biases at 0, and its 0.02-std weights make attention near uniform;
    a re-implementation could swap norm_1/norm_2 or drop a bias and still match. Here: LayerNorm weight 1+0.2*N,
    LayerNorm/Linear/Conv/attention biases 0.2*N, Linear/Conv/in_proj weights N/sqrt(fan_in), bias_k/bias_v,
    positional embeddings and class tokens 0.5*N, the token table N. The logit-scale tensors (the learnable text
    one and the fixed buffers of audio/depth/thermal/imu) get +0.1 on their log, so a model that hard-codes them
    fails; the causal text mask buffer is kept. Returns the rule applied to each key.
    """
    from imagebind.models.helpers import LearnableLogitScaling

    modules = dict(model.named_modules())
    state = model.state_dict()
    rules: dict[str, str] = {}
    new: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        owner_name, _, leaf = key.rpartition(".")
        owner = modules[owner_name]
        old = state[key]

        def normal(scale: float, shift: float = 0.0, _shape: torch.Size = old.shape) -> torch.Tensor:
            return torch.randn(_shape, generator=generator) * scale + shift

        if isinstance(owner, LearnableLogitScaling):
            new[key], rules[key] = old + 0.1, "log_logit_scale + 0.1"
        elif leaf == "mask":
            new[key], rules[key] = old, "kept (causal mask)"
        elif isinstance(owner, nn.LayerNorm):
            new[key], rules[key] = (normal(0.2, 1.0), "1+0.2N") if leaf == "weight" else (normal(0.2), "0.2N")
        elif isinstance(owner, nn.Embedding):
            new[key], rules[key] = normal(1.0), "N"
        elif leaf in ("bias", "in_proj_bias"):
            new[key], rules[key] = normal(0.2), "0.2N"
        elif leaf in ("weight", "in_proj_weight") and isinstance(
            owner, nn.Linear | nn.Conv2d | nn.Conv3d | nn.MultiheadAttention
        ):
            fan_in = old[0].numel()
            new[key], rules[key] = normal(1.0 / math.sqrt(fan_in)), f"N/sqrt({fan_in})"
        elif leaf in ("bias_k", "bias_v", "pos_embed", "cls_token"):
            new[key], rules[key] = normal(0.5), "0.5N"
        else:
            raise SystemExit(f"no randomisation rule for {key} {tuple(old.shape)} ({type(owner).__name__})")
    model.load_state_dict(new, strict=True)
    return rules


# --------------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------------


def make_inputs(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The stored raw inputs (see README.md for the stage each one is at)."""
    g = generator
    inputs: dict[str, torch.Tensor] = {}
    # vision: 2 RGB images, uint8, already 224x224 (upstream's Resize(224)+CenterCrop(224) leave them unchanged).
    inputs["vision"] = torch.randint(0, 256, (2, 3, 224, 224), generator=g, dtype=torch.uint8)
    # video: 2 videos x 2 clips x (3, 2 frames, 112, 112) uint8; the model sees them nearest-upsampled to 224.
    small = 224 // VIDEO_UPSAMPLE
    inputs["video"] = torch.randint(0, 256, (2, 2, 3, 2, small, small), generator=g, dtype=torch.uint8)
    # text: 2 x 77 ids < VOCAB_KEPT. Row 0: SOT, 10 ids, EOT at position 11, zero padding (as CLIP's tokenizer pads).
    # Row 1: SOT, 75 ids, EOT at position 76 (a full-length row). EOT (999) is the largest id in each row, so
    # upstream's seq_len = argmax(ids) lands on it, as 49407 does with the real vocabulary.
    text = torch.zeros(2, 77, dtype=torch.int64)
    text[:, 0] = TEXT_SOT
    text[0, 1:11] = torch.randint(1, TEXT_SOT, (10,), generator=g)
    text[0, 11] = TEXT_EOT
    text[1, 1:76] = torch.randint(1, TEXT_SOT, (75,), generator=g)
    text[1, 76] = TEXT_EOT
    inputs["text"] = text
    # audio waveform: 2 mono 2.5 s clips at 16 kHz, a chord plus noise, peak well inside [-1, 1].
    t = torch.arange(AUDIO_SAMPLES, dtype=torch.float64) / 16_000
    tone0 = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 1234.5 * t)
    tone1 = 0.4 * torch.sin(2 * math.pi * 220 * t + 1.0) * torch.exp(-t)
    noise = torch.randn(2, AUDIO_SAMPLES, generator=g, dtype=torch.float64) * 0.05
    inputs["audio_waveform"] = (torch.stack([tone0, tone1]) + noise).float()
    # depth and thermal: 1-channel 224x224 maps at model level (upstream has no preprocessing for them).
    inputs["depth"] = torch.rand(2, 1, 224, 224, generator=g) * 2.0
    inputs["thermal"] = torch.rand(2, 1, 224, 224, generator=g)
    # imu: 6 channels (accelerometer xyz, gyroscope xyz) x 2000 samples at model level.
    inputs["imu"] = torch.randn(2, 6, 2000, generator=g)
    return inputs


def model_inputs(inputs: dict[str, torch.Tensor], data: types.ModuleType, workdir: Path) -> dict[str, torch.Tensor]:
    """The tensors the upstream model's forward receives, made by upstream's own data.py where it has a step."""
    from PIL import Image

    out: dict[str, torch.Tensor] = {}
    # vision: upstream load_and_transform_vision_data on PNG files (Resize 224 bicubic, CenterCrop, ToTensor,
    # Normalize), checked bit-for-bit against the documented formula.
    paths = []
    for i, image in enumerate(inputs["vision"]):
        path = workdir / f"image{i}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(str(path))
    vision = data.load_and_transform_vision_data(paths, "cpu")
    _same(vision, normalise_pixels(inputs["vision"], channel_dim=1), "vision: upstream pipeline vs formula")
    out["vision"] = vision
    # video: nearest x2 upsampling, /255, then upstream's NormalizeVideo on each (3, T, H, W) clip.
    pixels = inputs["video"].repeat_interleave(VIDEO_UPSAMPLE, dim=-2).repeat_interleave(VIDEO_UPSAMPLE, dim=-1)
    normalize_video = data.NormalizeVideo(mean=CLIP_MEAN, std=CLIP_STD)
    clips = [normalize_video(clip.float() / 255.0) for clip in pixels.reshape(-1, *pixels.shape[2:])]
    video = torch.stack(clips).reshape(*pixels.shape[:2], *clips[0].shape)
    _same(video, normalise_pixels(pixels, channel_dim=2), "video: upstream NormalizeVideo vs formula")
    out["video"] = video
    out["text"] = inputs["text"]
    # audio: upstream load_and_transform_audio_data (clip sampler, in-place mean removal, kaldi fbank, pad, normalise).
    audio_paths = [f"wave{i}" for i in range(len(inputs["audio_waveform"]))]
    out["audio"] = data.load_and_transform_audio_data(audio_paths, "cpu")
    for name in ("depth", "thermal", "imu"):
        out[name] = inputs[name]
    return out


def normalise_pixels(pixels: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """The documented formula: (uint8 / 255 - mean) / std per RGB channel, in float32."""
    shape = [1] * pixels.ndim
    shape[channel_dim] = 3
    mean = torch.tensor(CLIP_MEAN).reshape(shape)
    std = torch.tensor(CLIP_STD).reshape(shape)
    return (pixels.float() / 255.0 - mean) / std


def _same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape or not torch.equal(a, b):
        diff = (a - b).abs().max().item() if a.shape == b.shape else float("nan")
        raise SystemExit(f"{what}: not bit-identical (shapes {tuple(a.shape)} {tuple(b.shape)}, max diff {diff})")


# --------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------


def run_model(model: nn.Module, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One forward per modality (video through the vision tower), as upstream's forward dict."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, value in feeds.items():
            key = "vision" if name == "video" else name
            out[name] = model({key: value})[key]
    return out


def conventions() -> dict[str, Any]:
    mean, std = list(CLIP_MEAN), list(CLIP_STD)
    return {
        "vision": {
            "stored": "uint8 (2, 3, 224, 224) RGB pixels: upstream's Resize(224, bicubic)+CenterCrop(224) are identities at this size",
            "model_input": "float32 (2, 3, 224, 224) = (input.float() / 255 - mean[:, None, None]) / std[:, None, None]; "
            "bit-identical to upstream load_and_transform_vision_data on PNGs of these pixels (checked by the tool)",
            "mean": mean,
            "std": std,
            "model_call": "model({'vision': x}); the 4-D batch is repeated to 2 frames by PadIm2Video",
        },
        "video": {
            "stored": "uint8 (B=2, clips=2, 3, T=2, 112, 112) pixels",
            "model_input": "float32 (2, 2, 3, 2, 224, 224) = normalise(input.repeat_interleave(2, -2).repeat_interleave(2, -1)) "
            "with the vision formula (channel dim 2); bit-identical to upstream NormalizeVideo per clip (checked)",
            "model_call": "model({'vision': x}); ndim >= 5 so upstream folds (B, clips), embeds each clip and averages the clips",
        },
        "text": {
            "stored": "int64 (2, 77) token ids, all < 1000 (the fixture keeps the first 1000 rows of the token table)",
            "model_input": "the stored ids as they are",
            "eot": "upstream picks the pooled position as argmax(ids) per row (EOT 49407 is the largest id in the real "
            "vocab). Here 998 stands for SOT and 999 for EOT: row 0 = [998, 10 ids, 999 at position 11, zeros], "
            "row 1 = [998, 75 ids, 999 at position 76]",
        },
        "audio": {
            "stored": "float32 (2, 3, 1, 128, 204): model level, the output of upstream load_and_transform_audio_data "
            "on input.audio_waveform (bit-identical)",
            "model_call": "model({'audio': x}); ndim 5, so the 3 clips are embedded and averaged",
        },
        "audio_waveform": {
            "stored": "float32 (2, 40000): 2.5 s mono at 16 kHz (torchaudio.load would give (1, 40000) per file)",
            "upstream_steps": "ConstantClipsPerVideoSampler(2 s, 3 clips): starts k*(2.5-2)/3 s = 0, 1/6, 1/3 s, sample "
            "slices [int(start*16000), int((start+2)*16000)) = [0,32000), [2666,34666), [5333,37333); per clip "
            "waveform -= waveform.mean() IN PLACE on a view (overlapping clips see earlier clips' means subtracted); "
            "kaldi.fbank(htk_compat=True, 16 kHz, use_energy=False, window_type='hanning', 128 mel bins, dither=0, "
            "frame_length=25 ms, frame_shift=10 ms) -> 198 frames, transposed to (128, frames), zero-padded on the "
            "right to 204; then (x - (-4.268)) / 9.138 (padding included)",
            "result": "exactly input.audio; so expected.audio is also the end-to-end expectation from the waveform",
        },
        "depth": {"stored": "float32 (2, 1, 224, 224) in [0, 2): model level (upstream has no depth preprocessing)"},
        "thermal": {
            "stored": "float32 (2, 1, 224, 224) in [0, 1): model level (upstream has no thermal preprocessing)"
        },
        "imu": {"stored": "float32 (2, 6, 2000) standard normal: model level"},
        "expected": "float32 (2, 32) per modality: upstream model output under torch.no_grad in eval mode, i.e. after "
        "the postprocessor (L2-normalised, times exp(log_logit_scale) clipped at 100 for text/audio/depth/thermal/imu; "
        "vision and video are only normalised)",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    parser.add_argument("--skip-huge", action="store_true", help="skip counting the huge config on the meta device")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(SEED)

    inputs = make_inputs(generator)
    waveforms = {f"wave{i}": w.unsqueeze(0) for i, w in enumerate(inputs["audio_waveform"])}
    install_stubs(waveforms)
    from imagebind import data
    from imagebind.models import imagebind_model

    model = imagebind_model.ImageBindModel(**TINY_CONFIG).eval()
    rules = randomise(model, generator)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}

    with tempfile.TemporaryDirectory() as tmp:
        feeds = model_inputs(inputs, data, Path(tmp))
    expected = run_model(model, feeds)

    # Upstream's in-place mean removal over overlapping clips: how much it changes the fbank here.
    timepoints = data.get_clip_timepoints(data.ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=3), 2.5)
    sampler = [(int(a * 16_000), int(b * 16_000)) for a, b in timepoints]
    if sampler != [(0, 32000), (2666, 34666), (5333, 37333)]:
        raise SystemExit(f"upstream audio clips are not the documented ones: {sampler}")
    clean = []
    for w in inputs["audio_waveform"]:
        clips = [data.waveform2melspec(w[None, a:b].clone(), 16_000, 128, 204) for a, b in sampler]
        clean.append(torch.stack([(c + 4.268) / 9.138 for c in clips]))
    inplace_effect = (torch.stack(clean) - feeds["audio"]).abs().max().item()

    # Float64 reference of the same forward, to size test tolerances.
    model64 = imagebind_model.ImageBindModel(**TINY_CONFIG).eval().double()
    model64.load_state_dict(state)
    expected64 = run_model(model64, {k: (v if v.dtype == torch.int64 else v.double()) for k, v in feeds.items()})
    fp64_gap = {k: (expected[k].double() - expected64[k]).abs().max().item() for k in expected}

    # Truncate the token table and check a model with a 1000-row table reproduces the text output exactly.
    token_key = "modality_preprocessors.text.token_embedding.weight"
    state[token_key] = state[token_key][:VOCAB_KEPT].clone()
    small = imagebind_model.ImageBindModel(**TINY_CONFIG).eval()
    small.modality_preprocessors.text.token_embedding = nn.Embedding(VOCAB_KEPT, TINY_CONFIG["text_embed_dim"])
    small.load_state_dict(state, strict=True)
    _same(run_model(small, {"text": feeds["text"]})["text"], expected["text"], "text with the truncated table")

    stored = {**inputs, "audio": feeds["audio"]}
    write_parts(args.out, state, stored, expected, rules)
    verify(args.out, imagebind_model)
    elapsed = time.perf_counter() - started

    report: dict[str, Any] = {
        "seconds": round(elapsed, 2),
        "fp32_vs_fp64_max_abs": fp64_gap,
        "audio_inplace_mean_effect_max_abs": inplace_effect,
        "state_keys": len(state),
        "state_params_full_vocab": sum(v.numel() for v in model.state_dict().values()),
    }
    if not args.skip_huge:
        # Build on the meta device (no memory); upstream calls .item() on a linspace of drop-path rates while
        # constructing, so that one tensor is made on the CPU.
        linspace = torch.linspace

        def cpu_linspace(*a: Any, **kw: Any) -> torch.Tensor:
            return linspace(*a, **{**kw, "device": "cpu"})

        torch.linspace = cpu_linspace  # type: ignore[assignment]
        try:
            with torch.device("meta"):
                huge = imagebind_model.imagebind_huge()
        finally:
            torch.linspace = linspace  # type: ignore[assignment]
        huge_state = huge.state_dict()
        report["huge_keys"] = len(huge_state)
        report["huge_tensor_elements"] = sum(v.numel() for v in huge_state.values())
        report["huge_parameters"] = sum(p.numel() for p in huge.parameters())
        report["huge_buffers"] = {k: list(v.shape) for k, v in huge.named_buffers()}
    print(json.dumps(report, indent=1))


def verify(out: Path, imagebind_model: types.ModuleType) -> None:
    """Reload the written parts and reproduce every expected output from the files and the documented formulas."""
    from safetensors.torch import load_file

    merged: dict[str, torch.Tensor] = {}
    for part in PARTS:
        tensors = load_file(str(out / f"imagebind-tiny-{part}.safetensors"))
        if set(tensors) & set(merged):
            raise SystemExit(f"{part}: keys repeated across parts")
        merged.update(tensors)
    state = {k.removeprefix("state."): v for k, v in merged.items() if k.startswith("state.")}
    model = imagebind_model.ImageBindModel(**TINY_CONFIG).eval()
    model.modality_preprocessors.text.token_embedding = nn.Embedding(VOCAB_KEPT, TINY_CONFIG["text_embed_dim"])
    model.load_state_dict(state, strict=True)
    video = merged["input.video"].repeat_interleave(VIDEO_UPSAMPLE, dim=-2).repeat_interleave(VIDEO_UPSAMPLE, dim=-1)
    feeds = {
        "vision": normalise_pixels(merged["input.vision"], channel_dim=1),
        "video": normalise_pixels(video, channel_dim=2),
        **{m: merged[f"input.{m}"] for m in ("text", "audio", "depth", "thermal", "imu")},
    }
    got = run_model(model, feeds)
    for name, value in got.items():
        _same(value, merged[f"expected.{name}"], f"{name}: reproduced from the written files")


PARTS: dict[str, Callable[[str], bool]] = {
    # part name -> which state keys it holds; input/expected keys go by modality name.
    "vision": lambda k: ".vision." in k,
    "video": lambda k: False,  # uses the vision part's weights
    "text": lambda k: ".text." in k,
    "audio": lambda k: ".audio." in k,
    "audio-waveform": lambda k: False,  # uses the audio part's weights
    "depth": lambda k: ".depth." in k,
    "thermal": lambda k: ".thermal." in k,
    "imu": lambda k: ".imu." in k,
}
PART_TENSORS = {
    "vision": ["vision"],
    "video": ["video"],
    "text": ["text"],
    "audio": ["audio"],
    "audio-waveform": ["audio_waveform"],
    "depth": ["depth"],
    "thermal": ["thermal"],
    "imu": ["imu"],
}


def write_parts(
    out: Path,
    state: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    rules: dict[str, str],
) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    placed: set[str] = set()
    # One metadata entry holding sorted JSON: safetensors writes its metadata map in random order, so several
    # entries would make every rebuild differ byte-wise.
    info = {
        "format": FORMAT,
        "upstream": UPSTREAM,
        "torch": torch.__version__,
        "seed": SEED,
        "config": {**TINY_CONFIG, **DEFAULTS_KEPT},
        "text_vocab_rows_kept": VOCAB_KEPT,
        "inputs": conventions(),
        "randomisation": sorted(set(rules.values())),
        "parts": [f"imagebind-tiny-{p}.safetensors" for p in PARTS],
        "load": "merge every imagebind-tiny-*.safetensors into one dict; keys are disjoint",
    }
    for part, holds in PARTS.items():
        tensors: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if holds(key):
                tensors[f"state.{key}"] = value
                placed.add(key)
        for name in PART_TENSORS[part]:
            tensors[f"input.{name}"] = inputs[name].contiguous()
            if name in expected:
                tensors[f"expected.{name}"] = expected[name].contiguous()
        path = out / f"imagebind-tiny-{part}.safetensors"
        save_file(tensors, str(path), metadata={"fixture": json.dumps({**info, "part": part}, sort_keys=True)})
        print(f"{path}: {path.stat().st_size:,} bytes, {len(tensors)} tensors")
    missing = set(state) - placed
    if missing:
        raise SystemExit(f"state keys in no part: {sorted(missing)}")


if __name__ == "__main__":
    main()
