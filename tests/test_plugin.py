"""The plugin end to end, through real inner pytest runs (pytester)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, fixture_model

HERMES = str(FIXTURES / "hermes-3-tiny")
DOUBLE_BOS = str(FIXTURES / "broken" / "double-bos")


@pytest.fixture(scope="module", autouse=True)
def _import_transformers_first() -> None:
    """pytester drops the modules an in-process run imports; numpy cannot be imported twice in one process,
    so transformers (and numpy under it) are imported before any pytester snapshot is taken."""
    _ = fixture_model("hermes-3-tiny").tokenizer


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project with its own (failing) test, which a --model run must not touch."""
    pytester.makepyfile(test_own="def test_own():\n    assert False, 'the project test ran'\n")
    return pytester


def test_model_runs_exactly_the_suite_with_named_ids(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "-v")
    result.assert_outcomes(passed=6, skipped=10)  # the generation layer runs only with --generate
    result.stdout.fnmatch_lines(
        [
            "*test_template.py::test_renders[[]hermes-3-tiny:default[]] PASSED*",
            "*test_template.py::test_generation_prompt[[]hermes-3-tiny:tool_use[]] PASSED*",
            "*test_tokenizer.py::test_double_bos[[]hermes-3-tiny:default[]] PASSED*",
        ]
    )
    result.stdout.no_fnmatch_line("*test_own*")


def test_without_model_the_project_tests_run(project: pytest.Pytester) -> None:
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.no_fnmatch_line("*test_renders*")


