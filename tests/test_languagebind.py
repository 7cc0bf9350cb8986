"""LanguageBind (issue 11): our loader for its Hugging Face folders, on tiny random towers written here.

Each folder is what LanguageBind publishes (config.json, weights, vocab.json + merges.txt) at
tiny sizes: text width 32, 2 layers, 2 heads, projection 16; vision width 32, 2 layers, 14-px
patches at 224 px; the audio tower at its real 112 x 1036 mel image (8 x 74 patches, 593 positions);
the video tower with its temporal layers and 8 frames. The LoRA towers are written in both peft
layouts from one base plus random adapters, with the merged weights computed here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import bindguard
from bindguard._types import Modality
from bindguard.encoders.languagebind import LanguageBind, create_languagebind
from bindguard.encoders.languagebind_audio import chunk_starts, fbank, mel_filters, mel_image, num_frames
from bindguard.errors import DataError

transformers = pytest.importorskip("transformers")
from tokenizers import pre_tokenizers  # noqa: E402  (installed with transformers)

TEXT = {
    "vocab_size": 514,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "bos_token_id": 0,  # transformers 4.30's defaults, as in LanguageBind's files
    "pad_token_id": 1,
    "eos_token_id": 2,
}
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "gelu",
}
PROJECTION = 16
AUDIO = {"num_mel_bins": 112, "target_length": 1036, "audio_mean": -4.2677393, "audio_std": 4.5689974}
LORA_R, LORA_ALPHA = 2, 16
FRAMES = 8
# distinct scales per tower, so a test can tell that each modality uses its own checkpoint's
SCALES = {"image": 90.0, "video": 80.0, "audio": 70.0, "depth": 60.0, "thermal": 50.0}
EXTRA = {
    "image": {"lora_r": 0},
    "video": {"lora_r": 0, "add_time_attn": True, "num_frames": FRAMES},
    "audio": {"lora_r": 0, **AUDIO},
    "depth": {"lora_r": LORA_R, "lora_alpha": LORA_ALPHA, "max_depth": 10},
    "thermal": {"lora_r": LORA_R, "lora_alpha": LORA_ALPHA},
}
AUDIO_SECONDS = 0.5
TOLERANCE = 1e-6


# --- writing LanguageBind folders -------------------------------------------------------------------


def base_state(modality: str, seed: int) -> dict[str, torch.Tensor]:
    """A whole-model LanguageBind state dict at the tiny sizes, every tensor random (seeded)."""
    config = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=PROJECTION)
    with torch.device("meta"):
        shapes = {key: tensor.shape for key, tensor in transformers.CLIPModel(config).state_dict().items()}
    width = VISION["hidden_size"]
    if modality == "audio":
        shapes["vision_model.embeddings.position_embedding.weight"] = torch.Size([1 + 8 * 74, width])
    if modality == "video":
        for layer in range(VISION["num_hidden_layers"]):
            prefix = f"vision_model.encoder.layers.{layer}."
            shapes[prefix + "temporal_embedding"] = torch.Size([1, FRAMES, width])
            for projection in ("q", "k", "v", "out"):
                shapes[f"{prefix}temporal_attn.{projection}_proj.weight"] = torch.Size([width, width])
                shapes[f"{prefix}temporal_attn.{projection}_proj.bias"] = torch.Size([width])
            shapes[prefix + "temporal_layer_norm1.weight"] = shapes[prefix + "temporal_layer_norm1.bias"] = torch.Size(
                [width]
            )
    generator = torch.Generator().manual_seed(seed)
    state = {key: 0.1 * torch.randn(shape, generator=generator) for key, shape in shapes.items()}
    for key in state:
        if "norm" in key and key.endswith("weight"):
            state[key] += 1.0
    state["logit_scale"] = torch.tensor(math.log(SCALES[modality]))
    return state


def with_lora(state: dict[str, torch.Tensor], layout: str, seed: int) -> tuple[dict, dict]:
    """(checkpoint state in a peft layout, the merged state it must load to).

    ``old`` is peft < 0.7 (``q_proj.weight`` beside ``q_proj.lora_A.default.weight``); ``new`` is
    peft >= 0.7 (``q_proj.base_layer.weight``). Both wrap the whole encoder in ``base_model.model``.
    """
    generator = torch.Generator().manual_seed(seed)
    checkpoint, merged = {}, dict(state)
    for key, tensor in state.items():
        if not key.startswith("vision_model.encoder.layers."):
            checkpoint[key] = tensor
            continue
        wrapped = key.replace("vision_model.encoder.", "vision_model.encoder.base_model.model.")
        module, _, kind = wrapped.rpartition(".")
        if not module.endswith(("q_proj", "k_proj", "v_proj", "out_proj")):
            checkpoint[wrapped] = tensor
            continue
        checkpoint[f"{module}.{kind}" if layout == "old" else f"{module}.base_layer.{kind}"] = tensor
        if kind == "weight":
            down = 0.1 * torch.randn(LORA_R, tensor.shape[1], generator=generator)  # A: (r, in)
            up = 0.1 * torch.randn(tensor.shape[0], LORA_R, generator=generator)  # B: (out, r)
            checkpoint[f"{module}.lora_A.default.weight"], checkpoint[f"{module}.lora_B.default.weight"] = down, up
            merged[key] = tensor + (LORA_ALPHA / LORA_R) * up @ down
    return checkpoint, merged


def write_tokenizer(folder: Path) -> None:
    """A CLIP BPE vocabulary of single bytes (with and without ``</w>``), no merges; end-of-text is the highest id."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def write_folder(folder: Path, modality: str, state: dict, *, fmt: str = "safetensors", **vision: object) -> Path:
    folder.mkdir(parents=True)
    config = {
        "model_type": f"LanguageBind{modality.capitalize()}",
        "projection_dim": PROJECTION,
        "text_config": TEXT,
        "vision_config": VISION | EXTRA[modality] | vision,
    }
    (folder / "config.json").write_text(json.dumps(config))
    write_tokenizer(folder)
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return folder


