"""open_clip ViT checkpoint files load as CLIP encoders without a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from bindguard.encoders.clip import CLIP_MEAN, CLIP_STD  # noqa: E402
from bindguard.encoders.imagebind.tokenizer import tokenize  # noqa: E402
from bindguard.encoders.open_clip import create_open_clip  # noqa: E402
from bindguard.errors import DataError  # noqa: E402
from test_clip import HEADS, IMAGE_SIZE, tiny_config, to_open_clip  # noqa: E402


@pytest.fixture(scope="module")
def original() -> transformers.CLIPModel:
    torch.manual_seed(0)
    return transformers.CLIPModel(tiny_config(516, activation="gelu")).eval()


def test_an_open_clip_file_embeds_images_and_text_as_the_model_it_came_from(original, tmp_path: Path) -> None:
    torch.save(to_open_clip(original.state_dict()), tmp_path / "open_clip_pytorch_model.bin")
    encoder = create_open_clip(
        checkpoint=tmp_path / "open_clip_pytorch_model.bin", activation="gelu", vision_heads=HEADS, text_heads=HEADS
    )
    pixels = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    normalised = (pixels - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    texts = ["a photo of a dog.", "red"]
    ids = tokenize(texts, vocab_size=516)
    with torch.no_grad():
        image = original.visual_projection(original.vision_model(pixel_values=normalised).pooler_output)
        text = original.text_projection(original.text_model(input_ids=ids).pooler_output)
        torch.testing.assert_close(encoder.encode_modality("image", pixels, normalize=False), image, rtol=0, atol=1e-6)
        torch.testing.assert_close(encoder.encode_modality("text", texts, normalize=False), text, rtol=0, atol=1e-6)
    assert encoder.identity.startswith("clip@")


def test_without_a_checkpoint_it_says_where_and_how() -> None:
    with pytest.raises(DataError, match="checkpoint=FILE"):
        create_open_clip()
