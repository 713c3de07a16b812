"""Accepted findings (--tc-baseline), template variables (--tc-template-var) and consumer paths (--tc-consumer)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from templatecheck import baseline
from templatecheck.causes import Cause, cause, hazard
from templatecheck.checks import Check
from templatecheck.errors import TemplatecheckError
from templatecheck.options import Options
from templatecheck.result import CheckResult, Finding, Layer, Outcome
from templatecheck.settings import parse_consumers, parse_template_vars
from tests.conftest import FIXTURES, fixture_model, subject_with_template

HERMES = str(FIXTURES / "hermes-3-tiny")
UNPARSED = "{% for m in messages %}{{ m.content }}"  # no endfor
ESCAPE = "{{ messages.__class__ }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
CLEAN = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


@pytest.fixture(scope="module", autouse=True)
def _import_transformers_first() -> None:
    _ = fixture_model("hermes-3-tiny").tokenizer


def _run(pytester: pytest.Pytester, template: str, *args: str) -> pytest.RunResult:
    candidate = pytester.path / "candidate.jinja"
    candidate.write_text(template)
    return pytester.runpytest(
        "--model", HERMES, "--tc-chat-template", str(candidate), "-k", "renders or sandbox", *args
    )


def test_a_baseline_accepts_known_findings_and_fails_new_ones(pytester: pytest.Pytester) -> None:
    file = pytester.path / "baseline.json"
    first = _run(pytester, UNPARSED, "--tc-baseline", str(file))
    first.assert_outcomes(failed=1, skipped=1)
    first.stdout.fnmatch_lines(
        [
            "*not in the baseline; to accept it: pytest --model * --tc-baseline *baseline.json --tc-update-baseline"
        ]
    )
    _run(pytester, UNPARSED, "--tc-baseline", str(file), "--tc-update-baseline").assert_outcomes(
        passed=1, skipped=1
    )
    written = json.loads(file.read_text())
    assert [(e["template"], e["cause"]) for e in written["accepted"]] == [("candidate", "renders.syntax")]
    accepted = _run(pytester, UNPARSED, "--tc-baseline", str(file))
    accepted.assert_outcomes(passed=1, skipped=1)
    accepted.stdout.fnmatch_lines(["*accepted renders.syntax: the template does not parse*"])
    # the template is repaired but gains a new cause: the new one fails, the old entry is stale
    changed = _run(pytester, ESCAPE, "--tc-baseline", str(file))
    changed.assert_outcomes(passed=1, failed=1)
    changed.stdout.fnmatch_lines(
        [
            "*FAILED sandbox.escape_attempt: security: the template reaches for '__class__'*",
            "baseline: 1 accepted findings no longer occur (stale); rewrite with --tc-update-baseline: pytest *",
            "  stale: hermes-3-tiny:candidate renders.syntax",
        ]
    )
    _run(pytester, CLEAN, "--tc-baseline", str(file), "--tc-update-baseline").assert_outcomes(passed=2)
    assert json.loads(file.read_text())["accepted"] == []


def test_update_baseline_keeps_the_entries_of_checks_it_did_not_run(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    other = baseline.Entry("m", "default", "double_bos.x", "kept")
    ran = baseline.Entry("m", "default", "renders.syntax", "gone")
    baseline.write(path, [other, ran])
    result = CheckResult("m", "src", "default", "renders", Layer.TEMPLATE, Outcome.PASSED, ())
    assert baseline.read(path).rewrite([result]) == [other]
    assert baseline.read(path).entries == (other,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2", "not valid JSON"),
        ('{"version": 1}', "not a templatecheck baseline"),
        (
            '{"version": 1, "accepted": [{"model": 1}]}',
            "an entry needs string 'model', 'template' and 'cause'",
        ),
    ],
)
def test_a_malformed_baseline_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(TemplatecheckError, match=message):
        baseline.read(path)


def test_baseline_options_are_checked_at_start(pytester: pytest.Pytester) -> None:
    alone = pytester.runpytest("--model", HERMES, "--tc-update-baseline")
    assert alone.ret == pytest.ExitCode.USAGE_ERROR
    alone.stderr.fnmatch_lines(
        ["*--tc-update-baseline writes the file of --tc-baseline FILE: pass --tc-baseline too*"]
    )
    nowhere = pytester.runpytest("--model", HERMES, "--tc-baseline", "no/such/dir/b.json")
    assert nowhere.ret == pytest.ExitCode.USAGE_ERROR
    nowhere.stderr.fnmatch_lines(
        ["*--tc-baseline no/such/dir/b.json: the folder no/such/dir does not exist*"]
    )


# ------------------------------------------------------------------------------------------ template variables


def test_template_vars_are_json_when_they_parse() -> None:
    assert parse_template_vars(["date_string=26 Jul 2024", "enable_thinking=false", "n=[1, 2]"]) == {
        "date_string": "26 Jul 2024",
        "enable_thinking": False,
        "n": [1, 2],
    }
    for bad, message in (
        ("novalue", "expected NAME=VALUE"),
        ("2x=1", "expected NAME=VALUE"),
        ("messages=[]", "the suite sets messages itself"),
    ):
        with pytest.raises(TemplatecheckError, match=message):
            parse_template_vars([bad])


def test_template_vars_reach_every_render_and_the_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    dated = "{{ bos_token }}Today: {{ date_string | default('never') }}\n" + CLEAN
    subject = subject_with_template("hermes-3-tiny", dated)
    assert "Today: never" in subject.render([{"role": "user", "content": "hi"}])
    pinned = type(subject)(subject.model, subject.template, Options(template_vars={"date_string": "1 Jan"}))
    assert "Today: 1 Jan" in pinned.render([{"role": "user", "content": "hi"}])
    report = tmp_path / "r.json"
    candidate = pytester.path / "dated.jinja"
    candidate.write_text(dated)
    pytester.runpytest(
        "--model", HERMES, "--tc-chat-template", str(candidate), "-k", "renders",
        "--tc-template-var", "date_string=1 Jan", "--tc-report-json", str(report),
    ).assert_outcomes(passed=1)  # fmt: skip
    data = json.loads(report.read_text())
    settings = data["settings"]
    assert settings["template_vars"] == {"date_string": "1 Jan"} and settings["consumers"] == []
    provenance = data["provenance"]
    assert provenance["versions"]["templatecheck"] and provenance["versions"]["transformers"]
    assert provenance["models"][HERMES]["templates"] == {"dated": hashlib.sha256(dated.encode()).hexdigest()}


# ------------------------------------------------------------------------------------------- consumer paths

_NAIVE = hazard("selftest.naive_hazard", "naive", "a test hazard")
_OWNED = cause("other.owned", Outcome.FAILED, "a test cause of another check")


def _check(findings: list[Finding]) -> Check:
    return Check("selftest", Layer.TOKENIZER, lambda subject: findings, needs="parses")


def test_a_hazard_fails_only_for_the_consumer_that_gates() -> None:
    base = subject_with_template("hermes-3-tiny", CLEAN)
    check = _check([_NAIVE("two BOS on the naive path", fix="encode with add_special_tokens=False")])
    assert check(base).outcome is Outcome.WARNING
    gated = type(base)(base.model, base.template, Options(consumers=("naive",)))
    result = check(gated)
    assert result.outcome is Outcome.FAILED
    assert result.message.endswith(
        "(fails: --tc-consumer naive)\n  fix: encode with add_special_tokens=False"
    )
    assert (
        check(type(base)(base.model, base.template, Options(consumers=("server",)))).outcome
        is Outcome.WARNING
    )


def test_a_cause_another_check_owns_is_a_note_not_a_second_failure() -> None:
    result = _check([_OWNED("content dropped\nevidence")])(subject_with_template("hermes-3-tiny", CLEAN))
    assert result.outcome is Outcome.PASSED
    (finding,) = result.findings
    assert finding.message == "also observed other.owned (reported by `other`): content dropped\nevidence"


def test_a_template_that_does_not_parse_skips_every_other_check() -> None:
    broken = subject_with_template("hermes-3-tiny", UNPARSED)
    result = _check([_NAIVE("never reached")])(broken)
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("the template does not parse (see `renders`)")


def test_consumers_are_checked() -> None:
    assert parse_consumers(["naive", "server", "naive"]) == ("naive", "server")
    with pytest.raises(TemplatecheckError, match="--tc-consumer 'vllm': not a consumer path; choose from"):
        parse_consumers(["vllm"])


def test_a_cause_is_registered_once() -> None:
    assert isinstance(_NAIVE, Cause) and _NAIVE.check == "selftest"
    with pytest.raises(ValueError, match="registered twice with different rules"):
        cause("selftest.naive_hazard", Outcome.FAILED, "another rule")
    with pytest.raises(ValueError, match="a cause is failed or warning"):
        cause("selftest.passed", Outcome.PASSED, "no")