def old_transformers_buffers(state: dict) -> dict:
    """transformers 4.30 (LanguageBind's pin) also saved the position-index buffers."""
    return state | {
        "text_model.embeddings.position_ids": torch.arange(77)[None],
        "vision_model.embeddings.position_ids": torch.arange(257)[None],
    }


SEEDS = {name: index for index, name in enumerate(SCALES)}


@pytest.fixture(scope="module")
def merged_depth() -> tuple[dict, dict, dict]:
    """The depth tower in both peft layouts and the merged weights both must load to."""
    base = base_state("depth", SEEDS["depth"])
    old, merged = with_lora(base, "old", seed=10)
    new, merged_again = with_lora(base, "new", seed=10)
    assert all(torch.equal(merged[k], merged_again[k]) for k in merged)
    return old, new, merged


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, merged_depth) -> Path:
    """Five tower folders under one root, as downloaded: depth in the old peft layout (.bin), thermal in the new."""
    root = tmp_path_factory.mktemp("languagebind")
    old_depth, _, _ = merged_depth
    write_folder(root / "LanguageBind_Image", "image", base_state("image", SEEDS["image"]))
    write_folder(root / "LanguageBind_Video_FT", "video", base_state("video", SEEDS["video"]))
    write_folder(root / "LanguageBind_Audio_FT", "audio", base_state("audio", SEEDS["audio"]))
    write_folder(root / "LanguageBind_Depth", "depth", old_transformers_buffers(old_depth), fmt="bin")
    thermal, _ = with_lora(base_state("thermal", SEEDS["thermal"]), "new", seed=11)
    write_folder(root / "LanguageBind_Thermal", "thermal", thermal)
    return root


@pytest.fixture(scope="module")
def encoder(checkpoint: Path) -> LanguageBind:
    return create_languagebind(checkpoint=checkpoint, audio_seconds=AUDIO_SECONDS)


def vision_state(model: LanguageBind, modality: str) -> dict[str, torch.Tensor]:
    return model.towers[modality].state_dict()


# --- loading ----------------------------------------------------------------------------------------


def test_both_peft_layouts_load_to_the_same_merged_weights(merged_depth, tmp_path: Path) -> None:
    old, new, merged = merged_depth
    from_old = create_languagebind(checkpoint=write_folder(tmp_path / "old", "depth", old, fmt="bin"))
    from_new = create_languagebind(checkpoint=write_folder(tmp_path / "new", "depth", new))
    loaded_old, loaded_new = vision_state(from_old, "depth"), vision_state(from_new, "depth")
    assert loaded_old.keys() == loaded_new.keys() == {k for k in merged if k.startswith(("vision_", "visual_"))}
    for key, tensor in loaded_old.items():
        torch.testing.assert_close(tensor, merged[key], rtol=0, atol=TOLERANCE)
        assert torch.equal(tensor, loaded_new[key]), key
    query = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(old[query.replace("encoder.", "encoder.base_model.model.")], merged[query])  # LoRA counts
    depth = 5.0 * torch.ones(1, 1, 224, 224)
    torch.testing.assert_close(from_old.encode_modality("depth", depth), from_new.encode_modality("depth", depth))


