"""Template collections stored as JSON files, one template (or one object of named templates) per file.

The format is the one of public chat-template corpora: ``{"template_id": ..., "chat_template": str | {name:
str}, "bos_token": ..., "eos_token": ...}``, read by :func:`templatecheck.model.read_corpus` (which
``--tc-chat-template DIR`` also uses). Each template is paired with a tokenizer of the caller's choice.
"""

from __future__ import annotations

from pathlib import Path

from templatecheck.model import Model, ModelRef, read_corpus
from templatecheck.render import Limits


def corpus_model(folder: Path, tokenizer_dir: Path, limits: Limits | None = None) -> Model:
    """One model whose templates are the whole corpus, rendered and tokenized with ``tokenizer_dir``'s tokenizer."""
    return Model(
        ref=ModelRef(str(tokenizer_dir), path=tokenizer_dir),
        directory=tokenizer_dir,
        templates=read_corpus(folder),
        limits=limits or Limits(),
    )
