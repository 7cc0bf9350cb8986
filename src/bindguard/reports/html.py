"""The self-contained HTML report: inline CSS, pictures as data URIs, no scripts, nothing fetched."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass

from bindguard.reports import rows as kinds
from bindguard.reports.examples import Example
from bindguard.reports.rows import format_eps
from bindguard.reports.sound import wav_bytes
from bindguard.reports.tables import Table, to_html

# What each sanity flag means, shown next to the flagged rows (after evaluation/flags.py).
FLAG_MEANINGS = {
    "non-deterministic": "two forward passes of the same input differ; randomness can mask gradients",
    "zero-gradients": "some inputs have an all-zero input gradient (gradient masking)",
    "large-eps-not-zero": "accuracy stays above chance at a very large budget, so the attack is too weak",
    "rises-with-steps": "accuracy is higher with twice the attack steps",
    "not-converged": "accuracy drops clearly with twice the steps; more steps are needed",
    "rises-with-eps": "robust accuracy grows with the budget",
    "black-box-beats-white-box": "the black-box Square attack broke samples every gradient attack missed",
    "bf16-disagrees": "attacked in bfloat16, some adversarial inputs were judged differently in float32 (float32 counts)",
}

# The page forbids every fetch except inline data, so a report cannot reach the network even by mistake.
POLICY = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1b1b1b; margin: 0 auto; max-width: 1240px; padding: 0 24px 48px; }
header { border-bottom: 3px solid #1b1b1b; margin-bottom: 12px; }
h1 { font-size: 26px; margin: 24px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
.meta { color: #555; margin: 0 0 12px; }
nav a { margin-right: 14px; }
.table-scroll { overflow-x: auto; margin: 8px 0 16px; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; color: #555; font-size: 12.5px; padding-top: 6px; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e3e3e3; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; border-bottom: 2px solid #bbb; white-space: normal; vertical-align: bottom; }
tbody tr:nth-child(even) { background: #fafafa; }
td.number, th.number { text-align: right; }
td.ok { color: #2e7d32; }
tr.flagged, tr.flagged:nth-child(even) { background: #fdecea; }
tr.flagged td:first-child { border-left: 4px solid #d62728; }
td.flag { color: #b71c1c; font-weight: 600; }
.box { border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.box.good { background: #e8f5e9; border: 1px solid #a5d6a7; }
.box.warning { background: #fdecea; border: 1px solid #ef9a9a; }
.box ul { margin: 6px 0 0; padding-left: 20px; }
figure { margin: 14px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
pre { background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12.5px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; }
dt { font-weight: 600; } dd { margin: 0; }
.players { display: flex; gap: 24px; flex-wrap: wrap; align-items: center; font-size: 13px; }
"""


@dataclass(frozen=True)
class Picture:
    """A PNG the report shows, and the file name it is also written under."""

    name: str
    png: bytes
    caption: str = ""
    example: Example | None = None


def _escape(value: object) -> str:
    return html.escape(str(value))


def _image(picture: Picture) -> str:
    data = base64.b64encode(picture.png).decode("ascii")
    caption = f"<figcaption>{_escape(picture.caption)}</figcaption>" if picture.caption else ""
    return (
        f'<figure id="figure-{_escape(picture.name)}"><img alt="{_escape(picture.caption or picture.name)}" '
        f'src="data:image/png;base64,{data}">{caption}</figure>'
    )


def _players(example: Example) -> str:
    """Clean and adversarial audio of the first sample, as data-URI WAV players."""
    rate = example.sample_rate
    players = []
    for label, waveform in (("clean", example.clean[0]), ("adversarial", example.adversarial[0])):
        data = base64.b64encode(wav_bytes(waveform, rate)).decode("ascii")
        players.append(
            f'<span>{label}: <audio controls preload="none" src="data:audio/wav;base64,{data}"></audio></span>'
        )
    return f'<div class="players">Listen to sample 1: {"".join(players)}</div>'


