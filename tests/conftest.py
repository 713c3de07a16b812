from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

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


def fixture_script(name: str) -> ModuleType:
    """A script of ``fixtures/`` (``build``, ``build_families``, ``train_tiny``) imported as a module."""
    spec = importlib.util.spec_from_file_location(f"fixtures_{name}", FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module
