"""CLIP (transformers ``CLIPModel``) from a Hugging Face folder, and the open_clip key converter.

Every model here is a tiny random CLIP saved with ``save_pretrained`` into a temporary folder,
with a byte-level BPE tokenizer written by the test (no network, no real weights). The checks
are about mechanics: the encoder computes what ``CLIPModel`` computes, gradients reach the
pixels, loading is strict, and evaluation, attacks and calibration run end to end on a user
image file; accuracy is near chance (the weights are random).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import bindguard
from bindguard._types import Modality
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.encoders.clip import CLIP_MEAN, CLIP_STD, CLIPEncoder, create_clip
from bindguard.encoders.open_clip_keys import convert_open_clip, write_converted
from bindguard.errors import ConfigError, DataError

transformers = pytest.importorskip("transformers")
transformers.utils.logging.disable_progress_bar()

IMAGE_SIZE, PATCH = 32, 8
WIDTH, LAYERS, HEADS, PROJECTION = 32, 2, 2, 16
CLASSES = ["red", "green", "blue"]
EPS = "4/255"
TOLERANCE = 1e-5


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, the base symbols of byte-level BPE vocabularies."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    return [table[b] for b in range(256)]


def write_tokenizer(folder: Path) -> int:
    """A CLIP BPE vocabulary of bytes and word-final bytes, no merges; returns its size."""
    symbols = byte_alphabet()
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(tokens)


def tiny_config(vocabulary: int, activation: str = "quick_gelu"):
    layer = {"hidden_size": WIDTH, "intermediate_size": 2 * WIDTH, "num_hidden_layers": LAYERS}
    layer |= {"num_attention_heads": HEADS, "hidden_act": activation}
    text = layer | {"vocab_size": vocabulary, "bos_token_id": vocabulary - 2, "eos_token_id": vocabulary - 1}
    vision = layer | {"image_size": IMAGE_SIZE, "patch_size": PATCH}
    return transformers.CLIPConfig(
        text_config=text | {"pad_token_id": vocabulary - 1}, vision_config=vision, projection_dim=PROJECTION
    )


def write_clip_folder(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    vocabulary = write_tokenizer(folder)
    torch.manual_seed(seed)
    transformers.CLIPModel(tiny_config(vocabulary)).save_pretrained(folder)
    return folder


def copy_folder(source: Path, target: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """``source`` with its weights replaced by ``state`` (None: the same weights)."""
    target.mkdir(parents=True)
    for name in ("config.json", "vocab.json", "merges.txt"):
        (target / name).write_bytes((source / name).read_bytes())
    weights = state if state is not None else load_file(str(source / "model.safetensors"))
    save_file(weights, str(target / "model.safetensors"))
    return target


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("clip")
    return write_clip_folder(root / "a", seed=0), write_clip_folder(root / "b", seed=1)


@pytest.fixture(scope="module")
def encoder(folders: tuple[Path, Path]) -> CLIPEncoder:
    return create_clip(checkpoint=folders[0])


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user data file: six 32 px images of three classes, each tinted by its class's colour."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    images = 0.4 * torch.rand(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    images[torch.arange(6), labels] += 0.6
    path = tmp_path_factory.mktemp("data") / "colours.safetensors"
    save_file({"image": images, "image.labels": labels}, str(path), metadata={"class_names": json.dumps(CLASSES)})
    return path


# --- the encoder -----------------------------------------------------------------------------------


def test_missing_checkpoint_says_where_clip_folders_are_published() -> None:
    with pytest.raises(DataError, match="openai/clip-vit-base-patch32") as error:
        create_clip()
    assert "downloads nothing" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(DataError, match="does not exist"):
        create_clip(checkpoint="/nonexistent/clip")
    with pytest.raises(ConfigError, match="not both"):
        create_clip(checkpoint="a", weights="b")


def test_encoder_is_frozen_with_the_checkpoints_image_size_and_clip_normalisation(encoder: CLIPEncoder) -> None:
    spec = encoder.input_spec(Modality.IMAGE)
    assert (spec.shape, spec.domain) == ((3, IMAGE_SIZE, IMAGE_SIZE), (0.0, 1.0))
    assert (spec.mean, spec.std) == (CLIP_MEAN, CLIP_STD)
    assert encoder.modalities == (Modality.IMAGE, Modality.TEXT) and encoder.embed_dim == PROJECTION
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert encoder.identity.startswith("clip@") and not encoder.randomized
    expected = math.exp(float(encoder.model.logit_scale))
    assert encoder.logit_scale("image") == pytest.approx(expected) == encoder.logit_scale("text")


def test_embeddings_equal_clip_models_own_forward_and_reach_the_pixels(encoder: CLIPEncoder, folders) -> None:
    reference = transformers.CLIPModel.from_pretrained(str(folders[0])).eval()
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, requires_grad=True)
    texts = ["a photo of a red square", "blue"]
    ours = encoder.encode_modality("image", images)  # (2, 16)
    tokens = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    pixels = (images.detach() - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    with torch.no_grad():
        outputs = reference(pixel_values=pixels, **tokens)
    torch.testing.assert_close(ours.detach(), outputs.image_embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(encoder.encode_modality("text", texts), outputs.text_embeds, rtol=0, atol=1e-6)
    (gradient,) = torch.autograd.grad(ours[:, 0].sum(), images)
    assert bool(torch.isfinite(gradient).all()) and float((gradient != 0).float().mean()) > 0.99


def test_the_same_weights_as_pytorch_model_bin_give_the_same_identity(folders, tmp_path: Path) -> None:
    folder = copy_folder(folders[0], tmp_path / "bin")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert create_clip(checkpoint=folder).identity == create_clip(checkpoint=folders[0]).identity
    assert create_clip(weights=folders[1]).identity != create_clip(checkpoint=folders[0]).identity


def edited(state: dict[str, torch.Tensor], change: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    if change == "missing":
        del state["visual_projection.weight"]
    elif change == "extra":
        state["vision_model.extra_gate"] = torch.zeros(3)
    elif change == "shape":
        state["visual_projection.weight"] = torch.zeros(PROJECTION + 1, WIDTH)
    elif change == "nan":
        state["text_projection.weight"] = torch.full((PROJECTION, WIDTH), math.nan)
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", "lacks 'visual_projection.weight'"),
        ("extra", "holds 'vision_model.extra_gate', which this model does not have"),
        ("shape", "'visual_projection.weight' has shape \\(17, 32\\)"),
        ("nan", "'text_projection.weight' holds NaN"),
    ],
)
def test_loading_is_strict_and_names_the_offending_tensor(change: str, message: str, folders, tmp_path: Path) -> None:
    state = edited(load_file(str(folders[0] / "model.safetensors")), change)
    folder = copy_folder(folders[0], tmp_path / change, state)
    with pytest.raises(DataError, match=message) as error:
        create_clip(checkpoint=folder)
    assert "\n" not in str(error.value)


def test_older_files_with_position_ids_load_and_the_logit_scale_is_clamped_at_100(folders, tmp_path: Path) -> None:
    state = load_file(str(folders[0] / "model.safetensors"))
    state["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)  # saved by transformers < 4.31
    state["logit_scale"] = torch.tensor(5.0)  # exp(5) = 148
    encoder = create_clip(checkpoint=copy_folder(folders[0], tmp_path / "old", state))
    assert encoder.logit_scale("image") == 100.0


def test_image_statistics_come_from_the_folders_preprocessor_config(folders, tmp_path: Path) -> None:
    folder = copy_folder(folders[0], tmp_path / "statistics")
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    spec = create_clip(checkpoint=folder).input_spec(Modality.IMAGE)
    assert (spec.mean, spec.std) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_std": [0.25, 0.0, 0.25]}))
    with pytest.raises(DataError, match="image_std must be > 0"):
        create_clip(checkpoint=folder)


def test_a_folder_of_another_model_type_is_refused(folders, tmp_path: Path) -> None:
    folder = copy_folder(folders[0], tmp_path / "other")
    config = json.loads((folder / "config.json").read_text()) | {"model_type": "clap"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="describes a 'clap' model, not 'clip'"):
        create_clip(checkpoint=folder)


# --- evaluate, attack, calibrate on a user image file ----------------------------------------------


def test_evaluate_gives_clean_and_robust_rows_on_user_images(encoder: CLIPEncoder, image_file: Path) -> None:
    results = bindguard.evaluate(
        encoder, image_file, modalities=["image"], eps=[EPS], n=4, steps=2, square_queries=4, check_samples=2
    )
    (clean,) = results.clean
    (robust,) = results.robust
    assert clean.modality == "image" and clean.n == robust.n == 4
    assert robust.top1 <= robust.clean_top1 == clean.top1
    assert robust.max_norm <= float(Fraction(EPS)) * (1 + TOLERANCE)
    assert robust.attacks == ["apgd-ce", "apgd-t", "rank", "embed", "square"]
    assert results.settings["model_identity"] == encoder.identity


def test_attack_samples_stay_in_the_budget_and_the_pixel_domain(encoder: CLIPEncoder, image_file: Path) -> None:
    attacked = bindguard.attack_samples(encoder, image_file, modality="image", attack="apgd-ce", steps=2, n=2)
    clean, adversarial = attacked.tensors["clean"], attacked.tensors["adversarial"]
    assert adversarial.shape == clean.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert float((adversarial - clean).abs().max()) <= float(Fraction(EPS)) * (1 + TOLERANCE)
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0


@pytest.mark.parametrize("method", ["head", "lora"])
def test_calibration_reloads_on_its_checkpoint_and_is_refused_by_another(
    method: str, encoder: CLIPEncoder, folders, image_file: Path, tmp_path: Path
) -> None:
    calibrated = bindguard.calibrate(
        encoder, image_file, modalities="image", method=method, limit=4, epochs=1, attack_steps=1, batch_size=4,
        out=tmp_path,
    )  # fmt: skip
    assert 0 < calibrated.calibration_of(Modality.IMAGE).trainable_parameters() < encoder.num_parameters()
    images = load_file(str(image_file))["image"][:2]
    reloaded = CalibratedEncoder.from_pretrained(create_clip(checkpoint=folders[0]), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.encode_modality("image", images), calibrated.encode_modality("image", images), rtol=0, atol=1e-6
        )
    with pytest.raises(DataError, match="other weights"):
        CalibratedEncoder.from_pretrained(create_clip(checkpoint=folders[1]), tmp_path)


# --- the open_clip converter -------------------------------------------------------------------------


def to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse layout map, written here independently: ``CLIPModel`` keys -> open_clip's ViT-CLIP keys."""
    renamed = {
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "logit_scale": "logit_scale",
    }
    block = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj"}
    block |= {"mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    out = {new: state[old] for old, new in renamed.items()}
    out["visual.proj"] = state["visual_projection.weight"].t().contiguous()
    out["text_projection"] = state["text_projection.weight"].t().contiguous()
    for hf_tower, tower in (("vision_model", "visual."), ("text_model", "")):
        for index in range(LAYERS):
            source, target = f"{hf_tower}.encoder.layers.{index}.", f"{tower}transformer.resblocks.{index}."
            for hf_name, name in block.items():
                for kind in ("weight", "bias"):
                    out[f"{target}{name}.{kind}"] = state[f"{source}{hf_name}.{kind}"]
            for kind in ("weight", "bias"):
                parts = [state[f"{source}self_attn.{p}_proj.{kind}"] for p in "qkv"]
                out[f"{target}attn.in_proj_{kind}"] = torch.cat(parts)
    out["attn_mask"] = torch.full((77, 77), -math.inf).triu(1)  # open_clip's causal mask buffer, ignored
    return out


def test_open_clip_layout_converts_back_to_the_same_model_exactly() -> None:
    """CLIPModel -> open_clip layout (the test's own inverse map) -> ``convert_open_clip`` -> CLIPModel.

    Identical weights, config sizes and outputs prove the converter is a bijection of the key
    layout (renames, the q/k/v split, the transposed projections). It is not a parity test with
    open_clip itself, which cannot be imported beside CPU torch (it needs torchvision).
    """
    torch.manual_seed(0)
    original = transformers.CLIPModel(tiny_config(516, activation="gelu")).eval()
    state, config = convert_open_clip(
        to_open_clip(original.state_dict()), activation="gelu", vision_heads=HEADS, text_heads=HEADS
    )
    converted = transformers.CLIPModel(config).eval()
    converted.load_state_dict(state, strict=True)
    assert all(torch.equal(tensor, state[name]) for name, tensor in original.state_dict().items())
    for tower in ("vision_config", "text_config"):
        ours, theirs = getattr(config, tower).to_dict(), getattr(original.config, tower).to_dict()
        for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act"):
            assert ours[field] == theirs[field], (tower, field)
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (IMAGE_SIZE, PATCH)
    assert config.text_config.eos_token_id == 515 and config.projection_dim == PROJECTION
    pixels, ids = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE), torch.tensor([[514, 40, 41, 515], [514, 42, 515, 515]])
    with torch.no_grad():
        expected, found = original(input_ids=ids, pixel_values=pixels), converted(input_ids=ids, pixel_values=pixels)
    assert torch.equal(expected.image_embeds, found.image_embeds)
    assert torch.equal(expected.text_embeds, found.text_embeds)


