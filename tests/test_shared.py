"""The suite over real data: the real tokenizer directories and every template of the shared corpus.

Whatever these templates do, the suite must never fail with an error of its own: a template's exception is a
finding. Skipped when ../shared is absent.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from templatecheck.checks import REGISTRY
from templatecheck.corpus import corpus_model
from templatecheck.model import Subject
from templatecheck.options import Options
from templatecheck.result import Outcome
from tests.conftest import FIXTURES, SHARED, fixture_model, needs_shared

pytestmark = needs_shared

REAL_MODELS = [
    "hermes-3-llama-3.1-8b",
    "llama-3.1-8b-instruct",
    "llama-3-8b-instruct-original",
    "mistral-7b-instruct-v0.3",
]


@pytest.fixture(scope="module", autouse=True)
def _import_transformers_first() -> None:
    _ = fixture_model("hermes-3-tiny").tokenizer  # see tests/test_plugin.py


def outcomes(report: Path) -> dict[tuple[str, str], str]:
    data = json.loads(report.read_text())
    return {(r["template"], r["check"]): r["outcome"] for m in data["models"] for r in m["results"]}


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_tokenizer_directories_run_without_errors_of_ours(
    pytester: pytest.Pytester, tmp_path: Path, name: str
) -> None:
    report = tmp_path / "report.json"
    pytester.runpytest("--model", str(SHARED / "models" / name), "--tc-report-json", str(report))
    found = outcomes(report)
    assert found and Outcome.ERROR.value not in found.values(), found


def test_real_findings_on_real_models(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """What the suite says about the real models, checked against what is known of them."""
    report = tmp_path / "report.json"
    models = [str(SHARED / "models" / n) for n in REAL_MODELS]
    pytester.runpytest(*[a for m in models for a in ("--model", m)], "--tc-report-json", str(report))
    data = {
        m["model"]: {(r["template"], r["check"]): r for r in m["results"]}
        for m in json.loads(report.read_text())["models"]
    }
    # Llama 3.1, Hermes 3 and Mistral templates write BOS and their tokenizers add it too, only to text
    # encoded with special tokens: a hazard of that harness path, not a defect of the model.
    for model in ("llama-3.1-8b-instruct", "hermes-3-llama-3.1-8b", "mistral-7b-instruct-v0.3"):
        result = data[model][("default", "double_bos")]
        assert result["outcome"] == "warning"
        assert [f["cause"] for f in result["findings"]] == ["double_bos.text_with_special_tokens"]
        assert "tokenizer(prompt) gives 2 BOS tokens" in result["message"]
    # Mistral's format has no assistant header: an empty generation prompt is right.
    assert data["mistral-7b-instruct-v0.3"][("default", "generation_prompt")]["outcome"] == "passed"
    assert data["hermes-3-llama-3.1-8b"][("default", "generation_prompt")]["outcome"] == "passed"
    assert data["hermes-3-llama-3.1-8b"][("tool_use", "renders")]["outcome"] == "passed"


def test_every_corpus_template_runs_without_errors_of_ours() -> None:
    model = corpus_model(SHARED / "corpus" / "templates", FIXTURES / "hermes-3-tiny")
    assert len(model.templates) >= 305
    assert len(REGISTRY) == 28
    counts: Counter[tuple[str, str]] = Counter()
    for template in model.templates.values():
        subject = Subject(model, template, Options(examples=10))  # a small sample keeps the sweep fast
        for check in REGISTRY.values():
            counts[check.name, check(subject).outcome.value] += 1  # an exception of ours fails the test here
    assert sum(counts.values()) == len(model.templates) * len(REGISTRY)
