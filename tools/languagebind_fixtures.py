"""Write tiny upstream LanguageBind fixtures: tests/fixtures/languagebind-tiny-<tower>.safetensors.

Not run in CI. It needs the reference environment, where the upstream model code runs:

    python3 -m venv /tmp/L && /tmp/L/bin/pip install torch==2.13.0
    /tmp/L/bin/pip install languagebind==0.1.0 "transformers==4.45.2" "peft==0.13.2" torch==2.13.0 safetensors
    /tmp/L/bin/python tools/languagebind_fixtures.py [--kaldi path/to/torchaudio/compliance/kaldi.py]

With peft < 0.7 (``transformers==4.40.2 peft==0.6.2``, languagebind installed with ``--no-deps``: it
declares peft>=0.11) the LoRA keys have the older layout and the files are named
``languagebind-tiny-<tower>-peft0.6.safetensors``; ``--towers video,depth`` writes only those.

``import languagebind`` fails beside CPU torch (its ``__init__`` imports every processor, which
need torchvision and torchaudio), so a bare package is put in ``sys.modules`` and only the
``modeling_*`` modules are imported. Each tower is built at tiny sizes from a seed, every weight
(LoRA ``B`` included, which peft starts at zero) drawn at random, and saved with what it computes:

    checkpoint/<key>   the state dict as LanguageBind's ``save_pretrained`` writes it (peft 0.13: the
                       ``base_layer`` layout)
    vision             ``get_image_features`` of the preprocessed input ``probe(shape, seed)`` (a formula
                       the test repeats, so the input is not stored; video: (B, C, T, H, W))
    text_ids, text_mask, text
                       the upstream tokenizer's ids for TEXTS and ``get_text_features`` of them
    fbank_waveform, fbank (audio, with --kaldi)
                       torchaudio's Kaldi filter banks of a waveform, as LanguageBind calls them
    metadata           config (the model's config.json), vocab (vocab.json), texts, versions

``tests/test_languagebind.py`` loads each file through bindguard's own loader and compares; it
skips a tower whose file is absent.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

TOWERS = ("image", "video", "audio", "depth", "thermal")
TEXTS = ["a photo of a dog.", "Rain on a WINDOW!"]
TEXT = {
    "vocab_size": 514,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 77,
    "projection_dim": 16,
}
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 16,
}
EXTRA = {
    "image": {"lora_r": 0},
    "video": {"lora_r": 2, "lora_alpha": 16, "add_time_attn": True, "num_frames": 8},  # LoRA on time attention
    "audio": {
        "lora_r": 0,
        "num_mel_bins": 112,
        "target_length": 1036,
        "audio_mean": -4.2677393,
        "audio_std": 4.5689974,
    },
    "depth": {"lora_r": 2, "lora_alpha": 16, "max_depth": 10},
    "thermal": {"lora_r": 2, "lora_alpha": 16},
}
PIXEL_SHAPES = {"video": (2, 3, 8, 224, 224), "audio": (2, 3, 112, 1036)}


def import_upstream(tower: str) -> types.ModuleType:
    """``languagebind.<tower>.modeling_<tower>`` without running the package's ``__init__``."""
    if "languagebind" not in sys.modules:
        spec = importlib.util.find_spec("languagebind")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("languagebind is not installed here; see this file's docstring for the environment")
        package = types.ModuleType("languagebind")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["languagebind"] = package
    return importlib.import_module(f"languagebind.{tower}.modeling_{tower}")


def byte_vocab() -> dict[str, int]:
    """Single bytes with and without ``</w>``, then start and end of text (the highest id, as in CLIP's)."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def probe(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A deterministic input that needs no storing: the test computes the same one."""
    return torch.sin(0.37 * torch.arange(torch.Size(shape).numel(), dtype=torch.float64) + seed).float().view(shape)


def randomize(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = 0.1 * torch.randn(parameter.shape, generator=generator)
            parameter.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)
        model.logit_scale.fill_(float(torch.tensor(50.0 + 10 * seed).log()))


def tokenize(tower: str, vocab: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    module = importlib.import_module(f"languagebind.{tower}.tokenization_{tower}")
    tokenizer_class = getattr(module, f"LanguageBind{tower.capitalize()}Tokenizer")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = tokenizer_class(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"))
        # what LanguageBind's processors ask for
        tokens = tokenizer(TEXTS, max_length=77, padding="max_length", truncation=True, return_tensors="pt")
    return tokens["input_ids"], tokens["attention_mask"]


def kaldi_golden(kaldi_path: Path) -> dict[str, torch.Tensor]:
    """torchaudio's fbank (loaded from its file with a stub package: it is pure torch) as LanguageBind calls it."""
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    spec = importlib.util.spec_from_file_location("kaldi", kaldi_path)
    kaldi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kaldi)
    waveform = 0.3 * torch.randn(2, 8_000, generator=torch.Generator().manual_seed(7))
    mel = torch.stack(
        [
            kaldi.fbank(
                row[None],
                htk_compat=True,
                sample_frequency=16_000,
                use_energy=False,
                window_type="hanning",
                num_mel_bins=112,
                dither=0.0,
                frame_length=25,
                frame_shift=10,
            )
            for row in waveform
        ]
    )
    return {"fbank_waveform": waveform, "fbank": mel}


def build(tower: str, seed: int, vocab: dict[str, int], kaldi: Path | None) -> tuple[dict, dict]:
    modeling = import_upstream(tower)
    name = f"LanguageBind{tower.capitalize()}"
    config = getattr(modeling, f"{name}Config")(
        text_config=TEXT, vision_config=VISION | EXTRA[tower], projection_dim=16
    )
    torch.manual_seed(seed)
    model = getattr(modeling, name)(config).eval()
    randomize(model, seed)
    pixels = probe(PIXEL_SHAPES.get(tower, (2, 3, 224, 224)), seed)
    ids, mask = tokenize(tower, vocab)
    with torch.no_grad():
        tensors = {
            "vision": model.get_image_features(pixel_values=pixels),
            "text_ids": ids,
            "text_mask": mask,
            "text": model.get_text_features(input_ids=ids, attention_mask=mask),
        }
    tensors |= {f"checkpoint/{key}": value for key, value in model.state_dict().items()}
    if tower == "audio" and kaldi is not None:
        tensors |= kaldi_golden(kaldi)
    import peft
    import transformers

    metadata = {
        "config": json.dumps(model.config.to_dict()),
        "vocab": json.dumps(vocab),
        "texts": json.dumps(TEXTS),
        "versions": json.dumps(
            {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__}
        ),
    }
    return {k: v.contiguous() for k, v in tensors.items()}, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    parser.add_argument("--kaldi", type=Path, help="torchaudio/compliance/kaldi.py, for a golden fbank")
    parser.add_argument("--towers", default=",".join(TOWERS), help="comma-separated towers to write")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import peft

    old_layout = tuple(int(part) for part in peft.__version__.split(".")[:2]) < (0, 7)
    vocab = byte_vocab()
    for seed, tower in enumerate(TOWERS):
        if tower not in args.towers.split(","):
            continue
        tensors, metadata = build(tower, seed, vocab, args.kaldi)  # the seed is the tower's position in TOWERS
        path = args.out / f"languagebind-tiny-{tower}{'-peft0.6' if old_layout else ''}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        print(f"{path}: {len(tensors)} tensors, {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
