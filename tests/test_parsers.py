"""Property tests for the parsers of user text: every input parses correctly or fails with a one-line BindguardError.

Each parser is driven three ways: valid values written out and read back, token soups built from near-misses
(unicode digits, signs, stray separators, huge exponents), and arbitrary unicode text.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bindguard._types import _BY_NAME, PERCEPTUAL_MODALITIES, Modality, parse_modalities
from bindguard.attacks import NORMS, ThreatModel, list_attacks, parse_eps
from bindguard.calibration.module import PARTS, parse_method
from bindguard.errors import BindguardError, ConfigError, UnknownNameError
from bindguard.evaluation.ensemble import STANDARD, STANDARD_ENSEMBLE, parse_ensemble
from bindguard.pipeline.setup import parse_threats

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Separators and look-alikes that a hand-typed or copy-pasted value may carry.
WHITESPACE = st.sampled_from(["", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028"])
# fmt: off
JUNK = [
    "", " ", ",", ",,", "+", "/", "//", ".", "-", "e", "E", "_", "\n", "\x00", "\u2028", "\u00a0", "nan", "inf",
    "NaN", "-inf", "Infinity", "all", "ALL", "None", "1e999", "1e-999", "1e99999999999999999999", "0", "00",
    "\u0664", "\uff14", "\u00b2", "\u0968", "\U0001d7d2", "'", '"', "\\", "{", "%s", "é", "İ", "\u212a", "\ufeff",
]
# fmt: on

#: Words each message must contain one of: how to write the value, or what is allowed.
HINTS = ("allowed", "known", "4/255", "use ", "give ", "keep one", "choose from", "write", "run it with")


def assert_one_line_error(error: BaseException) -> str:
    """The error is a BindguardError whose message is one line that says how to fix the input."""
    assert isinstance(error, BindguardError), f"{type(error).__name__} escaped: {error!r}"
    message = str(error)
    assert message and "\n" not in message and len(message.splitlines()) == 1, f"not one line: {message!r}"
    assert any(hint in message for hint in HINTS), f"no hint on how to fix it: {message!r}"
    return message


def outcome(parse, *args, **kwargs):
    """Call a parser; return ("ok", value) or ("error", message), failing on any non-BindguardError."""
    try:
        return "ok", parse(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - anything but a BindguardError is the failure under test
        return "error", assert_one_line_error(error)


def soup(tokens: list[str], *, max_size: int = 6) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(tokens), max_size=max_size).map("".join)


# ---------------------------------------------------------------- parse_eps

EPS_TOKENS = ["0", "1", "4", "9", "255", "000", ".", "/", "e", "E", "-", "+", "5", "e-3", "e+2", *JUNK]
_EXACT = decimal.Context(prec=80, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[decimal.DivisionByZero])


def exact_eps(text: str) -> Decimal | None:
    """The reference reading of an eps text, by Decimal: None where it is not an unsigned ASCII decimal or fraction."""
    core = text.strip()
    sides = core.split("/")
    if not core or not core.isascii() or len(sides) > 2:
        return None
    values = []
    for side in sides:
        if not side or side[0] in "+-" or set(side) - set("0123456789.eE+-"):
            return None
        try:
            values.append(Decimal(side))
        except decimal.InvalidOperation:  # malformed, or an exponent beyond what Decimal holds
            return None
    if len(values) == 2 and values[1] == 0:
        return None
    return values[0] if len(values) == 1 else _EXACT.divide(values[0], values[1])


def check_eps_text(text: str) -> None:
    expected = exact_eps(text)
    kind, result = outcome(parse_eps, text)
    if kind == "ok":
        assert expected is not None, f"parse_eps accepted {text!r}, which is not an unsigned decimal or fraction"
        assert result > 0 and math.isfinite(result)
        assert expected > 0, f"{text!r} -> {result}, exact {expected}"
        assert result == pytest.approx(float(expected), rel=1e-12, abs=1e-300)
        return
    assert "4/255" in result and repr(text)[:30] in result, f"message does not name {text!r}: {result!r}"
    sides = [Decimal(side) for side in text.strip().split("/")] if expected is not None else []
    sane = all(side == 0 or Decimal("1e-300") < side < Decimal("1e300") for side in sides)
    in_range = expected is not None and Decimal("1e-300") < expected < Decimal("1e300")
    assert not (sane and in_range), f"parse_eps refused {text!r}, a valid budget {expected}: {result}"


@PROPERTY
@given(
    numerator=st.integers(1, 10**6),
    extra=st.integers(0, 10**6),
    before=WHITESPACE,
    after=WHITESPACE,
)
def test_parse_eps_reads_fractions_exactly(numerator: int, extra: int, before: str, after: str) -> None:
    denominator = numerator + extra
    assert parse_eps(f"{before}{numerator}/{denominator}{after}") == numerator / denominator


@PROPERTY
@given(value=st.floats(min_value=1e-300, max_value=1.0, exclude_min=True), before=WHITESPACE, after=WHITESPACE)
def test_parse_eps_reads_decimals_back_exactly(value: float, before: str, after: str) -> None:
    assert parse_eps(f"{before}{value!r}{after}") == value  # repr may use an exponent: 1e-05
    assert parse_eps(value) == value
    assert ThreatModel.linf(repr(value)).eps == value


@PROPERTY
@given(value=st.one_of(st.floats(), st.integers(-(10**400), 10**400), st.fractions()))
def test_parse_eps_accepts_exactly_the_finite_positive_numbers_and_linf_at_most_1(value: float) -> None:
    kind, result = outcome(parse_eps, value)
    try:
        expected = float(value)
    except OverflowError:
        expected = math.inf
    if math.isfinite(expected) and expected > 0:
        assert (kind, result) == ("ok", expected)
        linf_kind, linf_result = outcome(ThreatModel.linf, value)
        if expected <= 1:
            assert linf_kind == "ok"
        else:
            assert linf_kind == "error" and "larger than the whole domain" in linf_result
    else:
        assert kind == "error" and "must be > 0" in result


@PROPERTY
@given(text=st.one_of(soup(EPS_TOKENS), st.text(max_size=20)))
def test_parse_eps_accepts_valid_text_and_refuses_the_rest_in_one_line(text: str) -> None:
    check_eps_text(text)


# fmt: off
@pytest.mark.parametrize(
    "text",
    [
        "", " ", "nan", "NaN", "inf", "-inf", "Infinity", "-1", "-4/255", "0", "0.0", "0/7", "1/0", "0/0", "abc",
        "4/255/2", "4//255", "4 / 255", "4/ 255", "1e999", "1e-999", "1e99999999999999999999", "1/1e-999",
        "1" * 400 + "/1", "1/" + "1" * 400, "9" * 5000, "\u0664/\u0662\u0665\u0665", "\uff14/255", "4/255,8/255",
        "4_0/255", "0x10", "+-1", "1e", "e5", ".", "/", "4/255\n8", "\x00",
    ],
)
# fmt: on
def test_parse_eps_refuses_with_one_line_that_names_the_text(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_eps(text)
    message = assert_one_line_error(caught.value)
    assert repr(text)[:30] in message and "4/255" in message


@pytest.mark.parametrize("text", ["2", "256/255", "1.0000001"])
def test_an_linf_budget_beyond_the_domain_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ThreatModel.linf(text)
    message = assert_one_line_error(caught.value)
    assert repr(text) in message and "4/255" in message and "larger than the whole domain" in message


@pytest.mark.parametrize("value", [None, True, False, b"4/255", [4 / 255], object(), Decimal("0.01"), 10**400])
def test_parse_eps_refuses_other_types_with_config_error(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_eps(value)
    assert_one_line_error(caught.value)


@pytest.mark.parametrize(
    ("text", "value"), [("1", 1.0), ("1/1", 1.0), (".5", 0.5), ("5e-1", 0.5), ("1E-2", 0.01), ("0.5/255", 0.5 / 255)]
)
def test_parse_eps_accepts_the_documented_spellings(text: str, value: float) -> None:
    assert parse_eps(text) == value


# ---------------------------------------------------------------- parse_modalities

MODALITY_NAMES = sorted(_BY_NAME)  # canonical keys and aliases


def spelled(name: str) -> st.SearchStrategy[str]:
    """``name`` in random case, with '-' for '_' and stray whitespace around it."""
    variants = st.sampled_from([name, name.upper(), name.title(), name.replace("_", "-")])
    return st.tuples(WHITESPACE, variants, WHITESPACE).map("".join)


@PROPERTY
@given(
    chosen=st.lists(st.sampled_from(PERCEPTUAL_MODALITIES), unique=True, min_size=1),
    data=st.data(),
)
def test_parse_modalities_round_trips_a_list_in_the_order_given(chosen: list[Modality], data: st.DataObject) -> None:
    assert parse_modalities(",".join(m.value for m in chosen), available=PERCEPTUAL_MODALITIES) == chosen
    assert parse_modalities([m.value for m in chosen], available=PERCEPTUAL_MODALITIES) == chosen
    aliases = {m: [name for name in MODALITY_NAMES if _BY_NAME[name] is m] for m in chosen}
    written = [data.draw(st.sampled_from(aliases[m]).flatmap(spelled)) for m in chosen]
    assert parse_modalities(",".join(written), available=PERCEPTUAL_MODALITIES) == chosen
    repeated = ",".join(written + written[::-1])
    assert parse_modalities(repeated, available=PERCEPTUAL_MODALITIES) == chosen  # repeats dropped, first kept


@PROPERTY
@given(available=st.lists(st.sampled_from(list(Modality)), unique=True, min_size=1).map(tuple), name=st.sampled_from(list(Modality)))
def test_parse_modalities_refuses_what_is_not_available(available: tuple[Modality, ...], name: Modality) -> None:
    assert parse_modalities(" ALL ", available=available) == list(available)
    kind, result = outcome(parse_modalities, name.value, available=available)
    if name in available:
        assert result == [name]
    else:
        assert kind == "error" and repr(name.value) in result and "allowed: all" in result


@PROPERTY
@given(text=st.one_of(soup([*MODALITY_NAMES, ",", " , ", "-", "_", "x", *JUNK]), st.text(max_size=20)))
def test_parse_modalities_parses_each_name_or_refuses_in_one_line(text: str) -> None:
    kind, result = outcome(parse_modalities, text, available=PERCEPTUAL_MODALITIES)
    parts = [part.strip().lower().replace("-", "_") for part in text.split(",") if part.strip()]
    if kind == "error":
        valid = all(_BY_NAME.get(part) in PERCEPTUAL_MODALITIES for part in parts)
        assert not (parts and valid), f"refused {text!r}, all of whose names are known: {result}"
        return
    if parts == ["all"]:
        assert result == list(PERCEPTUAL_MODALITIES)
    else:
        assert result == list(dict.fromkeys(_BY_NAME[part] for part in parts))


@pytest.mark.parametrize(
    ("names", "error"),
    [
        ("", ConfigError),
        (" , ,", ConfigError),
        ([], ConfigError),
        ("all,image", ConfigError),
        (["all", "all"], ConfigError),
        ("image,\u212amage", UnknownNameError),
        ("text", UnknownNameError),
        ("image\naudio", UnknownNameError),
        (None, ConfigError),
        (5, ConfigError),
        ([None], ConfigError),
        ({"image"}, ConfigError),
    ],
)
def test_parse_modalities_refusals_are_one_line(names: object, error: type[BindguardError]) -> None:
    with pytest.raises(error) as caught:
        parse_modalities(names, available=PERCEPTUAL_MODALITIES)
    assert_one_line_error(caught.value)


# ---------------------------------------------------------------- parse_ensemble

ZERO_SHOT_ATTACKS = [name for name in list_attacks() if name != "cross-modal"]


@PROPERTY
@given(names=st.lists(st.sampled_from(ZERO_SHOT_ATTACKS), unique=True, min_size=1), data=st.data())
def test_parse_ensemble_round_trips_a_list(names: list[str], data: st.DataObject) -> None:
    ensemble = parse_ensemble(",".join(names))
    assert ensemble.attack_names == names and ensemble.name == ",".join(names)
    written = [data.draw(st.tuples(WHITESPACE, st.sampled_from([name, name.upper()]), WHITESPACE).map("".join)) for name in names]
    assert parse_ensemble(",".join(written + written)).attack_names == names  # case, spaces and repeats


@PROPERTY
@given(names=st.lists(st.sampled_from([STANDARD, *ZERO_SHOT_ATTACKS]), min_size=1))
def test_parse_ensemble_expands_standard_and_keeps_first_members(names: list[str]) -> None:
    ensemble = parse_ensemble(",".join(names))
    expected: dict[str, object] = {}
    for name in names:
        for member in STANDARD_ENSEMBLE.members if name == STANDARD else [None]:
            expected.setdefault(member.attack if member else name, member)
    assert ensemble.attack_names == list(expected)
    for member in ensemble.members:
        if expected[member.attack] is not None:
            assert member == expected[member.attack]  # standard's options when it came first


@PROPERTY
@given(text=st.one_of(soup([STANDARD, *list_attacks(), ",", "-", "ce", "pgd ", *JUNK]), st.text(max_size=20)))
def test_parse_ensemble_parses_each_name_or_refuses_in_one_line(text: str) -> None:
    kind, result = outcome(parse_ensemble, text)
    parts = [part.strip().lower() for part in text.split(",") if part.strip()]
    if kind == "error":
        valid = all(part == STANDARD or part in ZERO_SHOT_ATTACKS for part in parts)
        assert not (parts and valid), f"refused {text!r}, all of whose names are known: {result}"
        return
    assert parts and all(part == STANDARD or part in ZERO_SHOT_ATTACKS for part in parts)
    assert set(result.attack_names) <= set(ZERO_SHOT_ATTACKS)
    assert len(set(result.attack_names)) == len(result.attack_names)


@pytest.mark.parametrize("text", ["", ",", " , ", "cross-modal", "pgd,autoattack", "pgd\nfgsm", "\x00", "standard;pgd"])
def test_parse_ensemble_refusals_are_one_line(text: str) -> None:
    with pytest.raises(BindguardError) as caught:
        parse_ensemble(text)
    assert_one_line_error(caught.value)


@pytest.mark.parametrize("text", [None, 3, ["pgd"]])
def test_parse_ensemble_refuses_other_types_with_config_error(text: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_ensemble(text)
    assert_one_line_error(caught.value)


# ---------------------------------------------------------------- parse_threats (pipeline.setup)

NORM_TEXT = st.one_of(
    st.sampled_from(NORMS).flatmap(lambda norm: st.tuples(WHITESPACE, st.sampled_from([norm, norm.upper()]), WHITESPACE).map("".join)),
    soup(["linf", "l2", "l1", "inf", "L", "2", *JUNK], max_size=3),
)


@PROPERTY
@given(
    budgets=st.lists(st.tuples(st.integers(1, 255), st.integers(0, 255)), min_size=1, max_size=4),
    norm=st.sampled_from(NORMS),
    before=WHITESPACE,
)
def test_parse_threats_reads_each_budget(budgets: list[tuple[int, int]], norm: str, before: str) -> None:
    texts = [f"{numerator}/{numerator + extra}" for numerator, extra in budgets]
    threats = parse_threats(",".join(before + text for text in texts), before + norm.upper())
    assert threats == [ThreatModel(norm, numerator / (numerator + extra)) for numerator, extra in budgets]
    assert parse_threats(texts, norm) == threats


@PROPERTY
@given(eps=st.one_of(soup([*EPS_TOKENS, ","]), st.text(max_size=20)), norm=NORM_TEXT)
def test_parse_threats_parses_or_refuses_in_one_line(eps: str, norm: str) -> None:
    kind, result = outcome(parse_threats, eps, norm)
    if kind == "ok":
        assert result and all(threat.norm == norm.strip().lower() for threat in result)
        assert [threat.eps for threat in result] == [parse_eps(part) for part in eps.split(",") if part.strip()]


# ---------------------------------------------------------------- parse_method (calibration.module)

CLASHES = ({"lora", "finetune"}, {"head", "residual-head"})


@PROPERTY
@given(parts=st.lists(st.sampled_from(PARTS), unique=True, min_size=1), data=st.data())
def test_parse_method_round_trips_in_data_flow_order(parts: list[str], data: st.DataObject) -> None:
    kind, result = outcome(parse_method, "+".join(parts))
    if any(clash <= set(parts) for clash in CLASHES):
        assert kind == "error" and "keep one" in result
        return
    assert result == tuple(part for part in PARTS if part in parts)
    written = [data.draw(st.tuples(WHITESPACE, st.sampled_from([part, part.upper()]), WHITESPACE).map("".join)) for part in parts]
    assert parse_method("+".join(written + written)) == result


@PROPERTY
@given(text=st.one_of(soup([*PARTS, "+", " + ", "lor", *JUNK]), st.text(max_size=20)))
def test_parse_method_parses_or_refuses_in_one_line(text: str) -> None:
    kind, result = outcome(parse_method, text)
    if kind == "ok":
        assert result and set(result) <= set(PARTS) and list(result) == sorted(result, key=PARTS.index)
