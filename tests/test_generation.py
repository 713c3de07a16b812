"""The generation checks on the trained tiny model: the correct directory passes, each broken one fails with
the measured accuracy drop in its message."""

from __future__ import annotations

import importlib.util
import re

import pytest

from templatecheck.checks import REGISTRY, generation
from templatecheck.checks.generation import (
    INSTALL,
    clean_start,
    prepare,
    probe_accuracy,
    require_torch,
    stops,
    template_sensitivity,
    tool_call,
)
from templatecheck.checks.tokenizer import end_of_turn
from templatecheck.errors import TemplatecheckError
from templatecheck.model import Subject
from templatecheck.options import Options
from templatecheck.result import CheckResult, Layer, Outcome
from tests.conftest import fixture_model, subject

CHECKS = [stops, clean_start, probe_accuracy, template_sensitivity, tool_call]
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="needs torch: pip install torch==2.13.0"
)
GENERATE = Options(generate=True)


def run(check: object, name: str, template: str = "default") -> CheckResult:
    model = fixture_model(name)
    return check(Subject(model, model.templates[template], GENERATE))  # type: ignore[operator, no-any-return]


def score(message: str, label: str) -> int:
    """The n of the first "n/24 ... <label>" in a message."""
    found = re.search(r"(\d+)/24 (?:[^,.\n]*?)" + re.escape(label), message)
    assert found, f"no '<n>/24 … {label}' in:\n{message}"
    return int(found.group(1))


def test_the_generation_checks_are_registered_in_their_layer() -> None:
    names = [c.name for c in REGISTRY.values() if c.layer is Layer.GENERATION]
    assert names == ["stops", "clean_start", "probe_accuracy", "template_sensitivity", "tool_call"]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_every_check_is_skipped_without_generate(check: object) -> None:
    result = check(subject("hermes-3-tiny"))  # type: ignore[operator]
    assert result.outcome is Outcome.SKIPPED and result.message == "run with --tc-generate"


def test_require_torch_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generation.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        TemplatecheckError, match=re.escape("--tc-generate needs torch, which is not installed: pip install")
    ):
        require_torch()
    assert "pip install 'templatecheck[generate]'" in INSTALL and "pip install torch" in INSTALL
    with pytest.raises(TemplatecheckError, match="needs torch"):
        stops(
            Subject(fixture_model("tiny-chatml"), fixture_model("tiny-chatml").templates["default"], GENERATE)
        )


@needs_torch
def test_prepare_checks_the_probe_file_and_the_budget(tmp_path: object) -> None:
    prepare(GENERATE)
    with pytest.raises(TemplatecheckError, match=r"--tc-probe-file '/nonexistent\.jsonl': no such file"):
        prepare(Options(generate=True, probe_file="/nonexistent.jsonl"))
    with pytest.raises(TemplatecheckError, match="--tc-max-new-tokens must be at least 1, got 0"):
        prepare(Options(generate=True, max_new_tokens=0))
    with pytest.raises(TemplatecheckError, match="--tc-device 'gpu' is not a torch device"):
        prepare(Options(generate=True, device="gpu"))


# ------------------------------------------------------------------------------------------ the trained model


@needs_torch
@pytest.mark.parametrize("template", ["default", "tool_use"])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_the_correct_model_passes(check: object, template: str) -> None:
    result = run(check, "tiny-chatml", template)
    if check is tool_call and template == "default":
        assert result.outcome is Outcome.SKIPPED
        assert "renders no tool definitions" in result.message
    else:
        assert result.outcome is Outcome.PASSED, result.message


@needs_torch
def test_the_correct_model_reports_its_table_and_scores() -> None:
    table = run(template_sensitivity, "tiny-chatml").message
    assert table.startswith("24 probes, greedy, 16 new tokens, stop at [1027], cpu float32")
    assert re.search(r"variant\s+correct\s+log-lik/token\s+stopped\s+vs shipped \(McNemar p\)", table)
    for name in ("shipped", "shipped without BOS", "shipped with double BOS", "chatml", "llama-3"):
        assert re.search(rf"\n  {re.escape(name)}\s+\d+/24\s+-?\d+\.\d+\s+\d+/24", table), name
    assert "(same prompts as shipped: shipped + system prompt, chatml + system prompt)" in table
    accuracy = run(probe_accuracy, "tiny-chatml").message
    assert score(accuracy, "probes answered correctly") >= 16
    assert run(stops, "tiny-chatml").message.startswith(
        "24/24 replies ended with a stop token ('<|im_end|>' 1027"
    )
    tools = run(tool_call, "tiny-chatml", "tool_use").message
    assert tools.startswith("4/4 tool replies hold a call in the template's format (after '<tool_call>'")


