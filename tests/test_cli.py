"""The ``templatecheck`` command: the suite through pytest, ``render``, and its errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from templatecheck import cli
from tests.conftest import FIXTURES

HERMES = str(FIXTURES / "hermes-3-tiny")
NO_BOS = str(FIXTURES / "broken" / "no-bos")


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """The command in this process (fast: transformers is imported once), with its exit code and output."""

    def run(*args: str, cwd: Path | None = None, stdin: str | None = None) -> Ran:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = cli.main(list(args))
        except SystemExit as exit:  # argparse
            code = int(exit.code or 0)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run


def templatecheck(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script, as a user runs it (a fresh process)."""
    code = "from templatecheck.cli import run; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, input=stdin, check=False
    )


@pytest.fixture
def messages(tmp_path: Path) -> Path:
    path = tmp_path / "messages.json"
    path.write_text(
        json.dumps([{"role": "system", "content": "Be brief.  "}, {"role": "user", "content": "Hi\tyou"}])
    )
    return path


def test_suite_argv_turns_leading_models_into_model_options() -> None:
    assert cli.suite_argv(["a", "org/b", "-n", "2", "--tc-report-md", "r.md"]) == [
        "--model",
        "a",
        "--model",
        "org/b",
        "-n",
        "2",
        "--tc-report-md",
        "r.md",
    ]
    assert cli.suite_argv(["--tc-models-from", "dir"]) == ["--tc-models-from", "dir"]


def test_suite_runs_with_pytest_options_and_returns_pytests_exit_code(tmp_path: Path) -> None:
    passing = templatecheck(HERMES, "-k", "double_bos", "-p", "no:cacheprovider", cwd=tmp_path)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "2 passed" in passing.stdout and "templatecheck summary" in passing.stdout
    failing = templatecheck(NO_BOS, "-k", "double_bos", "-p", "no:cacheprovider", cwd=tmp_path)
    assert failing.returncode == 1
    assert "2 failed" in failing.stdout and "give no BOS" in failing.stdout


def test_no_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-k", "x"]) == 2
    assert "name at least one MODEL" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "templatecheck render MODEL" in capsys.readouterr().out


def test_render_shows_control_tokens_and_whitespace(messages: Path, run_cli: Callable[..., Ran]) -> None:
    out = run_cli("render", HERMES, "--messages", str(messages), "--add-generation-prompt")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "# hermes-3-tiny:default (114 characters)",
        "<|begin_of_text|><|im_start|>system␤",
        "Be brief.␠␠<|im_end|>␤",
        "<|im_start|>user␤",
        "Hi⇥you<|im_end|>␤",
        "<|im_start|>assistant␤",
        "",
    ]


def test_render_lists_every_token_on_request(messages: Path, run_cli: Callable[..., Ran]) -> None:
    out = run_cli("render", HERMES, "--messages", str(messages), "--tokens")
    assert out.returncode == 0, out.stderr
    _head, count, listed = out.stdout.rstrip("\n").rsplit("\n", 2)
    assert count.startswith("# ") and count.endswith(" tokens")
    n = int(count.split()[1])
    assert listed.count("[") == n and "more)" not in listed  # all of them, not the first dozen
    assert listed.startswith("[1024 '<|begin_of_text|>'] [1026 '<|im_start|>']")


