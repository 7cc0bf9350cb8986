"""open_clip ViT state dicts -> transformers ``CLIPModel`` keys plus a ``CLIPConfig`` read from the shapes.

open_clip cannot be imported beside CPU torch (it imports torchvision), but its ViT-CLIP is the
same network as ``CLIPModel`` in another key layout, so its weights convert by renaming:

=====================================================  =================================================
open_clip                                              CLIPModel
=====================================================  =================================================
``visual.conv1.weight``                                ``vision_model.embeddings.patch_embedding.weight``
``visual.class_embedding``                             ``vision_model.embeddings.class_embedding``
``visual.positional_embedding``                        ``vision_model.embeddings.position_embedding.weight``
``visual.ln_pre`` / ``visual.ln_post``                 ``vision_model.pre_layrnorm`` / ``.post_layernorm``
``visual.proj`` (width, D)                             ``visual_projection.weight`` (D, width), transposed
``token_embedding`` / ``positional_embedding``         ``text_model.embeddings.token_embedding`` / ``.position_embedding``
``ln_final``                                           ``text_model.final_layer_norm``
``text_projection`` (width, D)                         ``text_projection.weight`` (D, width), transposed
``logit_scale``                                        ``logit_scale``
``*.transformer.resblocks.N.ln_1`` / ``ln_2``          ``*.encoder.layers.N.layer_norm1`` / ``layer_norm2``
``*.resblocks.N.attn.in_proj_{weight,bias}``           ``*.layers.N.self_attn.{q,k,v}_proj``, split in three
``*.resblocks.N.attn.out_proj``                        ``*.layers.N.self_attn.out_proj``
``*.resblocks.N.mlp.c_fc`` / ``mlp.c_proj``            ``*.layers.N.mlp.fc1`` / ``mlp.fc2``
=====================================================  =================================================

Text keys may also sit under ``text.`` (open_clip's ``CustomTextCLIP`` with its own text transformer).

What the keys cannot tell, the caller says:

- ``activation``: ``"quick_gelu"`` for OpenAI's weights and open_clip's ``*-quickgelu`` models,
  ``"gelu"`` for LAION's and most other open_clip trainings (open_clip's default ``nn.GELU``).
  A wrong choice runs but gives other embeddings, so there is no default.
- ``vision_heads`` / ``text_heads``: by default what open_clip's model configs use: text
  width / 64; vision width / 64 up to 1024 wide, and 16 above (ViT-H/14, ViT-g/14 and ViT-bigG/14
  have 80-, 88- and 104-wide heads). Give them for other models.
- Pooling: class-token pooling (open_clip's ``pool_type="tok"``) and argmax (end-of-text) text
  pooling are assumed; models configured with global average pooling look the same in the keys.

Towers ``CLIPModel`` cannot represent are refused by name: timm trunks (ConvNeXt, EVA...),
ModifiedResNet, Hugging Face text towers (e.g. xlm-roberta), attentional pooling (CoCa), layer
scale (``ls_init_value``), scaled-cosine attention, input patch norm, and SigLIP (``logit_bias``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bindguard._optional import require
from bindguard.errors import ConfigError, DataError

ACTIVATIONS = ("gelu", "quick_gelu")
EXTRA = "clip"
# open_clip's LayerNorm keeps torch's default eps
LAYER_NORM_EPS = 1e-5

# key pattern -> why CLIPModel cannot hold it (checked in order; the first match is reported)
UNSUPPORTED = (
    (r"^visual\.trunk\.", "a timm vision trunk (ConvNeXt, EVA, ...)"),
    (r"^visual\.(layer\d|attnpool|stem)", "a ModifiedResNet vision tower (RN50 and relatives)"),
    (r"^text\.transformer\.(embeddings|encoder)\.", "a Hugging Face text tower (e.g. xlm-roberta)"),
    (r"^(visual\.)?attn_pool|^text_decoder\.|\.attn_pool\.", "attentional pooling (CoCa)"),
    (r"\.ls_[12]\.gamma$", "layer scale (ls_init_value)"),
    (
        r"\.attn\.(logit_scale|head_scale)$|\.attn\.ln_inner\.|\.ln_attn\.|\.mlp\.ln\.",
        "scaled-cosine or normformer attention",
    ),
    (r"^visual\.patchnorm_pre_ln\.", "input patch norm"),
    (r"^logit_bias$", "a SigLIP sigmoid loss head (logit_bias)"),
    (r"^(text\.)?cls_emb$", "a text class token (CoCa)"),
)
# buffers open_clip recomputes; CLIPModel builds its own causal mask
IGNORED = (r"^(text\.)?attn_mask$",)
BLOCK = re.compile(r"^(visual|text)?\.?transformer\.resblocks\.(\d+)\.(.+)$")
BLOCK_PARTS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
TOP_LEVEL = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
REQUIRED = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
            "positional_embedding", "text_projection", "logit_scale")  # fmt: skip


def convert_open_clip(
    state: dict[str, torch.Tensor],
    *,
    activation: str,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    eos_token_id: int | None = None,
) -> tuple[dict[str, torch.Tensor], Any]:
    """Rename an open_clip ViT-CLIP state dict into ``CLIPModel``'s layout and infer its config.

    Args:
        state: the open_clip state dict (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``);
            a ``module.`` prefix (DataParallel) is stripped.
        activation: ``"quick_gelu"`` (OpenAI weights, ``*-quickgelu``) or ``"gelu"`` (LAION, most others).
        vision_heads, text_heads: attention heads per tower; see the module docstring for the defaults.
        eos_token_id: the end-of-text id the text tower pools at; default the last id of the
            vocabulary, which is where CLIP's tokenizer puts ``<|endoftext|>`` (open_clip pools at
            the highest id, so the two agree).

    Returns:
        (``CLIPModel`` state dict, ``transformers.CLIPConfig``); ``CLIPModel(config).load_state_dict(state)``
        takes them with ``strict=True``.

    Raises:
        ConfigError: for an unknown activation or head counts that do not divide the widths.
        DataError: for a tower ``CLIPModel`` cannot represent, or keys and shapes that do not form a ViT-CLIP.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation must be one of {', '.join(ACTIVATIONS)} (quick_gelu: OpenAI weights; gelu: LAION), "
            f"got {activation!r}"
        )
    state = _unwrapped(state)
    _refuse_unsupported(state)
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise DataError(f"open_clip state dict lacks {missing[0]!r}: not a ViT-CLIP checkpoint")
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if any(re.search(pattern, key) for pattern in IGNORED):
            continue
        if key in TOP_LEVEL:
            converted[TOP_LEVEL[key]] = tensor
        elif key in TRANSPOSED:
            converted[TRANSPOSED[key]] = tensor.t().contiguous()
        elif (match := BLOCK.match(key)) is not None:
            converted |= _block(match.group(1) or "text", int(match.group(2)), match.group(3), tensor, unknown, key)
        else:
            unknown.append(key)
    if unknown:
        raise DataError(f"open_clip key {unknown[0]!r} has no place in CLIPModel ({len(unknown)} such keys)")
    config = _config(state, activation, vision_heads, text_heads, eos_token_id)
    return converted, config


