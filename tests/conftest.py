from __future__ import annotations

import os
from pathlib import Path

import pytest

from templatecheck.model import Model, Subject, Template, load_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
SHARED = Path(os.environ.get("TEMPLATECHECK_SHARED", ROOT.parent / "shared"))

needs_shared = pytest.mark.skipif(
    not (SHARED / "corpus" / "templates").is_dir(),
    reason=f"the shared corpus and models are not at {SHARED} (set TEMPLATECHECK_SHARED to their folder)",
)

_MODELS: dict[str, Model] = {}


def fixture_model(name: str) -> Model:
    """A bundled fixture model, loaded once per test process."""
    if name not in _MODELS:
        _MODELS[name] = load_model(str(FIXTURES / name))
    return _MODELS[name]


def subject(name: str, template: str = "default") -> Subject:
    model = fixture_model(name)
    return Subject(model, model.templates[template])


def subject_with_template(base: str, source: str, name: str = "candidate") -> Subject:
    """A template of our own, rendered with the tokenizer of a fixture model."""
    model = fixture_model(base)
    return Subject(model, Template(name, source, "<test>"))