def test_render_picks_a_named_template_and_passes_tools(tmp_path: Path, run_cli: Callable[..., Ran]) -> None:
    path = tmp_path / "tools.json"
    tool = {"type": "function", "function": {"name": "lookup_zq", "parameters": {"type": "object"}}}
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]}))
    out = run_cli("render", HERMES, "--messages", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# hermes-3-tiny:tool_use") and "lookup_zq" in out.stdout
    named = run_cli("render", HERMES, "--messages", str(path), "--tc-chat-template", "default")
    assert named.stdout.startswith("# hermes-3-tiny:default")


def test_render_reads_stdin(run_cli: Callable[..., Ran]) -> None:
    out = run_cli("render", HERMES, "--messages", "-", stdin='[{"role": "user", "content": "hey"}]')
    assert out.returncode == 0 and "hey<|im_end|>" in out.stdout


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (["render", HERMES, "--messages", "missing.json"], None, "--messages 'missing.json': no such file"),
        (["render", HERMES, "--messages", "m.json"], '[{"role": ', "is not valid JSON (line 1, column"),
        (["render", HERMES, "--messages", "m.json"], '{"content": "no list"}', "expected a list of messages"),
        (["render", HERMES, "--messages", "m.json"], '[{"content": "no role"}]', "with a 'role' each"),
        (["render", "./no-such-model", "--messages", "m.json"], "[]", "no such directory"),
        (
            ["render", HERMES, "--messages", "m.json", "--tc-chat-template", "rag"],
            "[]",
            "--tc-chat-template 'rag': no such file",
        ),
    ],
)
def test_bad_input_is_one_clear_error_with_exit_code_2(
    tmp_path: Path, args: list[str], content: str | None, message: str, run_cli: Callable[..., Ran]
) -> None:
    if content is not None:
        (tmp_path / "m.json").write_text(content)
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert [line for line in out.stderr.splitlines() if line.startswith("templatecheck:")] == [
        next(line for line in out.stderr.splitlines() if message in line)
    ]


def test_render_without_messages_option_is_argparse_usage_error(run_cli: Callable[..., Ran]) -> None:
    out = run_cli("render", HERMES)
    assert out.returncode == 2 and "--messages" in out.stderr and "Traceback" not in out.stderr


def test_a_template_that_refuses_exits_1(tmp_path: Path, run_cli: Callable[..., Ran]) -> None:
    template = tmp_path / "strict.jinja"
    template.write_text("{{ raise_exception('no system role') if messages[0].role == 'system' }}x")
    path = tmp_path / "m.json"
    path.write_text('[{"role": "system", "content": "s"}]')
    out = run_cli("render", HERMES, "--messages", str(path), "--tc-chat-template", str(template))
    assert out.returncode == 1 and "no system role" in out.stderr and "Traceback" not in out.stderr


def test_bad_input_from_the_console_script_has_no_traceback(tmp_path: Path) -> None:
    out = templatecheck("render", "./no-such-model", "--messages", "-", cwd=tmp_path, stdin="[]")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("templatecheck: error: model './no-such-model'")
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------------------------ check, checks, --version


def test_check_runs_the_static_checks_without_pytest(run_cli: Callable[..., Ran]) -> None:
    clean = run_cli("check", HERMES, "--tc-examples", "10")
    assert clean.returncode == 0, clean.stdout
    assert clean.stdout.startswith(f"hermes-3-tiny ({HERMES})")
    assert "  default: " in clean.stdout and "\n  generation " not in clean.stdout
    broken = run_cli("check", NO_BOS, "--tc-examples", "10", "--json")
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["provenance"]["versions"]["templatecheck"]
    causes = {
        f["cause"] for r in report["models"][0]["results"] for f in r["findings"] if f["outcome"] == "failed"
    }
    assert any(c.startswith("double_bos.") for c in causes)


def test_check_reports_bad_input_once(run_cli: Callable[..., Ran], tmp_path: Path) -> None:
    missing = run_cli("check", str(tmp_path / "nope"))
    assert missing.returncode == cli.USAGE
    assert missing.stderr.startswith("templatecheck: error: model ") and "no such directory" in missing.stderr
    bad = run_cli("check", HERMES, "--tc-examples", "0")
    assert bad.returncode == cli.USAGE and "--tc-examples 0:" in bad.stderr
    # the command also takes the option without the plugin's prefix; the message names the one pytest takes
    short = run_cli("check", HERMES, "--examples", "0")
    assert short.returncode == cli.USAGE and "--tc-examples 0:" in short.stderr


def test_checks_lists_every_check_and_its_causes(run_cli: Callable[..., Ran]) -> None:
    from templatecheck.checks import REGISTRY

    listed = run_cli("checks")
    assert listed.returncode == 0
    for name in REGISTRY:
        assert f"\n{name} (" in "\n" + listed.stdout
    assert "  renders.syntax  failed" in listed.stdout
    table = run_cli("checks", "--markdown")
    assert table.stdout.startswith("| cause | severity | why |\n")


def test_version(run_cli: Callable[..., Ran]) -> None:
    from templatecheck import __version__

    assert run_cli("--version").stdout == f"templatecheck {__version__}\n"
