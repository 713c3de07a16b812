"""The template layer on real templates: the four shared tokenizer directories and a sample of the corpus.

What the checks say here is what a publisher reads, so each known root cause is asserted once, with its cause
and severity, and not again under another check. Skipped when ../shared is absent.
"""

from __future__ import annotations

from functools import cache

import pytest

from templatecheck.checks import REGISTRY
from templatecheck.corpus import corpus_model
from templatecheck.model import Model, Subject, load_model
from templatecheck.result import CheckResult, Layer, Outcome
from tests.conftest import FIXTURES, SHARED, needs_shared

pytestmark = needs_shared


@cache
def real(name: str) -> Model:
    return load_model(str(SHARED / "models" / name))


def run(model: str, check: str, template: str = "default") -> CheckResult:
    loaded = real(model)
    return REGISTRY[check](Subject(loaded, loaded.templates[template]))


def causes(result: CheckResult, outcome: Outcome) -> list[str]:
    return [f.cause for f in result.findings if f.outcome is outcome]


def test_llama3_original_always_writes_the_assistant_header_one_finding() -> None:
    prompt = run("llama-3-8b-instruct-original", "generation_prompt")
    assert prompt.outcome is Outcome.FAILED
    assert causes(prompt, Outcome.FAILED) == ["generation_prompt.always_added"]
    assert (
        "'<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n' at the end of every conversation"
        in (prompt.message)
    )
    stability = run("llama-3-8b-instruct-original", "prefix_stability")
    assert stability.outcome is Outcome.PASSED, stability.message
    assert causes(stability, Outcome.PASSED) == ["generation_prompt.always_added"]


def test_llama31_drops_content_next_to_tool_calls_once() -> None:
    result = run("llama-3.1-8b-instruct", "tools")
    assert "tools.content_dropped_with_calls" in causes(result, Outcome.FAILED)
    assert "tools.result_reencoded" in causes(result, Outcome.FAILED)  # string results go through | tojson
    fidelity = run("llama-3.1-8b-instruct", "content_fidelity")
    assert "tools.content_dropped_with_calls" not in causes(fidelity, Outcome.FAILED)
    assert "tools.content_dropped_with_calls" in causes(fidelity, Outcome.PASSED)


def test_llama31_refusal_of_parallel_calls_is_one_warning() -> None:
    """The template's one raise_exception ("only supports single tool-calls") is reported once, by tools,
    naming each shape it refuses; the sample renders asks for one call per turn."""
    refused = [f for f in run("llama-3.1-8b-instruct", "tools").findings if f.cause == "tools.refused"]
    assert len(refused) == 1 and refused[0].outcome is Outcome.WARNING
    assert "This model only supports single tool-calls at once!" in refused[0].message
    assert "\n  also: parallel tool calls: template refused: " in refused[0].message
    rendered = run("llama-3.1-8b-instruct", "renders")
    assert rendered.outcome is Outcome.PASSED and not rendered.findings, rendered.message


def test_llama31_writes_a_fixed_date_and_prints_list_content_as_a_repr() -> None:
    date = run("llama-3.1-8b-instruct", "clock")
    assert causes(date, Outcome.WARNING) == ["clock.date_fixed"]
    assert "'26 Jul 2024'" in date.message and "--tc-template-var date_string=..." in date.message
    fidelity = run("llama-3.1-8b-instruct", "content_fidelity")
    assert "content_fidelity.list_content_repr" in causes(fidelity, Outcome.FAILED)


def test_mistral_v03_tool_calls_are_html_escaped() -> None:
    result = run("mistral-7b-instruct-v0.3", "tools")
    assert "tools.html_escaped" in causes(result, Outcome.FAILED)
    assert "&#34;name&#34;" in next(f.message for f in result.findings if f.cause == "tools.html_escaped")
    assert "tools.refused" in causes(result, Outcome.WARNING)  # content next to tool calls, refused clearly
    stability = run("mistral-7b-instruct-v0.3", "prefix_stability")
    assert "prefix_stability.system_moved" in causes(stability, Outcome.WARNING)
    assert causes(stability, Outcome.FAILED) == []


def test_hermes3_tool_use_prints_dict_results_as_a_repr_and_writes_broken_tool_json() -> None:
    result = run("hermes-3-llama-3.1-8b", "tools", "tool_use")
    failed = causes(result, Outcome.FAILED)
    assert "tools.result_repr" in causes(
        result, Outcome.WARNING
    )  # dicts reach it through apply_chat_template only
    assert "tools.json_invalid" in failed  # a raw newline inside the description string: never valid JSON
    assert "tools.content_dropped_with_calls" in failed


@pytest.mark.parametrize(
    "model", ["hermes-3-llama-3.1-8b", "llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3"]
)
def test_generation_prompt_history_and_role_orders_of_the_other_real_models_pass(model: str) -> None:
    for check in ("generation_prompt", "prefix_stability", "role_policy"):
        result = run(model, check)
        assert result.outcome is not Outcome.FAILED, (check, result.message)


def test_a_corpus_sample_gives_every_finding_a_registered_cause() -> None:
    model = corpus_model(SHARED / "corpus" / "templates", FIXTURES / "hermes-3-tiny")
    from templatecheck.options import Options

    checks = [c for c in REGISTRY.values() if c.layer is Layer.TEMPLATE]
    for template in list(model.templates.values())[::9]:
        subject = Subject(model, template, Options(examples=10))
        for check in checks:
            for finding in check(subject).findings:
                assert not finding.cause.endswith(".unclassified"), (
                    template.name,
                    check.name,
                    finding.message,
                )