def test_leftover_lora_keys_are_refused_in_one_line(merged_depth, tmp_path: Path) -> None:
    old, _, _ = merged_depth
    folder = write_folder(tmp_path / "depth", "depth", old, lora_r=0)  # the config says: no LoRA to merge
    with pytest.raises(DataError, match=r"unexpected \[.*lora_A\.default\.weight.*lora_r=0") as caught:
        create_languagebind(checkpoint=folder)
    assert "\n" not in str(caught.value)


def test_an_adapter_of_another_rank_than_the_config_is_refused(merged_depth, tmp_path: Path) -> None:
    _, new, _ = merged_depth
    with pytest.raises(DataError, match=r"has rank 2, but config\.json gives lora_r=4"):
        create_languagebind(checkpoint=write_folder(tmp_path / "depth", "depth", new, lora_r=4))


def test_a_pickle_holding_more_than_tensors_is_not_unpickled(tmp_path: Path) -> None:
    state = base_state("image", 0) | {"payload": Path("anything")}  # a class weights_only does not allow
    with pytest.raises(
        DataError, match=r"pytorch_model\.bin needs more than tensors \(it asks for pathlib\.PosixPath\)"
    ):
        create_languagebind(checkpoint=write_folder(tmp_path / "image", "image", state, fmt="bin"))


def test_partial_state_dict_is_refused_naming_the_missing_key(tmp_path: Path) -> None:
    state = base_state("image", 0)
    del state["vision_model.post_layernorm.weight"]
    folder = write_folder(tmp_path / "image", "image", state)
    with pytest.raises(DataError, match=r"missing \['vision_model\.post_layernorm\.weight'\]") as caught:
        create_languagebind(checkpoint=folder)
    assert "\n" not in str(caught.value) and "LanguageBind/LanguageBind_Image" in str(caught.value)


def test_a_key_nothing_uses_is_refused(tmp_path: Path) -> None:
    state = base_state("image", 0) | {"vision_model.encoder.layers.0.adapter.weight": torch.zeros(2)}
    with pytest.raises(DataError, match=r"unexpected \['vision_model\.encoder\.layers\.0\.adapter\.weight'\]"):
        create_languagebind(checkpoint=write_folder(tmp_path / "image", "image", state))


def test_audio_statistics_missing_from_the_config_are_refused(tmp_path: Path) -> None:
    config_without = {k: v for k, v in AUDIO.items() if k != "audio_std"}
    folder = tmp_path / "audio"
    write_folder(folder, "audio", base_state("audio", 0))
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"] = VISION | {"lora_r": 0} | config_without
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"lacks vision_config\.audio_std .*4\.5689974"):
        create_languagebind(checkpoint=folder)


def test_missing_checkpoint_names_where_to_get_it() -> None:
    with pytest.raises(DataError) as caught:
        create_languagebind()
    message = str(caught.value)
    assert "\n" not in message and "--checkpoint DIR" in message
    assert all(f"LanguageBind/LanguageBind_{name}" in message for name in ("Image", "Video_FT", "Audio_FT", "Depth"))


def test_every_tower_loads_from_one_folder_with_its_own_logit_scale(encoder: LanguageBind, checkpoint: Path) -> None:
    assert encoder.modalities == (*(Modality(m) for m in SCALES), Modality.TEXT)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    for modality, scale in SCALES.items():
        assert encoder.logit_scale(modality) == pytest.approx(scale)
    assert encoder.logit_scale("text") == pytest.approx(SCALES["image"])  # the text tower's folder
    image_text = {
        k[len("text_model.") :]: v
        for k, v in base_state("image", SEEDS["image"]).items()
        if k.startswith("text_model.")
    }
    for key, tensor in encoder.text.text_model.state_dict().items():
        assert torch.equal(tensor, image_text[key]), key
    assert encoder.embed_dim == PROJECTION and encoder.identity.startswith("languagebind@")


