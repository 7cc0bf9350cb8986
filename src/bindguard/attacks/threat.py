"""Threat models: a norm and a budget relative to the modality's domain, applied in its raw domain."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch

from bindguard.errors import ConfigError
from bindguard.modalities import InputSpec

NORMS = ("linf", "l2")


# One ASCII decimal, e.g. "4", "0.01", ".5", "1e-3"; a fraction joins two of them with "/".
_DECIMAL = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_EPS_TEXT = re.compile(rf"({_DECIMAL})(?:/({_DECIMAL}))?")
_HOW_TO_WRITE = "write a fraction such as 4/255 or a number such as 0.01"


def parse_eps(text: str | float) -> float:
    """Parse ``"4/255"``, ``"0.01"`` or a number into a relative budget > 0 (finite).

    The upper bound depends on the norm, so ``ThreatModel`` checks it: an Linf budget is at most the
    whole range (1), while an L2 budget is a norm over the whole input and may exceed 1.

    Args:
        text: a fraction or decimal in ASCII digits (surrounding whitespace is ignored), or a number.

    Returns:
        The budget as a fraction of the modality's domain range.

    Raises:
        ConfigError: for malformed, non-positive or non-finite values, and for anything
            that is neither a string nor a number (booleans included).
    """
    if isinstance(text, bool) or not isinstance(text, (str, numbers.Real)):
        raise ConfigError(f"eps must be a number or a string, got {_shown(text)}; {_HOW_TO_WRITE}")
    if isinstance(text, str):
        value = _parse_eps_text(text)
    else:
        try:
            value = float(text)
        except OverflowError:  # an int or Fraction beyond the float range
            value = math.inf
    _check_eps(value, text)
    return value


def _parse_eps_text(text: str) -> float:
    match = _EPS_TEXT.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"eps {_shown(text)} is malformed; {_HOW_TO_WRITE}")
    # float() of ASCII decimals cannot raise and, unlike Fraction, stays fast for huge exponents;
    # an overflow becomes inf and an underflow 0, both refused by _check_eps.
    numerator = float(match.group(1))
    if match.group(2) is None:
        return numerator
    denominator = float(match.group(2))
    if denominator == 0:
        if re.search("[1-9]", re.split("[eE]", match.group(2))[0]):
            return math.inf  # a denominator so small it underflowed: the quotient is beyond any domain
        raise ConfigError(f"eps {_shown(text)} is malformed (division by zero); {_HOW_TO_WRITE}")
    return numerator / denominator  # IEEE division: exact operands give the correctly rounded quotient


def _check_eps(value: float, given: object) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"eps must be > 0 and finite, got {_shown(given)}; {_HOW_TO_WRITE}")


def _shown(given: object, limit: int = 60) -> str:
    """``repr`` for an error message: one line (repr escapes line breaks), long texts cut short."""
    shown = repr(given)
    if len(shown) <= limit:
        return shown
    return f"{shown[: limit - 3]}... ({len(given) if isinstance(given, str) else len(shown)} characters)"


@dataclass(frozen=True)
class ThreatModel:
    """A perturbation budget.

    Attributes:
        norm: ``"linf"`` or ``"l2"``.
        eps: budget as a fraction of the modality's domain range, so ``4/255`` means the same
            relative budget in every modality. Point clouds use per-coordinate Linf and per-point L2.
    """

    norm: str
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; allowed: {', '.join(NORMS)}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (numbers.Real, str)):
            raise ConfigError(f"eps must be a number or a string such as '4/255', got {self.eps!r}")
        given = self.eps
        object.__setattr__(self, "eps", parse_eps(self.eps))  # frozen: normalise strings and ints once
        if self.norm == "linf" and self.eps > 1:
            raise ConfigError(
                f"eps {_shown(given)} is larger than the whole domain (an Linf eps is relative to the domain's range: "
                "1 = the full range); use e.g. 4/255"
            )

    @classmethod
    def linf(cls, eps: float | str) -> ThreatModel:
        return cls("linf", eps)

    @classmethod
    def l2(cls, eps: float | str) -> ThreatModel:
        return cls("l2", eps)

    @classmethod
    def parse(cls, norm: str, eps: float | str) -> ThreatModel:
        return cls(norm.strip().lower(), eps)

    def absolute(self, spec: InputSpec) -> float:
        """The budget in the modality's own units."""
        return self.eps * spec.range

    def norms(self, delta: torch.Tensor, spec: InputSpec) -> torch.Tensor:
        """(B,) size of each sample's perturbation under this norm (points: worst point for L2)."""
        if self.norm == "linf":
            return delta.flatten(1).abs().amax(1)
        if spec.per_point_budget:
            return delta.norm(dim=-1).amax(1)
        return delta.flatten(1).norm(dim=1)

    def project(self, x: torch.Tensor, delta: torch.Tensor, spec: InputSpec) -> torch.Tensor:
        """Bring ``delta`` into the budget, then shrink it so ``x + delta`` stays in the domain."""
        budget = self.absolute(spec)
        if self.norm == "linf":
            delta = delta.clamp(-budget, budget)
        elif spec.per_point_budget:
            per_point = delta.norm(dim=-1, keepdim=True)  # (B, N, 1)
            delta = delta * (budget / per_point.clamp(min=budget))
        else:
            view = (-1,) + (1,) * (delta.dim() - 1)
            delta = delta * (budget / delta.flatten(1).norm(dim=1).clamp(min=budget)).view(view)
        return spec.clip_delta(x, delta)

    def ascent(self, gradient: torch.Tensor, spec: InputSpec) -> torch.Tensor:
        """The steepest-ascent direction of unit size under this norm (sign for Linf, normalised for L2)."""
        if self.norm == "linf":
            return gradient.sign()
        if spec.per_point_budget:
            return gradient / gradient.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        view = (-1,) + (1,) * (gradient.dim() - 1)
        return gradient / gradient.flatten(1).norm(dim=1).clamp(min=1e-12).view(view)

    def random_delta(
        self, x: torch.Tensor, spec: InputSpec, generator: torch.Generator, *, within: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """A random start inside the budget and the domain (uniform in the Linf box; random radius for L2).

        ``within=(start, total)``: ``x`` is rows ``start:start+len(x)`` of a batch of ``total`` rows (a
        batch split among processes); the whole batch's draw is made and this part of it returned,
        so each row starts where it would in one process.
        """
        budget = self.absolute(spec)
        start, total = within or (0, x.shape[0])
        rows = slice(start, start + x.shape[0])

        def draw(sample: Callable[..., torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
            return sample((total, *shape[1:]), generator=generator, device=x.device, dtype=x.dtype)[rows]

        if self.norm == "linf":
            return spec.clip_delta(x, (2 * draw(torch.rand, x.shape) - 1) * budget)
        direction = self.ascent(draw(torch.randn, x.shape), spec)
        radius_shape = x.shape[:2] + (1,) if spec.per_point_budget else (x.shape[0],) + (1,) * (x.dim() - 1)
        radius = draw(torch.rand, radius_shape) * budget
        return spec.clip_delta(x, direction * radius)

    def __str__(self) -> str:
        fraction = Fraction(self.eps).limit_denominator(1000)
        shown = (
            f"{fraction.numerator}/{fraction.denominator}"
            if abs(float(fraction) - self.eps) < 1e-12 and fraction.denominator != 1
            else f"{self.eps:g}"
        )
        return f"{self.norm} eps={shown}"
