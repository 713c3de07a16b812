"""Every finding of every static check, on every fixture and real model, has a registered cause it owns."""

from __future__ import annotations

import pytest

from templatecheck.causes import CAUSES
from templatecheck.checks import REGISTRY
from templatecheck.model import Subject, load_model
from templatecheck.options import Options
from templatecheck.result import Layer, Outcome
from tests.conftest import FIXTURES, SHARED, needs_shared

STATIC = [c for c in REGISTRY.values() if c.layer is not Layer.GENERATION]
MODELS = sorted(
    str(p.parent.relative_to(FIXTURES))
    for p in FIXTURES.glob("**/tokenizer_config.json")
    if p.parent.name != "base-no-template"
)


def _causes_of(directory: str) -> list[tuple[str, str, Outcome]]:
    model = load_model(directory)
    found = []
    for template in model.templates.values():
        subject = Subject(model, template, Options(examples=20))
        for check in STATIC:
            for finding in check(subject).findings:
                if finding.outcome in (Outcome.FAILED, Outcome.WARNING):
                    found.append((check.name, finding.cause, finding.outcome))
    return found


def _assert_registered(found: list[tuple[str, str, Outcome]], where: str) -> None:
    for check, cause, outcome in found:
        assert cause in CAUSES, f"{where}: {check} gave an unregistered cause {cause!r}"
        assert CAUSES[cause].check == check, f"{where}: {check} reported {cause!r}, which it does not own"
        rule = CAUSES[cause]
        assert outcome is rule.severity or rule.hazard_of is not None, f"{where}: {cause} as {outcome.value}"


@pytest.mark.parametrize("name", MODELS)
def test_every_finding_on_the_fixtures_has_a_registered_cause(name: str) -> None:
    _assert_registered(_causes_of(str(FIXTURES / name)), name)


@needs_shared
@pytest.mark.parametrize(
    "name",
    [
        "llama-3.1-8b-instruct",
        "hermes-3-llama-3.1-8b",
        "llama-3-8b-instruct-original",
        "mistral-7b-instruct-v0.3",
    ],
)
def test_every_finding_on_the_real_models_has_a_registered_cause(name: str) -> None:
    _assert_registered(_causes_of(str(SHARED / "models" / name)), name)
