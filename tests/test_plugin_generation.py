"""`pytest --model ... --tc-generate` end to end (pytester), and `--tc-generate` without torch (a subprocess)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from templatecheck.options import Options
from templatecheck.plugin import options_from
from tests.conftest import FIXTURES, fixture_model

TINY = str(FIXTURES / "tiny-chatml")
BROKEN = {
    name: str(FIXTURES / "broken" / f"tiny-{name}")
    for name in ("llama3-header", "ignores-add-generation-prompt", "eos-without-im-end", "no-system-prompt")
}


needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="needs torch: pip install torch==2.13.0"
)


@pytest.fixture(scope="module", autouse=True)
def _import_torch_first() -> None:
    """pytester drops the modules an in-process run imports, and torch (like numpy) cannot be imported twice in
    one process: torch, transformers' Llama code and the weights load before any pytester snapshot."""
    if importlib.util.find_spec("torch") is None:
        return
    from templatecheck import probe

    probe.load(fixture_model("tiny-chatml"), "cpu")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_own="def test_own():\n    assert False, 'the project test ran'\n")
    return pytester


def test_the_options_reach_the_checks(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig(
        "--tc-generate", "--tc-device", "cpu", "--tc-max-new-tokens", "8", "--tc-probe-file", "mine.jsonl"
    )
    assert options_from(config) == Options(
        generate=True, device="cpu", max_new_tokens=8, probe_file="mine.jsonl"
    )
    assert options_from(pytester.parseconfig()) == Options()


#: The generation layer's suite module, and the static check the broken variants also fail (test_generation_prompt);
#: the other layers have their own tests.
GENERATION = "test_generation"


def test_without_generate_the_layer_is_skipped(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", TINY, "-rs", "-k", GENERATION)
    result.assert_outcomes(passed=2, skipped=10)
    result.stdout.fnmatch_lines(["*SKIPPED [[]10[]] *: run with --tc-generate"])


@needs_torch
@needs_torch
def test_the_bundled_trained_model_passes_the_whole_suite_with_generate(project: pytest.Pytester) -> None:
    """The reference aligns with the default system prompt the model needs: no option is required."""
    result = project.runpytest("--model", TINY, "--tc-generate")
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert "failed" not in result.parseoutcomes()


def test_the_correct_model_passes_and_prints_its_table(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", TINY, "--tc-generate", "-v", "-k", GENERATION)
    result.assert_outcomes(passed=11, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*test_generation.py::test_template_sensitivity[[]tiny-chatml:default[]] PASSED*",
            "*test_generation.py::test_tool_call[[]tiny-chatml:tool_use[]] PASSED*",
            "*= templatecheck summary =*",
            "  default: 5 passed, 1 skipped",
            "    passed stops: 24/24 replies ended with a stop token*",
            "    passed template_sensitivity: 24 probes, greedy, 16 new tokens, stop at [[]1027[]], cpu float32*",
            "        variant * correct * log-lik/token * stopped * vs shipped (McNemar p)",
            "        shipped *",
            "        llama-3 *",
            "    passed tool_call: 4/4 tool replies hold a call in the template's format*",
        ]
    )
    result.stdout.no_fnmatch_line("*test_own*")


@needs_torch
@pytest.mark.parametrize(
    ("name", "failing"),
    [
        ("llama3-header", {"probe_accuracy", "template_sensitivity"}),
        (
            "ignores-add-generation-prompt",
            {"generation_prompt", "clean_start", "probe_accuracy", "template_sensitivity"},
        ),
        # the runaway itself is end_of_turn's cause, which stops notes
        ("eos-without-im-end", {"probe_accuracy"}),
        ("no-system-prompt", {"probe_accuracy", "template_sensitivity"}),
    ],
)
def test_each_broken_variant_fails_its_checks(
    project: pytest.Pytester, tmp_path: Path, name: str, failing: set[str]
) -> None:
    report = tmp_path / "report.json"
    result = project.runpytest(
        "--model", BROKEN[name], "--tc-generate", "--tc-report-json", str(report), "-k", GENERATION
    )
    results = {r["check"]: r for r in json.loads(report.read_text())["models"][0]["results"]}
    assert {c for c, r in results.items() if r["outcome"] == "failed"} == failing
    assert results["tool_call"]["outcome"] == "skipped"
    result.assert_outcomes(passed=5 - len(failing), failed=len(failing), skipped=1)
    # every failure of the generation layer states the accuracy it measured
    for check in failing - {"generation_prompt"}:
        assert "/24" in results[check]["message"], check


@needs_torch
def test_the_json_report_carries_the_table(project: pytest.Pytester, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    project.runpytest("--model", TINY, "--tc-generate", "-k", "sensitivity", "--tc-report-json", str(report))
    (result,) = [
        r for r in json.loads(report.read_text())["models"][0]["results"] if r["template"] == "default"
    ]
    assert result["layer"] == "generation" and result["outcome"] == "passed"
    assert "log-lik/token" in result["message"] and "chatml" in result["message"]
    assert [(f["outcome"], f["message"]) for f in result["findings"]] == [("passed", result["message"])]


@needs_torch
def test_a_probe_file_adds_probes(project: pytest.Pytester) -> None:
    probes = project.path / "probes.jsonl"
    probes.write_text(
        json.dumps(
            {
                "name": "mine",
                "messages": [{"role": "user", "content": 'Reply with the word "tea" and nothing else.'}],
                "answer": "tea",
            }
        )
        + "\n"
    )
    result = project.runpytest(
        "--model", TINY, "--tc-generate", "--tc-probe-file", str(probes), "-k", "default and sensitivity"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*passed template_sensitivity: 25 probes, greedy*"])


@needs_torch
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tc-probe-file", "nope.jsonl"], "*--tc-probe-file 'nope.jsonl': no such file*"),
        (["--tc-device", "gpu"], "*--tc-device 'gpu' is not a torch device; use cpu, cuda, cuda:N or mps*"),
        (["--tc-max-new-tokens", "0"], "*--tc-max-new-tokens must be at least 1, got 0*"),
    ],
)
def test_bad_generation_options_stop_the_run_at_once(
    project: pytest.Pytester, args: list[str], message: str
) -> None:
    result = project.runpytest("--model", TINY, "--tc-generate", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message.lstrip('*')}"])


NO_TORCH = (
    "import sys\n"
    "sys.modules['torch'] = None  # what Python reports for a package that is not installed\n"
    "import pytest\n"
    "code = pytest.main(sys.argv[1:])\n"
    "print('torch imported:', sys.modules.get('torch') is not None)\n"
    "sys.exit(code)\n"
)


def run_without_torch(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "-p", "no:cacheprovider", "--model", TINY, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TEMPLATECHECK_NODE_DIR": str(tmp_path / "no-node")},  # counts without hf.js
    )
    return done, time.perf_counter() - start


def test_without_torch_generate_fails_at_once_with_the_install_command(tmp_path: Path) -> None:
    done, seconds = run_without_torch(tmp_path, "--tc-generate")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert (
        "ERROR: --tc-generate needs torch, which is not installed: pip install 'templatecheck[generate]'"
        in done.stderr
    )
    assert "collected" not in done.stdout  # before any test
    assert seconds < 60


def test_without_torch_the_static_layers_still_run(tmp_path: Path) -> None:
    done, _ = run_without_torch(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "36 passed, 22 skipped" in done.stdout
    assert "torch imported: False" in done.stdout