def test_a_failure_shows_conversation_tokens_and_fix(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", DOUBLE_BOS)
    result.assert_outcomes(passed=4, failed=2, skipped=10)
    result.stdout.fnmatch_lines(
        [
            "*_ test_double_bos[[]double-bos:default[]] _*",
            "tokenizer(prompt), the default harnesses use on a rendered prompt gives 2 BOS tokens: *",
            "  tokens: [[]1024 '<|begin_of_text|>'[]] [[]1024 '<|begin_of_text|>'[]]*",
            "  fix: drop {{ bos_token }} from the template*",
        ]
    )
    # a clean message, not a traceback into templatecheck
    result.stdout.no_fnmatch_line("*templatecheck/plugin.py*")


def test_several_models_and_a_bad_one_in_one_run(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "--model", "./does-not-exist", "--model", DOUBLE_BOS)
    result.assert_outcomes(passed=10, failed=2, skipped=20, errors=8)
    result.stdout.fnmatch_lines(
        ["*model './does-not-exist': no such directory, and not a Hub repo id*check the path*"]
    )


def test_summary_lists_templates_and_findings(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "--model", DOUBLE_BOS)
    result.stdout.fnmatch_lines(
        [
            "*= templatecheck summary =*",
            f"hermes-3-tiny ({HERMES})",
            "  default: 3 passed, 5 skipped",
            "  tool_use: 3 passed, 5 skipped",
            f"double-bos ({DOUBLE_BOS})",
            "  default: 2 passed, 5 skipped, 1 failed",
            "    FAILED double_bos: tokenizer(prompt), the default harnesses use on a rendered prompt gives 2 BOS*",
        ]
    )


def test_report_json_has_every_result(project: pytest.Pytester, tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    project.runpytest(
        "--model", HERMES, "--model", DOUBLE_BOS, "--model", "./nope", "--report-json", str(report)
    )
    data = json.loads(report.read_text())
    assert data["version"] == 1
    assert [m["model"] for m in data["models"]] == ["hermes-3-tiny", "double-bos", "nope"]
    hermes = data["models"][0]
    assert hermes["templates"] == ["default", "tool_use"]
    assert {(r["check"], r["template"], r["layer"], r["outcome"]) for r in hermes["results"]} == {
        (check, template, layer, "passed")
        for template in ("default", "tool_use")
        for check, layer in (
            ("renders", "template"),
            ("generation_prompt", "template"),
            ("double_bos", "tokenizer"),
        )
    } | {
        (check, template, "generation", "skipped")
        for template in ("default", "tool_use")
        for check in ("stops", "clean_start", "probe_accuracy", "template_sensitivity", "tool_call")
    }
    failed = [r for r in data["models"][1]["results"] if r["outcome"] == "failed"]
    assert [(r["check"], r["template"]) for r in failed] == [
        ("double_bos", "default"),
        ("double_bos", "tool_use"),
    ]
    assert "2 BOS tokens" in failed[0]["message"]
    errors = data["models"][2]["results"]
    assert {r["outcome"] for r in errors} == {"error"} and len(errors) == 8
    assert "no such directory" in errors[0]["message"]


def test_chat_template_selects_a_name_or_tests_a_candidate_file(project: pytest.Pytester) -> None:
    project.runpytest("--model", HERMES, "--chat-template", "tool_use").assert_outcomes(passed=3, skipped=5)
    candidate = project.path / "candidate.jinja"
    candidate.write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = project.runpytest("--model", HERMES, "--chat-template", str(candidate), "-v")
    # the candidate forgets {{ bos_token }}, and this tokenizer adds none: the BOS check catches it
    result.assert_outcomes(passed=2, failed=1, skipped=5)
    result.stdout.fnmatch_lines(["*test_double_bos[[]hermes-3-tiny:candidate[]] FAILED*"])


def test_unknown_chat_template_name_is_one_clear_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "--chat-template", "rag")
    result.assert_outcomes(errors=8)
    result.stdout.fnmatch_lines(["*--chat-template 'rag': no such file*(it has: default, tool_use)*"])


def test_warnings_pass_unless_strict(project: pytest.Pytester) -> None:
    candidate = project.path / "no-system.jinja"
    candidate.write_text(
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = project.runpytest("--model", HERMES, "--chat-template", str(candidate))
    result.assert_outcomes(passed=3, skipped=5, warnings=1)
    result.stdout.fnmatch_lines(["*TemplatecheckWarning: renders: the template refuses a system message*"])
    strict = project.runpytest("--model", HERMES, "--chat-template", str(candidate), "--strict-checks")
    strict.assert_outcomes(passed=2, failed=1, skipped=5)


def test_k_x_lf_and_junitxml_work_as_usual(project: pytest.Pytester) -> None:
    project.runpytest("--model", HERMES, "-k", "double_bos").assert_outcomes(passed=2)
    project.runpytest("--model", DOUBLE_BOS, "-x").assert_outcomes(passed=4, failed=1, skipped=10)
    project.runpytest("--model", DOUBLE_BOS)
    project.runpytest("--model", DOUBLE_BOS, "--lf").assert_outcomes(failed=2)
    xml = project.path / "junit.xml"
    project.runpytest("--model", DOUBLE_BOS, f"--junitxml={xml}")
    text = xml.read_text()
    assert 'name="test_double_bos[double-bos:default]"' in text
    assert "2 BOS tokens" in text


def test_xdist_gives_the_serial_results(project: pytest.Pytester, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    serial, parallel = tmp_path / "serial.json", tmp_path / "parallel.json"
    args = ["--model", HERMES, "--model", DOUBLE_BOS, "-p", "no:cacheprovider"]
    project.runpytest_subprocess(*args, "--report-json", str(serial)).assert_outcomes(
        passed=10, failed=2, skipped=20
    )
    run = project.runpytest_subprocess(*args, "-n", "2", "--report-json", str(parallel))
    run.assert_outcomes(passed=10, failed=2, skipped=20)
    run.stdout.fnmatch_lines(["*= templatecheck summary =*"])

    def results(path: Path) -> list[tuple[str, str, str, str]]:
        data = json.loads(path.read_text())
        return sorted(
            (m["model"], r["template"], r["check"], r["outcome"])
            for m in data["models"]
            for r in m["results"]
        )

    assert results(parallel) == results(serial)