def test_a_subset_of_towers_loads_with_the_text_tower_of_another_folder(checkpoint: Path) -> None:
    model = create_languagebind(checkpoint=checkpoint, modalities=["audio"], text_from="audio")
    assert model.modalities == (Modality.AUDIO, Modality.TEXT)
    assert model.logit_scale("text") == pytest.approx(SCALES["audio"])
    audio_text = base_state("audio", SEEDS["audio"])["text_projection.weight"]
    assert torch.equal(model.text.text_projection.weight, audio_text)


# --- raw input to embedding ---------------------------------------------------------------------------


def raw_batch(model: LanguageBind, modality: Modality, batch: int = 2) -> torch.Tensor:
    spec = model.input_spec(modality)
    low, high = spec.domain
    return low + (high - low) * (0.05 + 0.9 * torch.rand(batch, *spec.shape))


@pytest.mark.parametrize("modality", list(SCALES))
def test_every_tower_embeds_raw_input_with_finite_nonzero_gradients(encoder: LanguageBind, modality: str) -> None:
    x = raw_batch(encoder, Modality(modality)).requires_grad_(True)
    embedding = encoder.encode_modality(modality, x)  # (2, 16)
    assert embedding.shape == (2, PROJECTION)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))
    (gradient,) = torch.autograd.grad(embedding[:, 0].sum(), x)
    assert bool(torch.isfinite(gradient).all())
    nonzero = (gradient != 0).float().flatten(1).mean(1)
    # audio: samples after the last whole 25 ms frame reach no frame
    assert bool((nonzero > 0.98).all()), f"{modality}: gradient nonzero on {nonzero.tolist()}"
    assert torch.equal(encoder.encode_modality(modality, x.detach()), embedding.detach())


def test_text_is_embedded_and_padding_does_not_change_it(encoder: LanguageBind) -> None:
    embeddings = encoder.encode_modality("text", ["a photo of a cat", "a photo of a cat", "dog"])
    assert embeddings.shape == (3, PROJECTION) and bool(torch.isfinite(embeddings).all())
    torch.testing.assert_close(embeddings[0], embeddings[1])
    assert not torch.allclose(embeddings[0], embeddings[2])


def test_audio_spec_and_depth_domain_follow_the_config(encoder: LanguageBind) -> None:
    audio, depth = encoder.input_spec(Modality.AUDIO), encoder.input_spec(Modality.DEPTH)
    assert audio.shape == (round(AUDIO_SECONDS * 16_000),) and audio.sample_rate == 16_000
    assert depth.shape == (1, 224, 224) and depth.domain == (0.0, 10.0) and depth.units == "depth (metres)"
    assert encoder.input_spec(Modality.VIDEO).shape == (FRAMES, 3, 224, 224)
    mel = encoder.tower_input(Modality.AUDIO, torch.zeros(1, *audio.shape))  # silence: every bin at the log floor
    assert mel.shape == (1, 3, 112, 1036)
    floor = math.log(torch.finfo(torch.float32).eps)
    expected = (floor - AUDIO["audio_mean"]) / (2 * AUDIO["audio_std"])  # the config's trained statistics
    torch.testing.assert_close(mel, torch.full_like(mel, expected))


# --- the audio front end -----------------------------------------------------------------------------


def test_fbank_frames_and_a_tone_peaks_in_its_mel_filter() -> None:
    rate, tone = 16_000, 1_000.0
    time = torch.arange(rate) / rate
    mel = fbank(0.5 * torch.sin(2 * math.pi * tone * time)[None], num_mel_bins=112)
    assert mel.shape == (1, num_frames(rate), 112) == (1, 98, 112)
    filters = mel_filters(rate, 112, 512)
    expected = int(filters[:, round(tone / (rate / 512))].argmax())  # the filter weighing the tone's FFT bin most
    assert int(mel[0].mean(0).argmax()) == expected
    shifted = fbank(0.5 * torch.sin(2 * math.pi * tone * time)[None] + 0.3, num_mel_bins=112)
    torch.testing.assert_close(shifted, mel, rtol=0, atol=1e-2)  # per-frame DC removal (float32 rounding)


