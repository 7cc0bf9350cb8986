"""Rewrites of frozen encoders that keep their function but make forward+backward cheaper on CPU.

An eval-mode BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``.
When it directly follows a convolution whose output nothing else reads, it can be folded into that
convolution's weight and bias:

    W' = W * s[:, None, ...],   b' = (b - mean) * s + beta,   with s = gamma / sqrt(var + eps)

so the folded model computes the same outputs (up to float rounding) and the same input gradients,
while every forward and backward skips one elementwise pass over the activation.

Storing the convolution weights channels-last (NHWC) lets oneDNN run the convolutions without
reordering every activation to and from its blocked layout, on the way in and on the way back.

On 2 CPU cores the two together make a TinyBind / EfficientNet-Lite0 forward+backward 1.6-2.5x
faster (PointNet: 1.2x; ``benchmarks/attack_speed.py``, measured table in ``benchmarks/README.md``).

Usage::

    fast = optimize_frozen(encoder)   # a copy: BN folded, conv weights channels-last; encoder untouched
    fast = fold_batch_norms(encoder)  # folding only
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from bindguard.errors import ConfigError

__all__ = ["fold_batch_norms", "folded_pairs", "optimize_frozen", "to_channels_last"]


class _LeafTracer(fx.Tracer):
    """Symbolic tracer that keeps every convolution and BatchNorm (custom subclasses too) as one call."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, (_ConvNd, _BatchNorm)) or super().is_leaf_module(module, qualified_name)


def _foldable_conv(module: nn.Module) -> bool:
    return isinstance(module, _ConvNd) and not module.transposed


def _foldable_norm(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm) and module.running_mean is not None and module.running_var is not None


def _pairs_in(module: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BN name) pairs, relative to ``module``, that a trace of its ``forward`` proves foldable.

    A pair qualifies when the BN reads the conv's output and nothing else does, and each module is
    called exactly once in the traced forward (a shared module cannot be rewritten for one call only).
    """
    graph = _LeafTracer().trace(module)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        norm = module.get_submodule(node.target)
        source = node.args[0]
        if not _foldable_norm(norm) or not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        conv = module.get_submodule(source.target)
        if (
            _foldable_conv(conv)
            and len(source.users) == 1
            and calls[node.target] == 1
            and calls[source.target] == 1
            and conv.out_channels == norm.num_features
        ):
            pairs.append((source.target, node.target))
    return pairs


def _contains_norm(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


def folded_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BN name) pairs of ``module`` that ``fold_batch_norms`` folds, as qualified names.

    ``module.forward`` is traced symbolically with ``torch.fx``; where it cannot be traced (input
    dispatch on dictionaries or strings, data-dependent branches), its children are tried instead,
    recursively. Subtrees without any BatchNorm are skipped.
    """
    if not _contains_norm(module):
        return []
    try:
        return _pairs_in(module)
    except Exception:  # fx raises many kinds of errors on untraceable code; fall back to the children
        pairs = []
        for name, child in module.named_children():
            pairs += [(f"{name}.{conv}", f"{name}.{norm}") for conv, norm in folded_pairs(child)]
        return pairs


@torch.no_grad()
def _fold(conv: _ConvNd, norm: _BatchNorm) -> _ConvNd:
    """A copy of ``conv`` (same class, so custom padding in its ``forward`` is kept) with ``norm`` folded in."""
    folded = copy.deepcopy(conv)
    weight = conv.weight.detach().double()
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach().double()
    shift = -norm.running_mean.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach().double()
    if conv.bias is not None:
        shift = shift + conv.bias.detach().double() * scale
    view = (-1,) + (1,) * (weight.dim() - 1)
    requires_grad = conv.weight.requires_grad
    folded.weight = nn.Parameter((weight * scale.view(view)).to(conv.weight.dtype), requires_grad=requires_grad)
    folded.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=requires_grad)
    return folded


def _refuse_training(module: nn.Module, what: str) -> None:
    training = [name or type(module).__name__ for name, m in module.named_modules() if m.training]
    if training:
        more = " and others" if len(training) > 3 else ""
        verb = "is" if len(training) == 1 else "are"
        raise ConfigError(
            f"{what} needs a module in eval mode, but {', '.join(training[:3])}{more} {verb} in training mode; "
            "fix: call module.eval() first (folding freezes the BatchNorm statistics)"
        )


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """A copy of a frozen, eval-mode ``module`` with each BatchNorm folded into the convolution before it.

    Conv1d/2d/3d (and subclasses such as EfficientNet-Lite's 'SAME'-padding conv, whose ``forward``
    is kept) followed by BatchNorm1d/2d/3d are folded when the BN is the only reader of the conv's
    output; the BN is then replaced by ``nn.Identity``. Any other BN stays as it is, so the copy
    always computes the same function. The original module is never modified.

    Args:
        module: an encoder or any module, in eval mode (``module.eval()``), every submodule included.

    Returns:
        The folded copy, in eval mode, of the same class as ``module``.

    Raises:
        ConfigError: when ``module`` or any submodule is in training mode (a training-mode BN
            normalises with batch statistics, which no fixed weights can reproduce).
    """
    _refuse_training(module, "fold_batch_norms")
    folded = copy.deepcopy(module)
    pairs = folded_pairs(folded)  # traced on the copy, so that no side effect of tracing reaches the original
    for conv_name, norm_name in pairs:
        conv = folded.get_submodule(conv_name)
        norm = folded.get_submodule(norm_name)
        folded.set_submodule(conv_name, _fold(conv, norm))
        folded.set_submodule(norm_name, nn.Identity())
    return folded.eval()


def to_channels_last(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose 4-D parameters and buffers (2-D conv weights) are stored channels-last.

    Values are unchanged, so is the function; convolutions given a channels-last weight run in NHWC
    and hand channels-last activations on. Inputs need no conversion. The original is not modified.
    """
    return _nhwc_in_place(copy.deepcopy(module))


def _nhwc_in_place(module: nn.Module) -> nn.Module:
    # only 4-D tensors: Module.to(memory_format=channels_last) would fail on 5-D (Conv3d) weights
    return module._apply(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)


def optimize_frozen(module: nn.Module, *, channels_last: bool | None = None) -> nn.Module:
    """A faster copy of a frozen, eval-mode module that computes the same function: BN folded, NHWC convs.

    Args:
        module: an encoder or any module in eval mode; it is not modified.
        channels_last: store conv weights channels-last; default: when the module lives on the CPU
            (measured there; on GPUs NHWC pays mainly for half precision).

    Raises:
        ConfigError: when ``module`` or any submodule is in training mode.
    """
    _refuse_training(module, "optimize_frozen")
    fast = fold_batch_norms(module)
    if channels_last is None:
        channels_last = all(p.device.type == "cpu" for p in fast.parameters())
    return _nhwc_in_place(fast) if channels_last else fast