@needs_torch
def test_a_llama3_header_template_fails_with_the_chatml_reference_winning() -> None:
    accuracy = run(probe_accuracy, "broken/tiny-llama3-header")
    assert accuracy.outcome is Outcome.FAILED
    assert score(accuracy.message, "probes answered correctly under the shipped template") <= 2
    assert score(accuracy.message, "under chatml + system prompt") >= 16
    sensitivity = run(template_sensitivity, "broken/tiny-llama3-header")
    assert sensitivity.outcome is Outcome.FAILED
    assert sensitivity.message.startswith("chatml + system prompt gets ")
    assert "the model was trained on a different format: ChatML" in sensitivity.message
    assert "exact one-sided McNemar test on paired outcomes" in sensitivity.message


@needs_torch
def test_a_template_that_ignores_add_generation_prompt_fails_on_markup() -> None:
    name = "broken/tiny-ignores-add-generation-prompt"
    markup = run(clean_start, name)
    assert markup.outcome is Outcome.FAILED
    assert re.match(r"2[0-4]/24 replies hold template markup \(2[0-4] begin with it\)", markup.message)
    assert "'<|im_start|>assistant␤" in markup.message
    assert score(markup.message, "under the shipped template") == 0
    assert score(markup.message, "under chatml + system prompt") >= 16
    assert run(probe_accuracy, name).outcome is Outcome.FAILED
    assert run(template_sensitivity, name).outcome is Outcome.FAILED


@needs_torch
def test_an_eos_without_im_end_fails_stops_with_the_fix() -> None:
    name = "broken/tiny-eos-without-im-end"
    # the root cause is the stop set, which end_of_turn owns: stops adds the measured cost as its note
    owner = run(end_of_turn, name)
    assert owner.outcome is Outcome.FAILED and owner.findings[0].cause == "end_of_turn.not_stop_token"
    result = run(stops, name)
    assert result.outcome is Outcome.PASSED
    (note,) = result.findings
    assert note.cause == "end_of_turn.not_stop_token"
    assert note.message.startswith(
        "also observed end_of_turn.not_stop_token (reported by `end_of_turn`): 0/24 replies ended with a stop "
        "token ('<|end_of_text|>' 1025, from generation_config.json eos_token_id)"
    )
    result = note
    assert "The model ends its turns with '<|im_end|>' (1027)" in result.message
    assert score(result.message, "replies are correct; with the shipped stop set") >= 16
    assert re.search(r"with the shipped stop set, 0/24", result.message)
    assert '"eos_token_id": [1025, 1027]' in result.message
    assert run(probe_accuracy, name).outcome is Outcome.FAILED
    # every variant runs past <|im_end|> alike: the format is right, only the stop set is wrong
    assert run(template_sensitivity, name).outcome is Outcome.PASSED


@needs_torch
def test_a_template_without_the_system_prompt_fails_sensitivity() -> None:
    name = "broken/tiny-no-system-prompt"
    sensitivity = run(template_sensitivity, name)
    assert sensitivity.outcome is Outcome.FAILED
    assert sensitivity.message.startswith("shipped + system prompt gets ")
    assert "the model expects a system prompt that the template does not write" in sensitivity.message
    right = re.match(
        r"shipped \+ system prompt gets (\d+)/24 probes right, the shipped template (\d+)/24",
        sensitivity.message,
    )
    assert right and int(right.group(1)) - int(right.group(2)) >= 8


def test_the_summary_prints_notes_of_passed_checks_in_full() -> None:
    from templatecheck.report import summary_lines
    from templatecheck.result import Finding

    table = CheckResult.from_findings(
        model="m",
        source="s",
        template="default",
        check="template_sensitivity",
        layer=Layer.GENERATION,
        findings=[Finding(Outcome.PASSED, "24 probes\n  variant  correct\n  shipped  24/24")],
    )
    assert table.outcome is Outcome.PASSED and table.message.startswith("24 probes")
    lines = summary_lines([table])
    assert lines[0] == "m (s)"
    assert lines[-4:] == [
        "  default: 1 passed",
        "    passed template_sensitivity: 24 probes",
        "        variant  correct",
        "        shipped  24/24",
    ]


def test_the_generation_layer_imports_torch_only_when_it_runs() -> None:
    import subprocess
    import sys

    code = (
        "import sys, templatecheck.checks.generation, templatecheck.probeset, templatecheck.variants, "
        "templatecheck.stats, templatecheck.toolcalls, templatecheck.suite.test_generation\n"
        "print(','.join(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
