"""Which reference format a model follows: read from its templates, tokenizer files and ``config.json``.

Detection reads files only (``tokenizer.json``, ``tokenizer_config.json``, ``tekken.json``,
``tokenizer.model``); it imports neither transformers nor tokenizers. The templates' literals decide first
(every format's detector is asked, in :func:`~templatecheck.formats.formats` order); the tokenizer's control
tokens and kind and ``config.json`` then tell versions apart (Mistral v1/v3/v7, SentencePiece or Tekken,
Gemma 3). A model whose templates match no format is tried on its tokens alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from templatecheck.formats import NONE, formats, get
from templatecheck.formats.base import Evidence, Format

if TYPE_CHECKING:
    from templatecheck.model import Model
    from templatecheck.options import Options


@dataclass(frozen=True)
class Choice:
    """The reference format chosen for a model, and why: ``how`` is shown to the user."""

    format: Format | None
    how: str

    @property
    def name(self) -> str:
        return self.format.name if self.format is not None else NONE

    def describe(self) -> str:
        """The name and the full reason: ``llama3 (detected: the template writes ...)``."""
        return f"{self.name} ({self.how})"

    def short(self) -> str:
        """The name and how it was chosen: ``llama3 (detected)``, ``llama3 (--reference)``."""
        if self.how.startswith("--reference"):
            return f"{self.name} ({self.how})"
        return f"{self.name} ({'detected' if self.format is not None else 'not detected'})"


def choose(model: Model, options: Options) -> Choice:
    """The format ``--reference`` names, or the detected one; ``format`` is ``None`` for none."""
    if options.reference == NONE:
        return Choice(None, "--reference none")
    if options.reference is not None:
        return Choice(get(options.reference), "--reference")
    return detect(evidence_of(model))


def detect(evidence: Evidence) -> Choice:
    """The first format whose detector recognises the templates, else the tokens."""
    for pass_evidence, where in ((evidence, "template"), (replace(evidence, templates=()), "tokenizer")):
        if where == "tokenizer" and not evidence.tokens:
            break
        for fmt in formats():
            reason = fmt.detect(pass_evidence) if fmt.detect is not None else None
            if reason:
                return Choice(fmt, f"detected: {reason}")
    return Choice(
        None, "no known format detected from the template, tokenizer or config.json; pass --reference"
    )


def evidence_of(model: Model) -> Evidence:
    """What detection reads about ``model``."""
    tokens, kind = _tokenizer_facts(str(model.directory))
    return Evidence(
        tokens=tokens,
        templates=tuple(t.source for t in model.templates.values()),
        config=dict(model.config or {}),
        tokenizer_kind=kind,
    )


@lru_cache(maxsize=64)
def _tokenizer_facts(directory: str) -> tuple[frozenset[str], str]:
    root = Path(directory)
    tokens: set[str] = set()
    kind = "unknown"
    tokenizer = _load(root / "tokenizer.json")
    if isinstance(tokenizer, Mapping):
        tokens |= {t["content"] for t in tokenizer.get("added_tokens") or () if isinstance(t, Mapping)}
        parts = list(_types(tokenizer.get("pre_tokenizer"))) + list(_types(tokenizer.get("normalizer")))
        if "Metaspace" in parts or "Prepend" in parts:
            kind = "sentencepiece"
        elif "ByteLevel" in parts:
            kind = "bytelevel"
    config = _load(root / "tokenizer_config.json")
    if isinstance(config, Mapping):
        decoder = config.get("added_tokens_decoder") or {}
        tokens |= {t["content"] for t in decoder.values() if isinstance(t, Mapping) and "content" in t}
    if (root / "tekken.json").is_file():
        kind = "tekken"
    elif kind == "unknown" and any(root.glob("tokenizer.model*")):
        kind = "sentencepiece"
    return frozenset(tokens), kind


def _load(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None  # the tokenizer check reports unreadable files


def _types(node: Any) -> Iterator[str]:
    """Every ``type`` in a tokenizer.json component tree (``Sequence`` members included)."""
    if isinstance(node, Mapping):
        if isinstance(node.get("type"), str):
            yield node["type"]
        for value in node.values():
            yield from _types(value)
    elif isinstance(node, list):
        for value in node:
            yield from _types(value)
