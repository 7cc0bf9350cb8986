"""The offline "spoken digits" audio set: the ten English digit names synthesised with espeak-ng.

Every clip is one digit word spoken by one of :data:`VOICES` (an espeak-ng English accent combined
with a voice variant) at a (speed, pitch) setting drawn from a seeded generator. The clips are
resampled to :data:`SAMPLE_RATE`, trimmed of silence, peak-normalised and stored as 16-bit FLAC (with
:data:`EFFECTIVE_BITS` significant bits) in a single zip archive with a ``manifest.json``, so the
benchmark needs neither network nor espeak-ng at run time. Rebuild the shipped asset with::

    python -m bindguard.data.builtin.spoken_digits src/bindguard/data/builtin/assets/spoken_digits.zip
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from bindguard.errors import DataError

__all__ = [
    "DIGIT_WORDS",
    "SAMPLE_RATE",
    "VOICES",
    "SpokenClip",
    "build_spoken_digits",
    "load_spoken_digits",
    "voice_split",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FORMAT_VERSION = 1
CLIPS_PER_VOICE_DIGIT = 3
SPEED_RANGE = (120, 200)  # words per minute, inclusive
PITCH_RANGE = (25, 75)  # espeak-ng pitch scale 0-99, inclusive
MAX_SECONDS = 1.0
PEAK = 0.9
SEED = 20240611

# Eight English accents x five variants each. Every variant appears exactly twice and every accent
# gets two male and two female variants plus either a Klatt-synthesiser variant or a third female
# one, so that accent and speaker timbre vary independently.
# Variants are named by their *file* name in espeak-ng-data/voices/!v: an unknown variant name
# silently falls back to the bare accent, which is why `_check_voices` verifies them up front.
# Novelty variants (whisper, croak, robots, announcer...) are left out because they are hard to
# understand even for people.
VOICES: tuple[str, ...] = (
    "en-gb+m1", "en-gb+m5", "en-gb+f1", "en-gb+f2", "en-gb+klatt",
    "en-us+m2", "en-us+m6", "en-us+f3", "en-us+f4", "en-us+klatt2",
    "en-gb-scotland+m3", "en-gb-scotland+m7", "en-gb-scotland+f5", "en-gb-scotland+linda",
    "en-gb-scotland+klatt3",
    "en-gb-x-gbclan+m4", "en-gb-x-gbclan+m8", "en-gb-x-gbclan+belinda", "en-gb-x-gbclan+steph",
    "en-gb-x-gbclan+klatt",
    "en-gb-x-rp+m2", "en-gb-x-rp+m8", "en-gb-x-rp+aunty", "en-gb-x-rp+f1", "en-gb-x-rp+klatt2",
    "en-gb-x-gbcwmd+m3", "en-gb-x-gbcwmd+m5", "en-gb-x-gbcwmd+f2", "en-gb-x-gbcwmd+f3",
    "en-gb-x-gbcwmd+klatt3",
    "en-029+m4", "en-029+m6", "en-029+f4", "en-029+f5", "en-029+linda",
    "en-us-nyc+m1", "en-us-nyc+m7", "en-us-nyc+belinda", "en-us-nyc+steph", "en-us-nyc+aunty",
)  # fmt: skip

# Keep only this many significant bits of each 16-bit sample. FLAC stores the always-zero low bits
# for free, which halves the archive (12.0 MB at 16 bits, 6.1 MB at 10) so that the 1200 clips fit the
# size budget of the shipped asset; the quantisation noise stays ~64 dB below the peak, inaudible
# next to the speech.
EFFECTIVE_BITS = 10

_FRAME_SECONDS = 0.01
_SILENCE_DB = -40.0  # frames this far below the loudest frame count as silence
_FADE_SECONDS = 0.01
_WORKERS = 2
_MANIFEST = "manifest.json"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamp so the same audio gives the same archive bytes
_REBUILD = "rebuild it with `bindguard data build`"
_INSTALL = "install it with `apt-get install espeak-ng`"
_CLIP_KEYS = ("file", "digit", "voice", "speed", "pitch")


@dataclass(frozen=True)
class SpokenClip:
    """One synthesised digit word.

    Attributes:
        waveform: float32 mono samples in [-1, 1] at :data:`SAMPLE_RATE`.
        digit: the digit spoken, 0-9.
        voice: the espeak-ng voice, ``accent+variant`` (e.g. ``"en-gb-scotland+f5"``).
        speed: speaking rate in words per minute.
        pitch: espeak-ng pitch setting, 0-99.
    """

    waveform: np.ndarray
    digit: int
    voice: str
    speed: int
    pitch: int


@dataclass(frozen=True)
class _Job:
    file: str
    digit: int
    voice: str
    speed: int
    pitch: int


def _espeak() -> str:
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise RuntimeError(f"espeak-ng is not installed (not found on PATH); {_INSTALL}")
    return executable


def _run(args: list[str]) -> str:
    try:
        result = subprocess.run(args, capture_output=True, check=True, text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        raise RuntimeError(f"`{' '.join(args)}` failed: {detail.strip()}") from error
    return result.stdout


def _espeak_version(executable: str) -> str:
    """Return the version banner without its install-specific "Data at: ..." tail."""
    banner = _run([executable, "--version"]).strip()
    return re.split(r"\s+Data at:", banner, maxsplit=1)[0].strip()


def _check_voices(executable: str, voices: Sequence[str]) -> None:
    """Fail early on accents or variants this espeak-ng lacks, instead of silently using another voice."""
    languages: set[str] = set()
    for line in _run([executable, "--voices=en"]).splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            languages.add(fields[1])
    variants: set[str] = set()
    for line in _run([executable, "--voices=variant"]).splitlines()[1:]:
        variants.update(field[3:] for field in line.split() if field.startswith("!v/"))
    missing = []
    for voice in voices:
        accent, _, variant = voice.partition("+")
        if accent not in languages or (variant and variant not in variants):
            missing.append(voice)
    if missing:
        raise RuntimeError(f"this espeak-ng lacks the voices {', '.join(missing)}; {_INSTALL} (version 1.51+)")


def _plan(voices: Sequence[str], seed: int) -> list[_Job]:
    """Every clip to synthesise, in archive order.

    Each voice draws from its own generator (keyed by a CRC of its name) so that adding or removing
    one voice leaves the settings of all the others unchanged. The settings of one (voice, digit) are
    drawn without replacement so that no two of its clips are identical.
    """
    speeds = SPEED_RANGE[1] - SPEED_RANGE[0] + 1
    pitches = PITCH_RANGE[1] - PITCH_RANGE[0] + 1
    jobs: list[_Job] = []
    for voice in voices:
        rng = np.random.default_rng([seed, zlib.crc32(voice.encode())])
        for digit in range(len(DIGIT_WORDS)):
            cells = rng.choice(speeds * pitches, size=CLIPS_PER_VOICE_DIGIT, replace=False)
            for take, cell in enumerate(cells.tolist()):
                speed, pitch = SPEED_RANGE[0] + cell // pitches, PITCH_RANGE[0] + cell % pitches
                jobs.append(_Job(f"clips/{digit}_{voice}_{take}.flac", digit, voice, speed, pitch))
    return jobs


def _trim(audio: np.ndarray) -> np.ndarray:
    """Drop leading and trailing frames whose RMS is under _SILENCE_DB relative to the loudest frame."""
    frame = round(_FRAME_SECONDS * SAMPLE_RATE)
    count = -(-audio.size // frame)
    frames = np.pad(audio, (0, count * frame - audio.size)).reshape(count, frame)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    voiced = np.flatnonzero(rms > rms.max() * 10 ** (_SILENCE_DB / 20))
    return audio[voiced[0] * frame : (voiced[-1] + 1) * frame]


def _condition(audio: np.ndarray, rate: int) -> np.ndarray:
    """Resample, trim, cut and normalise one raw espeak-ng waveform; returns int16 samples."""
    divisor = math.gcd(SAMPLE_RATE, rate)
    audio = resample_poly(audio.astype(np.float64), SAMPLE_RATE // divisor, rate // divisor)
    audio = _trim(audio)
    limit = round(MAX_SECONDS * SAMPLE_RATE)
    if audio.size > limit:
        audio = audio[:limit].copy()
        fade = round(_FADE_SECONDS * SAMPLE_RATE)
        audio[-fade:] *= np.linspace(1.0, 0.0, fade)  # avoid a click where a slow word is cut off
    audio = audio * (PEAK / np.abs(audio).max())
    step = 2 ** (16 - EFFECTIVE_BITS)
    return (np.round(audio * 32767 / step) * step).clip(-32768, 32767).astype(np.int16)


def _synthesise(executable: str, job: _Job, workdir: str) -> bytes:
    """Speak one digit with espeak-ng and return the conditioned clip as FLAC bytes."""
    wav = os.path.join(workdir, job.file.replace("/", "_") + ".wav")
    args = [executable, "-v", job.voice, "-s", str(job.speed), "-p", str(job.pitch), "-w", wav]
    _run([*args, DIGIT_WORDS[job.digit]])
    try:
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    finally:
        os.unlink(wav)
    if audio.size == 0 or not np.any(audio):
        raise RuntimeError(f"espeak-ng produced silence for {job.file} ({' '.join(args[1:7])})")
    samples = _condition(audio.mean(axis=1), rate)
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)  # level 8
    return buffer.getvalue()


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED  # FLAC is already compressed
    info.external_attr = 0o644 << 16
    return info


def build_spoken_digits(path: Path, *, progress: Callable[[int, int], None] | None = None) -> int:
    """Synthesise the spoken-digits set with espeak-ng and write it as one zip archive.

    The archive is written to a temporary file next to ``path`` and moved into place only when
    complete, so an interrupted build never leaves a truncated asset behind. The same espeak-ng
    version always yields the same manifest (and, with the same libFLAC, the same bytes).

    Args:
        path: where to write the zip archive; its parent directory is created if needed.
        progress: optional callback, called as ``progress(done, total)`` after each clip.

    Returns:
        The number of clips written.

    Raises:
        RuntimeError: espeak-ng is not installed, lacks one of :data:`VOICES`, or fails.
    """
    path = Path(path)
    executable = _espeak()
    _check_voices(executable, VOICES)
    version = _espeak_version(executable)
    jobs = _plan(VOICES, SEED)
    logger.info("synthesising %d clips over %d voices with %s", len(jobs), len(VOICES), version)

    clips: list[bytes | None] = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="spoken_digits_") as workdir, ThreadPoolExecutor(_WORKERS) as pool:
        # Most of the time is spent inside the espeak-ng subprocesses, so threads suffice.
        futures = {pool.submit(_synthesise, executable, job, workdir): index for index, job in enumerate(jobs)}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                clips[futures[future]] = future.result()
                if progress is not None:
                    progress(done, len(jobs))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # fail fast instead of synthesising the remaining clips
            raise

    manifest = {
        "format_version": FORMAT_VERSION,
        "sample_rate": SAMPLE_RATE,
        "espeak_ng_version": version,
        "effective_bits": EFFECTIVE_BITS,
        "clips": [{key: getattr(job, key) for key in _CLIP_KEYS} for job in jobs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream, zipfile.ZipFile(stream, "w") as archive:
            archive.writestr(_zip_info(_MANIFEST), json.dumps(manifest, indent=1) + "\n")
            for job, data in zip(jobs, clips, strict=True):
                assert data is not None  # every future completed above or raised
                archive.writestr(_zip_info(job.file), data)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; the asset should be world-readable
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("wrote %d clips to %s (%d bytes)", len(jobs), path, path.stat().st_size)
    return len(jobs)


def _field(path: Path, index: int, entry: Any, key: str, kind: type) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{path}: manifest clip #{index} lacks the key {key!r}; {_REBUILD}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{path}: manifest clip #{index} has a non-{kind.__name__} {key!r}; {_REBUILD}")
    return value


def load_spoken_digits(path: Path) -> list[SpokenClip]:
    """Read every clip of a spoken-digits archive written by :func:`build_spoken_digits`.

    Args:
        path: the zip archive.

    Returns:
        The clips in archive order (voice, then digit, then take).

    Raises:
        DataError: (a ``ValueError``) the archive is missing or unreadable, its manifest is not valid
            JSON, lacks keys or has another format version, or a clip is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: spoken-digits archive not found; {_REBUILD}")
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                manifest = json.loads(archive.read(_MANIFEST))
            except KeyError:
                raise DataError(f"{path}: archive has no {_MANIFEST}; {_REBUILD}") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DataError(f"{path}: {_MANIFEST} is not valid JSON ({error}); {_REBUILD}") from None
            if not isinstance(manifest, dict):
                raise DataError(f"{path}: {_MANIFEST} is not a JSON object; {_REBUILD}")
            for key in ("format_version", "sample_rate", "clips"):
                if key not in manifest:
                    raise DataError(f"{path}: {_MANIFEST} lacks the key {key!r}; {_REBUILD}")
            if manifest["format_version"] != FORMAT_VERSION:
                raise DataError(
                    f"{path}: format_version {manifest['format_version']!r} is not {FORMAT_VERSION}; {_REBUILD}"
                )
            rate = manifest["sample_rate"]
            if rate != SAMPLE_RATE:
                raise DataError(f"{path}: sample_rate {rate!r} is not {SAMPLE_RATE}; {_REBUILD}")
            if not isinstance(manifest["clips"], list) or not manifest["clips"]:
                raise DataError(f"{path}: {_MANIFEST} lists no clips; {_REBUILD}")
            clips: list[SpokenClip] = []
            for index, entry in enumerate(manifest["clips"]):
                name = _field(path, index, entry, "file", str)
                digit = _field(path, index, entry, "digit", int)
                if not 0 <= digit < len(DIGIT_WORDS):
                    raise DataError(f"{path}: manifest clip #{index} has digit {digit}, not 0-9; {_REBUILD}")
                try:
                    data = archive.read(name)
                except KeyError:
                    raise DataError(f"{path}: clip {name} is listed in {_MANIFEST} but missing; {_REBUILD}") from None
                try:
                    waveform, clip_rate = sf.read(io.BytesIO(data), dtype="float32")
                except (RuntimeError, TypeError, ValueError) as error:  # LibsndfileError is a RuntimeError
                    reason = getattr(error, "error_string", error)  # LibsndfileError's str() embeds a BytesIO repr
                    raise DataError(f"{path}: clip {name} is not readable FLAC ({reason}); {_REBUILD}") from None
                if clip_rate != SAMPLE_RATE or waveform.ndim != 1 or waveform.size == 0:
                    raise DataError(f"{path}: clip {name} is not non-empty mono {SAMPLE_RATE} Hz audio; {_REBUILD}")
                clips.append(
                    SpokenClip(
                        waveform=waveform,
                        digit=digit,
                        voice=_field(path, index, entry, "voice", str),
                        speed=_field(path, index, entry, "speed", int),
                        pitch=_field(path, index, entry, "pitch", int),
                    )
                )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as error:
        raise DataError(f"{path}: not a readable zip archive ({error}); {_REBUILD}") from None
    return clips


def voice_split(voices: Sequence[str], *, test_fraction: float = 0.25, seed: int = 0) -> tuple[set[str], set[str]]:
    """Split voice names into disjoint train and test sets, so every test voice is unseen in training.

    The split depends only on the set of names (not their order or repetition) and the seed.

    Args:
        voices: voice names; duplicates are ignored.
        test_fraction: share of the distinct voices held out for testing, strictly between 0 and 1.
        seed: seed of the shuffle.

    Returns:
        ``(train, test)``; both are non-empty when there are at least two distinct voices.

    Raises:
        ValueError: ``test_fraction`` is outside (0, 1) or there are fewer than two distinct voices.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    names = sorted(set(voices))
    if len(names) < 2:
        raise ValueError(f"need at least two distinct voices to split, got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    count = min(max(round(len(names) * test_fraction), 1), len(names) - 1)
    test = {names[i] for i in order[:count].tolist()}
    return set(names) - test, test


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bindguard.data.builtin.spoken_digits OUTPUT.zip")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("%d clips written", build_spoken_digits(Path(sys.argv[1])))