def write_converted(state: dict[str, torch.Tensor], config: Any, folder: str | Path) -> Path:
    """Write ``convert_open_clip``'s result as a folder ``create_clip`` reads: ``config.json`` + ``model.safetensors``.

    The tokenizer is not part of the state dict: copy ``vocab.json`` and ``merges.txt`` (or
    ``tokenizer.json``) from the Hugging Face repository the checkpoint came from into the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(str(folder / "config.json"))
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(folder / "model.safetensors"))
    return folder


def _unwrapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` without a DataParallel ``module.`` prefix, text keys at the top level."""
    state = dict(state)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: tensor for key, tensor in state.items()}
    if any(key.startswith("text.") and "resblocks" in key for key in state):  # CustomTextCLIP: text under "text."
        text_keys = ("token_embedding.", "positional_embedding", "ln_final.", "text_projection", "transformer.")
        state = {
            key[len("text.") :] if key.startswith("text.") and key[len("text.") :].startswith(text_keys) else key: value
            for key, value in state.items()
        }
    return state


def _refuse_unsupported(state: dict[str, torch.Tensor]) -> None:
    for pattern, what in UNSUPPORTED:
        hit = next((key for key in sorted(state) if re.search(pattern, key)), None)
        if hit is not None:
            raise DataError(
                f"open_clip checkpoint has {what} (key {hit!r}), which transformers' CLIPModel cannot represent; "
                "only plain ViT-CLIP towers convert"
            )
    if "text_projection.bias" in state:
        raise DataError(
            "open_clip checkpoint has a biased linear text projection (key 'text_projection.bias'), "
            "which CLIPModel cannot represent"
        )
    if "text_projection.weight" in state:  # proj_type="linear" without bias: the same map, stored (D, width)
        state["text_projection"] = state.pop("text_projection.weight").t()