def test_a_converted_open_clip_checkpoint_loads_as_a_clip_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = transformers.CLIPModel(tiny_config(516)).eval()
    state, config = convert_open_clip(
        to_open_clip(original.state_dict()), activation="quick_gelu", vision_heads=HEADS, text_heads=HEADS
    )
    folder = write_converted(state, config, tmp_path / "converted")
    write_tokenizer(folder)  # the user copies the tokenizer files of the repository
    encoder = create_clip(checkpoint=folder)
    pixels = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    normalised = (pixels - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    with torch.no_grad():
        expected = original.visual_projection(original.vision_model(pixel_values=normalised).pooler_output)
        torch.testing.assert_close(encoder.encode_modality("image", pixels, normalize=False), expected, rtol=0, atol=0)


def test_open_clip_prefixes_are_understood_and_the_input_is_not_changed() -> None:
    torch.manual_seed(0)
    layout = to_open_clip(transformers.CLIPModel(tiny_config(516, activation="gelu")).state_dict())
    plain, _ = convert_open_clip(layout, activation="gelu", vision_heads=HEADS, text_heads=HEADS)
    wrapped = {f"module.{key}": tensor for key, tensor in layout.items()}  # saved from DataParallel
    custom = {(f"text.{k}" if not k.startswith(("visual.", "logit_scale")) else k): t for k, t in layout.items()}
    for variant in (wrapped, custom):
        keys = set(variant)
        state, _ = convert_open_clip(variant, activation="gelu", vision_heads=HEADS, text_heads=HEADS)
        assert state.keys() == plain.keys() and all(torch.equal(state[k], plain[k]) for k in plain)
        assert set(variant) == keys


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("visual.trunk.stem.0.weight", "timm vision trunk"),
        ("visual.layer1.0.conv1.weight", "ModifiedResNet"),
        ("text.transformer.embeddings.word_embeddings.weight", "Hugging Face text tower"),
        ("visual.attn_pool.query", "attentional pooling"),
        ("visual.transformer.resblocks.0.ls_1.gamma", "layer scale"),
        ("logit_bias", "SigLIP"),
        ("text_projection.bias", "biased linear text projection"),
    ],
)
def test_open_clip_towers_clip_model_cannot_hold_are_refused_by_name(key: str, what: str) -> None:
    torch.manual_seed(0)
    layout = to_open_clip(transformers.CLIPModel(tiny_config(516)).state_dict()) | {key: torch.zeros(1)}
    with pytest.raises(DataError, match=what) as error:
        convert_open_clip(layout, activation="quick_gelu", vision_heads=HEADS, text_heads=HEADS)
    assert key in str(error.value) and "\n" not in str(error.value)


def test_open_clip_activation_and_heads_are_checked() -> None:
    layout = to_open_clip(transformers.CLIPModel(tiny_config(516)).state_dict())
    with pytest.raises(ConfigError, match="quick_gelu"):
        convert_open_clip(layout, activation="relu")
    with pytest.raises(ConfigError, match="vision_heads must be a positive divisor of the vision width 32"):
        convert_open_clip(layout, activation="gelu", vision_heads=3)
