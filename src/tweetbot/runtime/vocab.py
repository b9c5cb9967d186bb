"""The character vocabulary: text <-> token ids.

Inference needs it (the sampler, the service), so it depends on nothing but numpy. Two symbols come first:
`EOS` (id 0) ends every post, so the model learns where a post stops and the sampler knows when to stop;
`UNK` (id 1) stands for every character too rare to get its own id.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

EOS = 0
UNK = 1
SPECIALS = ("<eos>", "<unk>")

# Preprocessing may replace every link or mention by one private-use character (params `links`/`mentions`),
# so the model spends one step on it; `render` shows them to people again.
LINK = "\ue000"
MENTION = "\ue001"
RENDERED = {LINK: "https://t.co/…", MENTION: "@user"}


def render(text: str) -> str:
    """The text for people to read: link and mention tokens become "https://t.co/…" and "@user"."""
    for token, shown in RENDERED.items():
        text = text.replace(token, shown)
    return text


class Vocab:
    def __init__(self, chars: Iterable[str]):
        self.chars: list[str] = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("a vocabulary holds distinct single characters")
        self.index = {char: i + len(SPECIALS) for i, char in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Vocab:
        """Every character seen at least `min_count` times, most frequent first (ties by code point)."""
        counts = Counter(char for text in texts for char in text)
        kept = [c for c, n in counts.items() if n >= min_count]
        return cls(sorted(kept, key=lambda c: (-counts[c], c)))

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text` (int32); unknown characters become UNK."""
        return np.fromiter((self.index.get(c, UNK) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`, stopping at the first EOS; UNK shows as U+FFFD."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            out.append("\ufffd" if i == UNK else self.chars[i - len(SPECIALS)])
        return "".join(out)

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of `text` that have no id, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def to_json(self) -> dict:
        return {"specials": list(SPECIALS), "chars": self.chars}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        if data.get("specials") != list(SPECIALS):
            raise ValueError(f"vocabulary specials {data.get('specials')} differ from {list(SPECIALS)}")
        return cls(data["chars"])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls.from_json(json.loads(Path(path).read_text()))