def test_long_audio_takes_three_chunks_at_the_middle_of_each_third_and_short_audio_is_tiled() -> None:
    assert chunk_starts(1036 + 8, 1036) == (1, 4, 7)  # starts 0..8 in thirds [0-2] [3-5] [6-8]
    assert chunk_starts(1036 + 1, 1036) == (0, 1, 0)  # an empty third starts at 0, as upstream
    mel = torch.arange(1044.0)[None, :, None].expand(1, 1044, 2)  # frame index as the value
    image = mel_image(mel, 1036)  # (1, 3, 2, 1036)
    assert image[0, :, 0, 0].tolist() == [1.0, 4.0, 7.0]
    short = mel_image(torch.arange(98.0)[None, :, None], 1036)  # (1, 3, 1, 1036)
    assert short[0, 0, 0, 98].item() == 0.0 and short[0, 2, 0, 1035].item() == 1035 % 98


# --- the video layer ---------------------------------------------------------------------------------


def test_time_attention_mixes_only_the_frames_of_one_token_of_one_clip(encoder: LanguageBind) -> None:
    layer = encoder.towers["video"].vision_model.encoder.layers[0]
    hidden = torch.randn(2 * FRAMES, 5, VISION["hidden_size"])  # (B*T, L, D), frame-major within each clip
    averaged = layer._over_time(hidden, lambda sequences: sequences.mean(1, keepdim=True).expand_as(sequences))
    expected = hidden.view(2, FRAMES, 5, -1).mean(1, keepdim=True).expand(2, FRAMES, 5, -1).reshape_as(hidden)
    torch.testing.assert_close(averaged, expected)


def test_video_clips_in_a_batch_do_not_mix(encoder: LanguageBind) -> None:
    clips = raw_batch(encoder, Modality.VIDEO)
    changed = clips.clone()
    changed[1, 3] = 1.0 - changed[1, 3]  # one frame of the second clip
    before, after = encoder.encode_modality("video", clips), encoder.encode_modality("video", changed)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=1e-6)
    assert not torch.allclose(after[1], before[1])


# --- the library's jobs, end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_data(encoder: LanguageBind, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user data file at LanguageBind's input sizes: 6 images and 6 half-second clips of 3 classes."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(6) % 3
    tensors = {}
    for modality in (Modality.IMAGE, Modality.AUDIO):
        spec = encoder.input_spec(modality)
        low, high = spec.domain
        tensors[modality.value] = low + (high - low) * (0.1 + 0.8 * torch.rand(6, *spec.shape, generator=generator))
        tensors[f"{modality.value}.labels"] = labels.clone()
    path = tmp_path_factory.mktemp("data") / "mine.safetensors"
    save_file(tensors, str(path), metadata={"class_names": json.dumps(["dog", "rain", "siren"])})
    return path


def test_evaluate_clean_and_attacked_on_user_data(encoder: LanguageBind, user_data: Path) -> None:
    results = bindguard.evaluate(
        encoder,
        str(user_data),
        modalities=["image", "audio"],
        attacks="standard",
        eps=["4/255"],
        n=4,
        steps=2,
        square_queries=4,
        checks=False,
        batch_size=4,
    )
    for modality in ("image", "audio"):
        (clean,) = [row for row in results.clean if row.modality == modality]
        (robust,) = [row for row in results.robust if row.modality == modality]
        assert clean.n == robust.n == 4 and robust.top1 <= robust.clean_top1 == clean.top1
        assert robust.max_norm <= robust.eps_abs * (1 + 1e-5)
    assert results.settings["model_identity"] == encoder.identity


def test_attack_samples_keeps_the_budget_and_the_domain(encoder: LanguageBind, user_data: Path) -> None:
    attacked = bindguard.attack_samples(encoder, str(user_data), modality="audio", attack="apgd-ce", steps=2, n=2)
    clean, adversarial = attacked.tensors["clean"], attacked.tensors["adversarial"]
    assert clean.shape == adversarial.shape == (2, round(AUDIO_SECONDS * 16_000))
    assert float((adversarial - clean).abs().max()) <= 2 * 4 / 255 * (1 + 1e-5)  # eps relative to the range 2
    assert float(adversarial.abs().max()) <= 1.0
    assert attacked.class_names == ("dog", "rain", "siren")


@pytest.mark.parametrize(("method", "modality"), [("head", "audio"), ("lora", "image")])
def test_calibrate_trains_a_small_part_and_leaves_the_encoder_alone(
    encoder: LanguageBind, user_data: Path, method: str, modality: str
) -> None:
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    calibrated = bindguard.calibrate(
        encoder, str(user_data), modalities=modality, method=method, epochs=1, attack_steps=1, batch_size=4
    )
    calibration = calibrated.calibration_of(Modality(modality))
    assert 0 < calibration.trainable_parameters() < encoder.num_parameters()
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())
    x = bindguard.load_dataset(str(user_data), modalities=[modality]).data[Modality(modality)].inputs[:2]
    assert calibrated.encode_modality(modality, torch.as_tensor(x)).shape == (2, PROJECTION)


