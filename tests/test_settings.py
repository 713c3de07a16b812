"""Options checked at start-up, and reports that survive a crash, an interruption and hostile text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from templatecheck.checks import Check, template
from templatecheck.markdown import markdown_report, text
from templatecheck.report import write_json_report
from templatecheck.result import CheckResult, Finding, Layer, Outcome
from tests.conftest import FIXTURES, fixture_model

HERMES = str(FIXTURES / "hermes-3-tiny")


@pytest.fixture(scope="module", autouse=True)
def _import_transformers_first() -> None:
    _ = fixture_model("hermes-3-tiny").tokenizer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tc-render-timeout", "nan"], "--tc-render-timeout nan: give the seconds one render may take*"),
        (["--tc-render-timeout", "inf"], "--tc-render-timeout inf: give the seconds*"),
        (["--tc-render-timeout", "0"], "--tc-render-timeout 0.0: give the seconds*"),
        (
            ["--tc-examples", "-1"],
            "--tc-examples -1: give the number of hypothesis conversations*, 1 or more*",
        ),
        (["--tc-examples", "0"], "--tc-examples 0: give the number*"),
        (
            ["--tc-probe-file", "p.jsonl"],
            "--tc-probe-file adds probes to the generation layer*pass --tc-generate",
        ),
        (
            ["--tc-report-json", "conftest.py/r.json"],
            "--tc-report-json conftest.py/r.json: conftest.py is not a folder*",
        ),
        (["--tc-report-md", "."], "--tc-report-md .: is a directory; name the file to write"),
        (
            ["--tc-consumer", "vllm"],
            "--tc-consumer 'vllm': not a consumer path; choose from apply_chat_template*",
        ),
        (["--tc-template-var", "date_string"], "--tc-template-var 'date_string': expected NAME=VALUE*"),
    ],
)
def test_a_bad_option_is_one_usage_error_before_the_run(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makeconftest("")
    result = pytester.runpytest("--model", HERMES, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    result.stdout.no_fnmatch_line("*test_renders*")


def _boom(subject: object) -> list[Finding]:
    raise ZeroDivisionError("a bug of ours")


def test_a_check_that_raises_is_an_error_result_in_the_report(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(template, "renders", Check("renders", Layer.TEMPLATE, _boom, needs="nothing"))
    report = tmp_path / "r.json"
    result = pytester.runpytest("--model", HERMES, "-k", "renders", "--tc-report-json", str(report))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*templatecheck error in check renders: ZeroDivisionError: a bug of ours*"])
    outcomes = [r["outcome"] for m in json.loads(report.read_text())["models"] for r in m["results"]]
    assert outcomes == ["error", "error"]


INTERRUPTING = """
from templatecheck.checks import Check, template
from templatecheck.result import Layer


def interrupt(subject):
    raise KeyboardInterrupt


template.renders = Check("renders", Layer.TEMPLATE, interrupt, needs="nothing")
"""


def test_an_interrupted_run_keeps_the_last_complete_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    pytester.runpytest("--model", HERMES, "-k", "renders", "--tc-report-json", str(report)).assert_outcomes(
        passed=2
    )
    complete = report.read_text()
    pytester.makepyfile(interrupting=INTERRUPTING)
    result = pytester.runpytest_subprocess(
        "-p", "interrupting", "--model", HERMES, "-k", "renders", "--tc-report-json", str(report)
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert report.read_text() == complete
    partial = json.loads((tmp_path / "r.interrupted.json").read_text())
    assert partial["settings"]["interrupted"] is True


def test_any_string_serializes(tmp_path: Path) -> None:
    lone = "echoed \ud800 surrogate"
    result = CheckResult(
        "m",
        "src",
        "default",
        "renders",
        Layer.TEMPLATE,
        Outcome.FAILED,
        (Finding(Outcome.FAILED, lone, "x.y"),),
    )
    write_json_report(tmp_path / "r.json", [result])
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["models"][0]["results"][0]["findings"][0]["message"] == lone
    assert "\\ud800" in markdown_report([result])


def test_names_from_a_repository_are_inert_in_markdown() -> None:
    hostile = "x <!-- hide\n[link](http://a) `code` | cell"
    shown = text(hostile)
    assert "<" not in shown and "\n" not in shown and "`" not in shown.replace("\\`", "")
    assert shown == r"x &lt;!-- hide \[link\](http://a) \`code\` \| cell"
    result = CheckResult(
        "m", "src", hostile, "renders", Layer.TEMPLATE, Outcome.FAILED, (Finding(Outcome.FAILED, "f", "a.b"),)
    )
    report = markdown_report([result])
    assert "<!--" not in report and "&lt;!-- hide" in report
