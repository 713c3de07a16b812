"""The reference layer through the plugin: real inner pytest runs (pytester) on the family fixtures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from templatecheck.formats import unregister
from tests.conftest import FIXTURES, fixture_model

FAMILIES = FIXTURES / "families"
#: Runs here select the reference layer's checks; the other layers have their own tests.
REFERENCE_CHECKS = "reference or mistral_common"


@pytest.fixture(scope="module", autouse=True)
def _import_transformers_first() -> None:
    _ = fixture_model("hermes-3-tiny").tokenizer  # see tests/test_plugin.py
    # Imported (and its sample drawn) before pytester snapshots the modules, the comparison keeps its cache
    # from one inner run to the next.
    from templatecheck.formats.compare import drawn

    drawn(100)


def model(family: str) -> str:
    return str(FAMILIES / family)


def test_a_correct_model_passes_and_the_summary_names_its_family(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = pytester.runpytest(
        "--model", model("llama3.1"), "-v", "-rs", "--tc-report-json", str(report), "-k", REFERENCE_CHECKS
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*test_reference.py::test_reference[[]llama3.1:default[]] PASSED*",
            f"llama3.1 ({model('llama3.1')}) [[]reference: llama3.1 (detected)[]]",
            "  default: 1 passed, 1 skipped",
            "SKIPPED * not a Mistral format (reference llama3.1 (detected: the template writes "
            "<|start_header_id|> and the 'Cutting Knowledge Date' preamble)): mistral-common does not apply",
        ]
    )
    results = {r["check"]: r for r in json.loads(report.read_text())["models"][0]["results"]}
    assert results["reference"]["layer"] == "reference" and results["reference"]["outcome"] == "passed"
    assert results["reference"]["message"].startswith("reference llama3.1 (detected: ")


def test_a_broken_variant_fails_with_the_diff_and_the_tokens(pytester: pytest.Pytester) -> None:
    candidate = FAMILIES / "broken" / "mistral-v3" / "system-moved.jinja"
    result = pytester.runpytest(
        "--model", model("mistral-v3"), "--tc-chat-template", str(candidate), "-k", REFERENCE_CHECKS
    )
    result.assert_outcomes(failed=1, skipped=1)  # reference fails; mistral_common skips
    result.stdout.fnmatch_lines(
        [
            "*_ test_reference[[]mistral-v3:system-moved[]] _*",
            "the place of the system prompt differs from the mistral-v3 reference, in * renderings "
            "(reference mistral-v3 (detected))",
            "conversation: system + two user turns (add_generation_prompt=False):",
            "  system: 'You are a concise assistant.'",
            "    --- reference mistral-v3",
            "    +++ template",
            "  first differing token: #*",
            "    reference mistral-v3: [[]*",
            "    template: [[]*",
        ]
    )
    result.stdout.no_fnmatch_line("*templatecheck/checks/reference.py*")  # a message, not a traceback


def test_reference_none_skips_the_comparison(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--model", model("chatml"), "--tc-reference", "none", "-rs", "-k", REFERENCE_CHECKS
    )
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        [
            "chatml (*) [[]reference: none (--tc-reference none)[]]",
            "SKIPPED * no reference format: --tc-reference none",
        ]
    )


def test_reference_family_replaces_detection(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--model", model("chatml"), "--tc-reference", "llama3", "-k", REFERENCE_CHECKS
    )
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*differs from the llama3 reference, in * (reference llama3 (--tc-reference))",
            "chatml (*) [[]reference: llama3 (--tc-reference)[]]",
        ]
    )


def test_an_unknown_reference_family_is_one_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--model", model("chatml"), "--tc-reference", "llama9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --tc-reference 'llama9': no such reference format; known: chatml, chatml-plain, gemma, gemma3, "
            "llama2, llama3, "
            "llama3.1, mistral-v1, * (or 'none' to skip the comparison); register your own with "
            "templatecheck.formats.register"
        ]
    )
    result.stdout.no_fnmatch_line("*test_reference*")


ACME_CONFTEST = '''
from templatecheck.formats import Format, register


def render_acme(messages, *, add_generation_prompt=False, tools=None, bos_token="", eos_token="", **variables):
    """Acme chat. Source: the Acme model card. Not defined: nothing beyond text turns."""
    text = "".join(f"<|acme:{m['role']}|>{m['content']}<|acme:end|>" for m in messages)
    return text + ("<|acme:assistant|>" if add_generation_prompt else "")


def detect_acme(evidence):
    return "the template writes <|acme:" if evidence.writes("<|acme:") else None


# replace=True: pytester imports this conftest once per inner run, all in one process
register(Format("acme", render_acme, "Acme chat", detect=detect_acme), replace=True)
'''

ACME_TEMPLATE = (
    "{% for m in messages %}<|acme:{{ m.role }}|>{{ m.content }}<|acme:end|>{% endfor %}"
    "{% if add_generation_prompt %}<|acme:assistant|>{% endif %}"
)


@pytest.fixture
def _forget_acme() -> Iterator[None]:
    yield
    unregister("acme")  # the inner runs share this process, and with it the registry


@pytest.mark.usefixtures("_forget_acme")
def test_a_format_registered_in_a_conftest_is_detected_and_named(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ACME_CONFTEST)
    template = pytester.path / "acme.jinja"
    template.write_text(ACME_TEMPLATE)
    args = ["--model", model("zephyr"), "--tc-chat-template", str(template), "-k", "reference"]
    detected = pytester.runpytest(*args)
    detected.assert_outcomes(passed=1, skipped=1)
    detected.stdout.fnmatch_lines(["zephyr (*) [[]reference: acme (detected)[]]"])
    named = pytester.runpytest(*args, "--tc-reference", "acme")
    named.assert_outcomes(passed=1, skipped=1)
    template.write_text(ACME_TEMPLATE.replace("<|acme:end|>", "<|acme:end|>\n"))
    broken = pytester.runpytest(*args)
    broken.assert_outcomes(failed=1, skipped=1)
    broken.stdout.fnmatch_lines(["*differs from the acme reference, in *"])