# --- parity with the upstream code (fixtures written by tools/languagebind_fixtures.py) --------------

FIXTURES = Path(__file__).parent / "fixtures"
UPSTREAM_TOWERS = ("image", "video", "audio", "depth", "thermal")  # the tool's seeds are these positions


def probe(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The tool's deterministic preprocessed input (not stored in the fixture)."""
    return torch.sin(0.37 * torch.arange(torch.Size(shape).numel(), dtype=torch.float64) + seed).float().view(shape)


def upstream_fixture(tower: str, tmp_path: Path, variant: str = "") -> tuple[dict, dict, Path]:
    """(tensors, metadata, a Hugging Face folder made of the fixture's checkpoint), or skip without the file."""
    from safetensors import safe_open

    path = FIXTURES / f"languagebind-tiny-{tower}{variant}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path.name} absent; write it with tools/languagebind_fixtures.py in the reference environment")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        metadata = handle.metadata()
    folder = tmp_path / f"LanguageBind_{tower}"
    folder.mkdir()
    (folder / "config.json").write_text(metadata["config"])
    (folder / "vocab.json").write_text(metadata["vocab"])
    (folder / "merges.txt").write_text("#version: 0.2\n")
    checkpoint = {k.removeprefix("checkpoint/"): v for k, v in tensors.items() if k.startswith("checkpoint/")}
    save_file(checkpoint, str(folder / "model.safetensors"))
    return tensors, metadata, folder


# "-peft0.6": saved by peft 0.6.2 (transformers 4.40.2), the LoRA layout of LanguageBind's 2023 uploads
@pytest.mark.parametrize(
    ("tower", "variant"), [(tower, "") for tower in UPSTREAM_TOWERS] + [("video", "-peft0.6"), ("depth", "-peft0.6")]
)
def test_towers_match_the_upstream_code(tower: str, variant: str, tmp_path: Path) -> None:
    tensors, metadata, folder = upstream_fixture(tower, tmp_path, variant)
    model = create_languagebind(checkpoint=folder)
    seed = UPSTREAM_TOWERS.index(tower)
    shape = {"video": (2, 3, FRAMES, 224, 224), "audio": (2, 3, 112, 1036)}.get(tower, (2, 3, 224, 224))
    pixels = probe(shape, seed)
    if tower == "video":
        pixels = pixels.transpose(1, 2).flatten(0, 1)  # upstream's (B, C, T, H, W) -> our (B*T, C, H, W)
    with torch.no_grad():
        torch.testing.assert_close(model.towers[tower](pixels), tensors["vision"], rtol=0, atol=1e-5)
        texts = json.loads(metadata["texts"])
        ids, mask = model.text.tokenize(texts)
        assert torch.equal(ids, tensors["text_ids"]) and torch.equal(mask, tensors["text_mask"])
        embedded = model.encode_modality("text", texts, normalize=False)
        torch.testing.assert_close(embedded, tensors["text"], rtol=0, atol=1e-5)
    assert model.logit_scale(tower) == pytest.approx(50.0 + 10 * seed)


def test_fbank_matches_torchaudio_kaldi(tmp_path: Path) -> None:
    tensors, _, _ = upstream_fixture("audio", tmp_path)
    if "fbank" not in tensors:
        pytest.skip("the audio fixture was written without --kaldi")
    # The fixture's FFT ran on another CPU: float32 rounding differs with the instruction set the FFT
    # library picks, and the logarithm magnifies it in the quietest bins (2.3e-4 at a value of -9.8
    # seen on an AVX-512 machine, a relative 2.4e-5); a wrong window, scale or filterbank is off by far more.
    torch.testing.assert_close(fbank(tensors["fbank_waveform"], num_mel_bins=112), tensors["fbank"], rtol=0, atol=1e-3)


@pytest.mark.parametrize("tower", ["image", "video", "audio", "depth", "thermal"])
def test_each_tower_has_a_registry_entry_that_loads_it_alone(checkpoint: Path, tower: str) -> None:
    import bindguard

    model = bindguard.create_encoder(f"languagebind-{tower}", checkpoint=checkpoint)
    assert [m for m in model.modalities if m is not Modality.TEXT] == [Modality(tower)]
