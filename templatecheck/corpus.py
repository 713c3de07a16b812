"""Template collections stored as JSON files, one template (or one object of named templates) per file.

The format is the one of public chat-template corpora: ``{"template_id": ..., "chat_template": str | {name:
str}, "bos_token": ..., "eos_token": ...}``. Each template is paired with a tokenizer of the caller's choice.
"""

from __future__ import annotations

import json
from pathlib import Path

from templatecheck.model import Model, ModelRef, Template
from templatecheck.render import Limits


def read_corpus(folder: Path) -> dict[str, Template]:
    """Every template in ``folder/*.json``, named ``<file stem>#<template name>``."""
    templates: dict[str, Template] = {}
    for file in sorted(folder.glob("*.json")):
        entry = json.loads(file.read_text(encoding="utf-8")).get("chat_template")
        named = {"default": entry} if isinstance(entry, str) else dict(entry or {})
        for name, source in named.items():
            label = f"{file.stem}#{name}"
            templates[label] = Template(label, str(source), file.name)
    return templates


def corpus_model(folder: Path, tokenizer_dir: Path, limits: Limits | None = None) -> Model:
    """One model whose templates are the whole corpus, rendered and tokenized with ``tokenizer_dir``'s tokenizer."""
    return Model(
        ref=ModelRef(str(tokenizer_dir), path=tokenizer_dir),
        directory=tokenizer_dir,
        templates=read_corpus(folder),
        limits=limits or Limits(),
    )
