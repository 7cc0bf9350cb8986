"""The frozen parts of TinyBind really carry their pretrained weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bindguard.modalities.pixels import IMAGENET_MEAN, IMAGENET_STD

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_efficientnet_recognises_a_real_cat_photo() -> None:
    try:
        import skimage.data as skimage_data
    except ImportError:  # scikit-image is in the dev extra: missing means the check never ran
        pytest.fail("scikit-image (the photo) is not installed; fix: pip install -e '.[dev]'")
    from bindguard.encoders.efficientnet_lite import load_pretrained_lite0

    model = load_pretrained_lite0()
    photo = torch.tensor(skimage_data.chelsea()).permute(2, 0, 1).float() / 255  # (3, 300, 451)
    photo = F.interpolate(photo[None], size=(224, 224), mode="bilinear", antialias=True)
    photo = (photo - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probabilities = model(photo).softmax(-1)[0]
    assert int(probabilities.argmax()) in CAT_CLASSES
    assert float(probabilities[list(CAT_CLASSES)].sum()) > 0.8
    # a random initialisation would spread its mass; the real weights are confident
    assert float(probabilities.max()) > 0.5


def test_minilm_embeds_meaning(tinybind) -> None:
    from bindguard._types import Modality

    texts = ["a cat sits on the mat", "a kitten is lying on a rug", "stock markets fell sharply today"]
    embeddings = tinybind.encode_modality(Modality.TEXT, texts)
    similarity = embeddings @ embeddings.T
    assert embeddings.shape == (3, 384)
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_backbone_and_text_tower_are_frozen(tinybind) -> None:
    assert not any(parameter.requires_grad for parameter in tinybind.parameters())
