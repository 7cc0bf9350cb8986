"""BatchNorm folding and channels-last copies compute the same function and leave the original alone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.encoders import create_encoder
from bindguard.encoders.efficientnet_lite import _SamePadConv, load_pretrained_lite0
from bindguard.encoders.fusion import fold_batch_norms, folded_pairs, optimize_frozen, to_channels_last
from bindguard.encoders.vision_trunk import VisionTrunk
from bindguard.errors import ConfigError

NORMS = nn.modules.batchnorm._BatchNorm


def _norms(module: nn.Module) -> int:
    return sum(isinstance(m, NORMS) for m in module.modules())


def _assert_same(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Equal up to float32 rounding, relative to the output's scale (trunk features reach ~15)."""
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(actual, expected, atol=tolerance * max(scale, 1.0), rtol=tolerance)


def _output_and_gradient(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    weights = torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)  # a loss that reads every output
    (gradient,) = torch.autograd.grad((out * weights).sum(), x)
    return out.detach(), gradient


@pytest.fixture(scope="module")
def plain() -> nn.Module:
    """TinyBind with its trunk as the ImageNet checkpoint defines it, BatchNorms included.

    ``create_tinybind`` ships the trunk already optimized; this one is what folding starts from.
    """
    model = create_encoder("tinybind")
    model.trunk = VisionTrunk(load_pretrained_lite0()).requires_grad_(False).eval()
    return model


@pytest.fixture(scope="module")
def images(test_benchmark, plain) -> torch.Tensor:
    """Normalised (4, 3, 64, 64) trunk inputs from real benchmark images."""
    with torch.no_grad():
        return plain.trunk_input(Modality.IMAGE, test_benchmark.data[Modality.IMAGE].inputs[:4])


@pytest.fixture(scope="module")
def points(test_benchmark) -> torch.Tensor:
    return test_benchmark.data[Modality.POINT].inputs[:4].clone()