def _flag_summary(rows: list[dict]) -> str:
    flagged = [row for row in rows if row.get("flags")]
    if not flagged:
        return '<div class="box good">No sanity flags were raised.</div>'
    items = []
    for row in flagged:
        where = f"{row.get('modality', '?')}, {row.get('attack', row.get('method', ''))}"
        if "eps" in row:
            where += f", ε = {format_eps(row['eps'], row.get('norm', 'linf'))}"
        reasons = "; ".join(
            f"<b>{_escape(flag)}</b>: {_escape(FLAG_MEANINGS.get(flag, 'see the docs'))}" for flag in row["flags"]
        )
        items.append(f"<li>{_escape(where)}: {reasons}</li>")
    return (
        f'<div class="box warning">⚠ {len(flagged)} row(s) raised sanity flags; their numbers need a closer look '
        f"before they are trusted (highlighted in the tables).<ul>{''.join(items)}</ul></div>"
    )


def _flattened(settings: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as ``robust.steps: 5`` lines; lists joined with commas."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            lines += _flattened(value, f"{prefix}{key}.")
        elif isinstance(value, list | tuple):
            lines.append((prefix + key, ", ".join(str(item) for item in value) or "–"))
        else:
            lines.append(
                (prefix + key, "–" if value is None else json.dumps(value) if isinstance(value, bool) else str(value))
            )
    return lines


def _shown_provenance(provenance: dict) -> dict:
    """What to rerun and compare a run by: the command, the weights and data fingerprints (versions are shown above)."""
    return {key: value for key, value in provenance.items() if key != "versions"}


def _settings(results: dict) -> str:
    versions = results.get("versions") or {}
    fields = [
        ("model", results.get("model")),
        ("data", results.get("data")),
        ("seed", results.get("seed")),
        ("created", results.get("created")),
        ("versions", ", ".join(f"{name} {version}" for name, version in versions.items()) or "–"),
        *_flattened(results.get("settings") or {}),
        *_flattened(_shown_provenance(results.get("provenance") or {}), prefix="provenance."),
    ]
    return "<dl>" + "".join(f"<dt>{_escape(name)}</dt><dd>{_escape(value)}</dd>" for name, value in fields) + "</dl>"


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_escape(title)}</h2>{body}</section>'


def report_html(results: dict, tables: dict[str, Table], pictures: list[Picture]) -> str:
    """The whole report as one HTML string.

    Args:
        results: the results file's content (settings, versions and rows).
        tables: ``results_tables`` output, keyed clean, robust, caption, calibration, instance.
        pictures: robust plots (names ``robust-*``), calibration plots (``calibration-*``) and examples.
    """
    rows = results["rows"]
    title = f"bindguard report: {results.get('model', '?')} on {results.get('data', '?')}"

    def group(prefix: str) -> str:
        return "".join(_image(picture) for picture in pictures if picture.name.startswith(prefix))

    sections = [("summary", "Sanity flags", _flag_summary(rows)), ("settings", "Settings", _settings(results))]
    if "clean" in tables:
        sections.append(("clean", "Clean accuracy", to_html(tables["clean"])))
    if "robust" in tables:
        sections.append(("robust", "Under attack", to_html(tables["robust"]) + group("robust-")))
    if "caption" in tables:
        sections.append(("captions", "Caption retrieval", to_html(tables["caption"])))
    if "calibration" in tables:
        sections.append(("calibration", "Calibration", to_html(tables["calibration"]) + group("calibration-")))
    examples = [picture for picture in pictures if picture.example is not None]
    if examples:
        body = "".join(
            f"<h3>{_escape(picture.example.modality)}</h3>{_image(picture)}"
            + (_players(picture.example) if picture.example.modality == "audio" else "")
            for picture in examples
        )
        sections.append(("examples", "Example perturbations", body))
    if "instance" in tables:
        sections.append(("retrieval", "Cross-modal retrieval", to_html(tables["instance"])))
    navigation = "".join(f'<a href="#{anchor}">{_escape(name)}</a>' for anchor, name, _ in sections)
    modalities = ", ".join(kinds.modalities(row for row in rows if "modality" in row)) or "–"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_escape(title)}</h1>"
        f'<p class="meta">modalities: {_escape(modalities)} · seed {_escape(results.get("seed", "–"))} · '
        f"created {_escape(results.get('created', '–'))}</p><nav>{navigation}</nav></header>"
        + "".join(_section(anchor, name, body) for anchor, name, body in sections)
        + '<footer class="meta"><p>Written by <code>bindguard report</code>; every number comes from '
        "results.json in the same folder.</p></footer></body></html>\n"
    )
