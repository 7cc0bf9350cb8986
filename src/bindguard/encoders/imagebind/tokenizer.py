"""The CLIP byte-level BPE tokenizer that ImageBind's text tower was trained with.

Text is html-unescaped, whitespace-collapsed and lower-cased, split into words, numbers (one
digit each) and punctuation runs, and each piece's UTF-8 bytes are merged by the ranked BPE
merges of ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI's CLIP vocabulary, MIT; see VOCAB_LICENSE).
A row is the start token, the pieces, the end token, zero padding: 77 ids. A text longer than
that keeps its first 75 pieces and still ends with the end token, so the tower always reads an
end-of-text feature. The ``ftfy`` mojibake repair that CLIP's reference applies first is left
out, so the result never depends on whether ``ftfy`` happens to be installed; it only changes
text with broken encodings.

Small test models have a vocabulary of fewer than 49,408 ids; ``fold_ids`` maps CLIP ids into it.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

from bindguard.encoders.imagebind.config import CLIP_VOCAB_SIZE, CONTEXT_LENGTH
from bindguard.errors import DataError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2  # 48,894 merges after the bytes, the word-final bytes and start/end
START, END = "<|startoftext|>", "<|endoftext|>"
WORD_END = "</w>"
# Pieces: the special tokens, English contractions, letter runs, single digits, runs of anything else but space.
PIECES = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """A printable character for each of the 256 bytes, so that BPE never sees whitespace or control codes.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes take the characters from
    U+0100 upwards, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    alphabet = {byte: chr(byte) for byte in printable}
    alphabet |= {byte: chr(256 + offset) for offset, byte in enumerate(others)}
    return alphabet


def vocab_path() -> Path:
    """The merges file shipped with the package."""
    return Path(str(resources.files("bindguard.encoders.imagebind") / VOCAB_FILE))


class ClipTokenizer:
    """Text -> (B, 77) CLIP token ids. Build it once (``clip_tokenizer()``): reading the merges takes ~0.2 s.

    Args:
        path: the gzip merges file (default: the one shipped with bindguard).

    Raises:
        DataError: for a missing or unreadable merges file.
    """

    def __init__(self, path: str | Path | None = None):
        import regex  # a dependency of transformers; needed for the Unicode classes \p{L} and \p{N}

        path = Path(path) if path is not None else vocab_path()
        try:
            lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read the CLIP BPE merges at {path} ({error})") from error
        merges = [tuple(line.split()) for line in lines[1 : 1 + MERGES]]  # line 0 is a version header
        if len(merges) != MERGES or any(len(pair) != 2 for pair in merges):
            raise DataError(f"{path} is not the CLIP BPE merges file ({MERGES} pairs after a header line expected)")
        symbols = list(byte_alphabet().values())
        vocabulary = [*symbols, *(symbol + WORD_END for symbol in symbols), *("".join(pair) for pair in merges)]
        self.ids = {token: index for index, token in enumerate([*vocabulary, START, END])}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.start, self.end = self.ids[START], self.ids[END]
        self.pattern = regex.compile(PIECES, regex.IGNORECASE)
        self.whitespace = regex.compile(r"\s+")
        self._cache: dict[str, list[str]] = {}

    def bpe(self, piece: str) -> list[str]:
        """Merge a piece's byte symbols, lowest-ranked pair first, until no known pair is left."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = [*piece[:-1], piece[-1] + WORD_END]  # the last symbol marks the end of a word
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:], strict=False), key=lambda candidate: self.ranks.get(candidate, MERGES))
            if pair not in self.ranks:
                break
            merged, index = [], 0
            while index < len(symbols):
                if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
                    merged.append(symbols[index] + symbols[index + 1])
                    index += 2
                else:
                    merged.append(symbols[index])
                    index += 1
            symbols = merged
        self._cache[piece] = symbols
        return symbols

    def encode(self, text: str) -> list[int]:
        """The ids of a text's pieces, without start and end tokens."""
        text = self.whitespace.sub(" ", html.unescape(html.unescape(text)).strip()).strip().lower()
        alphabet = byte_alphabet()
        ids: list[int] = []
        for piece in self.pattern.findall(text):
            symbols = "".join(alphabet[byte] for byte in piece.encode("utf-8"))
            ids.extend(self.ids[symbol] for symbol in self.bpe(symbols))
        return ids

    def __call__(self, texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """(B, context_length) ids: start, pieces (cut to fit), end, zeros."""
        rows = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start, *self.encode(text)][: context_length - 1] + [self.end]
            rows[row, : len(ids)] = torch.tensor(ids)
        return rows


@lru_cache(maxsize=1)
def clip_tokenizer() -> ClipTokenizer:
    """The shared tokenizer over the shipped merges."""
    return ClipTokenizer()


def fold_ids(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Map CLIP ids into a vocabulary of ``vocab_size`` ids (test models), keeping the structure the tower needs.

    Padding stays 0, start becomes ``vocab_size - 2`` and end ``vocab_size - 1`` (still the largest
    id, which is how the text head finds it); every other id is taken modulo ``vocab_size - 2``.
    """
    if vocab_size >= CLIP_VOCAB_SIZE:
        return ids
    folded = ids % (vocab_size - 2)
    folded = torch.where(ids == CLIP_VOCAB_SIZE - 2, vocab_size - 2, folded)
    return torch.where(ids == CLIP_VOCAB_SIZE - 1, vocab_size - 1, folded)


def tokenize(texts: Sequence[str], *, vocab_size: int = CLIP_VOCAB_SIZE) -> torch.Tensor:
    """(B, 77) token ids for a text tower with ``vocab_size`` embeddings (CLIP's 49,408 or a folded test size)."""
    return fold_ids(clip_tokenizer()(texts), vocab_size)