def _block(tower: str, index: int, part: str, tensor: torch.Tensor, unknown: list[str], key: str) -> dict:
    prefix = f"{'vision_model' if tower == 'visual' else 'text_model'}.encoder.layers.{index}."
    name, _, kind = part.rpartition(".")
    if name == "attn" and kind in ("in_proj_weight", "in_proj_bias"):
        suffix = "weight" if kind == "in_proj_weight" else "bias"
        query, key_part, value = tensor.chunk(3, dim=0)
        return {
            f"{prefix}self_attn.q_proj.{suffix}": query.contiguous(),
            f"{prefix}self_attn.k_proj.{suffix}": key_part.contiguous(),
            f"{prefix}self_attn.v_proj.{suffix}": value.contiguous(),
        }
    if name in BLOCK_PARTS and kind in ("weight", "bias"):
        return {f"{prefix}{BLOCK_PARTS[name]}.{kind}": tensor}
    unknown.append(key)
    return {}


def _layers(state: dict[str, torch.Tensor], tower: str) -> int:
    pattern = re.compile(rf"^{tower}transformer\.resblocks\.(\d+)\.")
    indices = {int(match.group(1)) for key in state if (match := pattern.match(key))}
    if not indices or indices != set(range(len(indices))):
        raise DataError(f"open_clip state dict: the {tower or 'text '}transformer blocks are not numbered 0..N-1")
    return len(indices)


def _heads(given: int | None, width: int, default: int, tower: str) -> int:
    heads = default if given is None else given
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or width % heads:
        raise ConfigError(f"{tower}_heads must be a positive divisor of the {tower} width {width}, got {heads!r}")
    return heads


def _config(
    state: dict[str, torch.Tensor],
    activation: str,
    vision_heads: int | None,
    text_heads: int | None,
    eos_token_id: int | None,
) -> Any:
    transformers = require("transformers", extra=EXTRA)
    patch = state["visual.conv1.weight"]  # (width, 3, p, p)
    vision_width, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    positions = int(state["visual.positional_embedding"].shape[0])
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise DataError(
            f"open_clip visual.positional_embedding has {positions} rows; a square grid plus a class token is needed"
        )
    vocabulary, text_width = (int(d) for d in state["token_embedding.weight"].shape)
    projection = int(state["visual.proj"].shape[1])
    if int(state["text_projection"].shape[1]) != projection:
        raise DataError(
            f"open_clip visual.proj projects to {projection} but text_projection to "
            f"{int(state['text_projection'].shape[1])}: the towers do not share an embedding"
        )
    vision_layers, text_layers = _layers(state, "visual."), _layers(state, "")
    eos = vocabulary - 1 if eos_token_id is None else eos_token_id
    return transformers.CLIPConfig(
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": vision_layers,
            "num_attention_heads": _heads(vision_heads, vision_width, _vision_heads(vision_width), "vision"),
            "image_size": grid * patch_size,
            "patch_size": patch_size,
            "hidden_act": activation,
            "layer_norm_eps": LAYER_NORM_EPS,
        },
        text_config={
            "vocab_size": vocabulary,
            "hidden_size": text_width,
            "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": text_layers,
            "num_attention_heads": _heads(text_heads, text_width, max(1, text_width // 64), "text"),
            "max_position_embeddings": int(state["positional_embedding"].shape[0]),
            "hidden_act": activation,
            "layer_norm_eps": LAYER_NORM_EPS,
            "bos_token_id": eos - 1,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        projection_dim=projection,
        logit_scale_init_value=float(state["logit_scale"]),
    )


def _vision_heads(width: int) -> int:
    return max(1, width // 64) if width <= 1024 else 16