@pytest.mark.parametrize("part", ["trunk", "point_net"])
def test_folded_part_has_the_same_outputs_and_input_gradients(plain, images, points, part) -> None:
    original = getattr(plain, part)
    x = images if part == "trunk" else points
    folded = fold_batch_norms(original)
    assert _norms(original) > 0 and _norms(folded) == 0, "every BN of the trunk and the PointNet folds"
    out, _ = _output_and_gradient(original, x)
    folded_out, _ = _output_and_gradient(folded, x)
    _assert_same(folded_out, out)
    # Gradients in float64: in float32 a rounding difference can move an activation across a ReLU6
    # kink, which changes the gradient locally for the original as much as for the folded copy.
    original64, x64 = copy.deepcopy(original).double(), x.double()
    out64, gradient64 = _output_and_gradient(original64, x64)
    folded_out64, folded_gradient64 = _output_and_gradient(fold_batch_norms(original64), x64)
    torch.testing.assert_close(folded_out64, out64, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(folded_gradient64, gradient64, atol=1e-10, rtol=1e-8)
    assert gradient64.abs().sum() > 0


def test_original_is_untouched(plain, images) -> None:
    trunk = plain.trunk
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    kinds = [type(m) for m in trunk.modules()]
    before = trunk(images)
    fold_batch_norms(trunk)
    optimize_frozen(trunk)
    assert [type(m) for m in trunk.modules()] == kinds
    assert set(trunk.state_dict()) == set(state)
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key
        assert value.is_contiguous(), key
    assert not trunk.training
    assert torch.equal(trunk(images), before)


def test_same_padding_conv_keeps_its_class_and_padding(plain) -> None:
    folded = fold_batch_norms(plain.trunk)
    assert isinstance(folded.stem, _SamePadConv) and folded.stem.bias is not None
    assert isinstance(folded.stem_norm, nn.Identity)
    for size in (33, 64, 50):  # odd and even sides: TensorFlow 'SAME' pads asymmetrically for even ones
        x = torch.randn(2, 3, size, size)
        _assert_same(folded(x), plain.trunk(x))


def test_whole_encoder_folds_through_its_untraceable_forward(plain, tinybind, test_benchmark) -> None:
    pairs = folded_pairs(plain)
    assert ("trunk.stem", "trunk.stem_norm") in pairs
    assert ("point_net.point_mlp.0", "point_net.point_mlp.1") in pairs
    assert len(pairs) == _norms(plain)
    # the shipped encoder (create_tinybind optimizes its trunk) must compute the same function too
    for fast in (fold_batch_norms(plain), optimize_frozen(plain), tinybind):
        assert type(fast) is type(plain) and not fast.training
        for modality in PERCEPTUAL_MODALITIES:
            x = test_benchmark.data[modality].inputs[:3]
            with torch.no_grad():
                torch.testing.assert_close(
                    fast.encode_modality(modality, x), plain.encode_modality(modality, x), atol=1e-5, rtol=1e-4
                )
    assert _norms(fold_batch_norms(plain)) == 0 and _norms(optimize_frozen(plain)) == 0


def test_channels_last_copy_has_the_same_function(plain, images) -> None:
    fast = to_channels_last(plain.trunk)
    assert fast.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.trunk.stem.weight.is_contiguous()
    _assert_same(fast(images), plain.trunk(images))
    optimized = optimize_frozen(plain.trunk)
    assert optimized.stem.weight.is_contiguous(memory_format=torch.channels_last) and _norms(optimized) == 0
    assert not optimize_frozen(plain.trunk, channels_last=False).stem.weight.is_contiguous(
        memory_format=torch.channels_last
    )


def test_training_mode_is_refused(plain) -> None:
    trunk = copy.deepcopy(plain.trunk).train()
    with pytest.raises(ConfigError, match=r"eval mode.*fix: call module.eval\(\)"):
        fold_batch_norms(trunk)
    with pytest.raises(ConfigError, match="training mode"):
        optimize_frozen(trunk)
    mixed = copy.deepcopy(plain.point_net).eval()
    mixed.point_mlp[1].train()  # one BN in training mode is enough to refuse
    with pytest.raises(ConfigError, match=r"point_mlp\.1 is in training mode"):
        fold_batch_norms(mixed)


class _Tricky(nn.Module):
    """BNs that must not fold: a conv output read twice, a shared conv, no running statistics, after Linear."""

    def __init__(self):
        super().__init__()
        self.read_twice = nn.Conv1d(3, 4, 1)
        self.norm_a = nn.BatchNorm1d(4)
        self.shared = nn.Conv1d(4, 4, 1)
        self.norm_b = nn.BatchNorm1d(4)
        self.no_stats_conv = nn.Conv1d(4, 4, 1)
        self.no_stats = nn.BatchNorm1d(4, track_running_stats=False)
        self.linear = nn.Linear(4, 4)
        self.norm_c = nn.BatchNorm1d(4)
        self.plain = nn.Conv1d(4, 4, 1, bias=False)
        self.norm_d = nn.BatchNorm1d(4, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.read_twice(x)
        y = self.norm_a(y) + y
        y = self.norm_b(self.shared(y)) + self.shared(y)
        y = self.norm_d(self.plain(self.no_stats(self.no_stats_conv(y))))
        return self.norm_c(self.linear(y.mean(-1)))


def test_only_provably_foldable_pairs_fold() -> None:
    torch.manual_seed(0)
    model = _Tricky()
    for module in model.modules():
        if isinstance(module, NORMS) and module.track_running_stats:
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            if module.affine:
                nn.init.uniform_(module.weight, 0.5, 2)
                nn.init.uniform_(module.bias, -1, 1)
    model.eval()
    assert folded_pairs(model) == [("plain", "norm_d")]
    folded = fold_batch_norms(model)
    assert isinstance(folded.norm_d, nn.Identity) and folded.plain.bias is not None
    assert all(isinstance(getattr(folded, n), NORMS) for n in ("norm_a", "norm_b", "no_stats", "norm_c"))
    x = torch.randn(5, 3, 7)
    _assert_same(folded(x), model(x))
