"""The plugin end to end, through real inner pytest runs (pytester)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from templatecheck.checks import REGISTRY
from tests.conftest import FIXTURES, fixture_model

HERMES = str(FIXTURES / "hermes-3-tiny")
NO_BOS = str(FIXTURES / "broken" / "no-bos")


@pytest.fixture(scope="module", autouse=True)
def _import_transformers_first() -> None:
    """pytester drops the modules an in-process run imports; numpy cannot be imported twice in one process,
    so transformers (and numpy under it) are imported before any pytester snapshot is taken."""
    _ = fixture_model("hermes-3-tiny").tokenizer


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's project with its own (failing) test, which a --model run must not touch; without
    @huggingface/jinja wherever it is installed here, so that the counts do not depend on it."""
    pytester.makepyfile(test_own="def test_own():\n    assert False, 'the project test ran'\n")
    monkeypatch.setenv("TEMPLATECHECK_NODE_DIR", str(pytester.path / "no-node"))
    return pytester


def test_model_runs_exactly_the_suite_with_named_ids(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "-v")
    result.assert_outcomes(passed=36, skipped=22, warnings=5)  # test_pins skips without --tc-pin-dir
    result.stdout.fnmatch_lines(
        [
            "*test_template.py::test_renders[[]hermes-3-tiny:default[]] PASSED*",
            "*test_tokenizer.py::test_double_bos[[]hermes-3-tiny:default[]] PASSED*",
            "*test_engine.py::test_minijinja[[]hermes-3-tiny:default[]] PASSED*",
            "*test_template.py::test_renders[[]hermes-3-tiny:tool_use[]] PASSED*",
            "*test_template.py::test_generation_prompt[[]hermes-3-tiny:tool_use[]] PASSED*",
        ]
    )  # one template's checks after another's, each in the suite's order
    result.stdout.no_fnmatch_line("*test_own*")


def test_without_model_the_project_tests_run(project: pytest.Pytester) -> None:
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.no_fnmatch_line("*test_renders*")


def test_a_failure_shows_conversation_tokens_and_fix(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", NO_BOS)
    result.assert_outcomes(passed=34, failed=2, skipped=22, warnings=5)
    result.stdout.fnmatch_lines(
        [
            "*_ test_double_bos[[]no-bos:default[]] _*",
            "apply_chat_template(tokenize=True) and servers (the rendering encoded without special tokens) give no "
            "BOS: *",
            "  tokens: [[]1026 '<|im_start|>'[]]*",
            "  fix: write {{ bos_token }} at the start of the template*",
        ]
    )
    # a clean message, not a traceback into templatecheck
    result.stdout.no_fnmatch_line("*templatecheck/plugin.py*")


def test_several_models_and_a_bad_one_in_one_run(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "--model", "./does-not-exist", "--model", NO_BOS, "-v")
    # the model that does not load is one error item, not one per check
    result.assert_outcomes(passed=70, failed=2, skipped=44, errors=1, warnings=10)
    result.stdout.fnmatch_lines(
        [
            "*test_template.py::test_renders[[]does-not-exist:load-error[]] ERROR*",
            "*model './does-not-exist': no such directory, and not a Hub repo id*check the path*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_model_that_does_not_load_is_one_error_even_under_k(project: pytest.Pytester) -> None:
    broken = project.mkdir("broken-model")
    (broken / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    result = project.runpytest("--model", HERMES, "--model", str(broken), "-k", "double_bos", "-v")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_tokenizer.py::test_double_bos[[]broken-model:load-error[]] ERROR*",
            "*model '*broken-model': * has no tokenizer files (tokenizer.json, *",
        ]
    )


def test_when_no_model_loads_it_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", "./nope", "--model", "nope-model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*no model of the run loads:",
            "*model './nope': no such directory, and not a Hub repo id*",
            # a bare name is not looked up on the Hub
            "*model 'nope-model': no such directory, and not a Hub repo id (expected 'owner/name'*",
        ]
    )


def test_summary_lists_templates_and_findings(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "--model", NO_BOS)
    result.stdout.fnmatch_lines(
        [
            "*= templatecheck summary =*",
            f"hermes-3-tiny ({HERMES}) [[]reference: chatml (detected)[]]",
            "  default: 16 passed, 10 skipped, 2 warning",
            "    WARNING content_fidelity.list_content_raises: list content *",
            "    WARNING control_token_injection.*: user text containing *",
            "  tool_use: 15 passed, 10 skipped, 3 warning",
            "*",
            f"no-bos ({NO_BOS}) [[]reference: chatml (detected)[]]",
            "  default: 15 passed, 10 skipped, 2 warning, 1 failed",
            "    FAILED double_bos.missing: apply_chat_template(tokenize=True) and servers * give no BOS*",
        ]
    )


def test_report_json_has_every_result(project: pytest.Pytester, tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    project.runpytest(
        "--model", HERMES, "--model", NO_BOS, "--model", "./nope", "--tc-report-json", str(report)
    )
    data = json.loads(report.read_text())
    assert data["version"] == 1
    assert [m["model"] for m in data["models"]] == ["hermes-3-tiny", "no-bos", "nope"]
    hermes = data["models"][0]
    assert hermes["templates"] == ["default", "tool_use"]
    assert len(hermes["results"]) == 2 * len(REGISTRY)
    assert {r["outcome"] for r in hermes["results"]} == {"passed", "skipped", "warning"}
    layers = {r["check"]: r["layer"] for r in hermes["results"]}
    assert layers["renders"] == "template" and layers["double_bos"] == "tokenizer"
    skipped = {(r["check"], r["template"]) for r in hermes["results"] if r["outcome"] == "skipped"}
    assert skipped == {
        ("assistant_mask", "default"),
        ("assistant_mask", "tool_use"),
        ("tools", "default"),
        ("reference", "tool_use"),  # the Hermes tool prompt's wording is not fixed
        ("mistral_common", "default"),
        ("mistral_common", "tool_use"),
    } | {  # the generation layer runs only with --tc-generate
        (check, template)
        for template in ("default", "tool_use")
        for check in ("stops", "clean_start", "probe_accuracy", "template_sensitivity", "tool_call")
    } | {  # @huggingface/jinja is not installed where pytester runs (its HOME); a GGUF check needs a GGUF
        (check, template)
        for template in ("default", "tool_use")
        for check in ("hfjs", "gguf_matches_original")
    }
    mask = next(r for r in hermes["results"] if r["check"] == "assistant_mask")
    assert mask["message"] == "the template has no {% generation %} block"
    failed = [r for r in data["models"][1]["results"] if r["outcome"] == "failed"]
    assert [(r["check"], r["template"]) for r in failed] == [
        ("double_bos", "default"),
        ("double_bos", "tool_use"),
    ]
    assert "give no BOS" in failed[0]["message"]
    errors = data["models"][2]["results"]
    assert [(r["check"], r["outcome"]) for r in errors] == [("renders", "error")]  # once, not per check
    assert "no such directory" in errors[0]["message"]


def test_chat_template_selects_a_name_or_tests_a_candidate_file(project: pytest.Pytester) -> None:
    project.runpytest("--model", HERMES, "--tc-chat-template", "tool_use").assert_outcomes(
        passed=18, skipped=11, warnings=3
    )
    candidate = project.path / "candidate.jinja"
    candidate.write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content if m.content is string else "
        "raise_exception('Only string content') }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = project.runpytest("--model", NO_BOS, "--tc-chat-template", str(candidate), "-v")
    # the candidate forgets {{ bos_token }}, which this tokenizer adds only with special tokens: the BOS check
    # catches it
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(["*test_double_bos[[]no-bos:candidate[]] FAILED*"])


def test_unknown_chat_template_name_is_one_clear_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "--tc-chat-template", "rag")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # no model is left to test
    result.stderr.fnmatch_lines(["*--tc-chat-template 'rag': no such file*(it has: default, tool_use)*"])


def test_warnings_pass_unless_strict(project: pytest.Pytester) -> None:
    candidate = project.path / "no-system.jinja"
    candidate.write_text(
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m.content if m.content is string else raise_exception('Only string content') }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = project.runpytest("--model", HERMES, "--tc-chat-template", str(candidate))
    outcomes = result.parseoutcomes()
    assert "failed" not in outcomes and outcomes["warnings"] >= 2
    result.stdout.fnmatch_lines(["*TemplatecheckWarning: renders.*: the template refuses a system message*"])
    strict = project.runpytest("--model", HERMES, "--tc-chat-template", str(candidate), "--tc-strict-checks")
    assert strict.parseoutcomes()["failed"] == outcomes["warnings"]
    strict.stdout.fnmatch_lines(["FAILED *test_renders[[]hermes-3-tiny:no-system[]]*"])


def test_k_x_lf_and_junitxml_work_as_usual(project: pytest.Pytester) -> None:
    project.runpytest("--model", HERMES, "-k", "double_bos").assert_outcomes(passed=2)
    stopped = project.runpytest("--model", NO_BOS, "-x").parseoutcomes()
    assert stopped["failed"] == 1 and stopped["passed"] < 34
    project.runpytest("--model", NO_BOS)
    project.runpytest("--model", NO_BOS, "--lf").assert_outcomes(failed=2)
    xml = project.path / "junit.xml"
    project.runpytest("--model", NO_BOS, f"--junitxml={xml}")
    text = xml.read_text()
    assert 'name="test_double_bos[no-bos:default]"' in text
    assert "give no BOS" in text


def test_xdist_gives_the_serial_results(project: pytest.Pytester, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    serial, parallel = tmp_path / "serial.json", tmp_path / "parallel.json"
    args = ["--model", HERMES, "--model", NO_BOS, "-p", "no:cacheprovider", "--tc-examples", "20"]
    project.runpytest_subprocess(
        *args, "--tc-report-json", str(serial), "--tc-report-md", str(serial.with_suffix(".md"))
    ).assert_outcomes(passed=70, failed=2, skipped=44, warnings=10)
    run = project.runpytest_subprocess(
        *args,
        "-n",
        "2",
        "--tc-report-json",
        str(parallel),
        "--tc-report-md",
        str(parallel.with_suffix(".md")),
    )
    outcomes = run.parseoutcomes()
    assert (outcomes["passed"], outcomes["failed"], outcomes["skipped"]) == (70, 2, 44)
    run.stdout.fnmatch_lines(["*= templatecheck summary =*"])

    def results(path: Path) -> list[tuple[str, str, str, str]]:
        data = json.loads(path.read_text())
        return sorted(
            (m["model"], r["template"], r["check"], r["outcome"])
            for m in data["models"]
            for r in m["results"]
        )

    assert results(parallel) == results(serial)
    markdown = parallel.with_suffix(".md").read_text()
    assert markdown == serial.with_suffix(".md").read_text()
    assert "### Capabilities" in markdown and "| tools | no | yes |" in markdown


def test_models_from_adds_every_model_directory(project: pytest.Pytester) -> None:
    families = FIXTURES / "families"
    expected = sorted(
        p.name
        for p in families.iterdir()
        if (p / "tokenizer_config.json").is_file() or (p / "chat_template.jinja").is_file()
    )
    assert len(expected) >= 10 and "broken" not in expected  # a folder of folders is not a model
    result = project.runpytest(
        "--tc-models-from", str(families), "--model", HERMES, "-k", "renders", "--co", "-q"
    )
    ids = [line.split("[", 1)[1].rstrip("]") for line in result.stdout.lines if "::test_renders[" in line]
    assert ids == ["hermes-3-tiny:default", "hermes-3-tiny:tool_use"] + [
        f"{name}:default" for name in expected
    ]


def test_models_from_a_bad_folder_is_a_usage_error(project: pytest.Pytester) -> None:
    missing = project.runpytest("--tc-models-from", "no-such-dir")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(
        ["*--tc-models-from 'no-such-dir': no such directory; pass a folder of model directories*"]
    )
    (project.path / "empty" / "sub").mkdir(parents=True)
    empty = project.runpytest("--tc-models-from", "empty")
    assert empty.ret == pytest.ExitCode.USAGE_ERROR
    empty.stderr.fnmatch_lines(["*--tc-models-from 'empty': no subdirectory holds a tokenizer_config.json*"])


def test_a_project_with_its_own_device_and_examples_options_still_runs(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "def pytest_addoption(parser):\n"
        "    parser.addoption('--device', default='cpu')\n"
        "    parser.addoption('--examples', type=int, default=1)\n"
    )
    pytester.makepyfile(
        test_own="def test_own(request):\n"
        "    assert request.config.getoption('device') == 'tpu'\n"
        "    assert request.config.getoption('examples') == 3\n"
    )
    pytester.runpytest("--device", "tpu", "--examples", "3").assert_outcomes(passed=1)
    # templatecheck is loaded in that project all the same, under its own prefix
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--tc-examples=N*", "*--tc-device=DEVICE*"])


def test_a_project_with_its_own_model_option_disables_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_addoption(parser):\n    parser.addoption('--model', default='x')\n")
    pytester.makepyfile(
        test_own="def test_own(request):\n    assert request.config.getoption('model') == 'm'\n"
    )
    pytester.runpytest("-p", "no:templatecheck", "--model", "m").assert_outcomes(passed=1)


def _copy_model(source: str, folder: Path) -> Path:
    return Path(shutil.copytree(source, folder / Path(source).name))


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_a_run_from_another_directory_writes_nothing_beside_the_model(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    model = _copy_model(NO_BOS, tmp_path / "models")
    before = _listing(model)
    # a subprocess: the hypothesis draw of this process is cached already
    result = project.runpytest_subprocess("--model", str(model), "--tc-examples", "20")
    result.assert_outcomes(passed=34, failed=2, skipped=22, warnings=5)
    result.stdout.fnmatch_lines(
        [
            f"rootdir: {project.path}",
            "test_tokenizer.py .F*",  # the suite's file as the node ids name it, not a path into the model
            "FAILED test_tokenizer.py::test_double_bos[[]no-bos:default[]] - *",
        ]
    )
    result.stdout.no_fnmatch_line("*../*test_*.py*")
    assert _listing(model) == before
    assert not (project.path / ".hypothesis").exists()
    assert (project.path / ".pytest_cache").is_dir()  # the cache is the working directory's, as usual
    # --lf reads it back
    project.runpytest_subprocess("--model", str(model), "--tc-examples", "20", "--lf").assert_outcomes(
        failed=2
    )


def test_model_dot_is_named_by_its_folder_and_writes_nothing_there(tmp_path: Path) -> None:
    import subprocess
    import sys

    model = Path(shutil.copytree(HERMES, tmp_path / "My-Model"))
    before = _listing(model)
    command = [sys.executable, "-m", "pytest", "--model", ".", "-k", "renders", "-v", "--tc-examples", "20"]
    # pytest-benchmark, where installed, writes its own folder into the working directory
    run = subprocess.run(
        [*command, "-p", "no:benchmark"], cwd=model, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "test_template.py::test_renders[My-Model:default] PASSED" in run.stdout
    assert "My-Model (.)" in run.stdout  # the summary names it by its folder, as it was written
    assert _listing(model) == before  # no .pytest_cache, no .hypothesis in the model


def test_node_ids_and_suite_files_select_what_they_name(project: pytest.Pytester) -> None:
    from templatecheck.plugin import SUITE

    result = project.runpytest("--model", HERMES, "test_tokenizer.py::test_double_bos", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_tokenizer.py::test_double_bos[[]hermes-3-tiny:default[]] PASSED*"])
    # a node id the suite printed runs again, as does the suite file by its installed path
    one = project.runpytest("--model", HERMES, "test_tokenizer.py::test_double_bos[hermes-3-tiny:tool_use]")
    one.assert_outcomes(passed=1)
    whole = project.runpytest("--model", HERMES, str(SUITE / "test_roles.py"), "--co", "-q")
    assert [line for line in whole.stdout.lines if "::" in line] == [
        f"test_roles.py::{test}[hermes-3-tiny:{template}]"
        for template in ("default", "tool_use")  # one template's checks, then the next's
        for test in ("test_role_policy", "test_default_system_prompt", "test_clock")
    ]


def test_a_path_outside_the_suite_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--model", HERMES, "test_own.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*'test_own.py': a --model run collects only the conformance suite; name one of its files (*"]
    )


def test_the_marker_selects_the_suite(project: pytest.Pytester) -> None:
    project.runpytest("--model", HERMES, "-m", "templatecheck", "-k", "clock").assert_outcomes(passed=2)
    project.runpytest("--model", HERMES, "-m", "not templatecheck").assert_outcomes(deselected=58)
    project.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.templatecheck: *"])


def test_xdist_keeps_a_model_or_a_template_on_one_worker() -> None:
    """With as many models as workers each model's items go to one worker; with fewer, each template's (its
    checks share its renders); a lone template's items spread."""
    from templatecheck.suite import scope_of

    two_models = [
        "test_template.py::test_renders[a:default]",
        "test_tokenizer.py::test_double_bos[b:default]",
    ]
    assert scope_of(two_models, 2)("test_template.py::test_renders[a:default]") == "a"
    one_model = [
        "test_template.py::test_renders[a:default]",
        "test_template.py::test_renders[a:dir/x.json#y]",
    ]
    by_template = scope_of(one_model, 2)
    assert by_template("test_tokenizer.py::test_double_bos[a:dir/x.json#y]") == "a:dir/x.json#y"
    assert scope_of(two_models, 4)("test_template.py::test_renders[a:default]") == "a:default"
    lone = ["test_template.py::test_renders[a:default]", "test_tokenizer.py::test_double_bos[a:default]"]
    assert scope_of(lone, 2)(lone[1]) == lone[1]


def test_a_projects_own_tests_keep_their_order(pytester: pytest.Pytester) -> None:
    """The suite's items run template by template; a project's own tests, named like checks or not, run in
    pytest's order."""
    pytester.makepyfile(
        test_a="def test_first():\n    pass\n\ndef test_second():\n    pass\n",
        test_b="def test_renders():\n    pass\n",
        test_c="def test_hfjs():\n    pass\n",
    )
    result = pytester.runpytest("--co", "-q")
    assert [line for line in result.stdout.lines if "::" in line] == [
        "test_a.py::test_first",
        "test_a.py::test_second",
        "test_b.py::test_renders",
        "test_c.py::test_hfjs",
    ]


def test_the_run_plans_the_checks_it_runs_after_every_deselection(project: pytest.Pytester) -> None:
    """Work a check sends ahead is sent only for the checks the run still holds once -k, --lf and the rest
    have deselected theirs."""
    project.makeconftest(
        "from templatecheck.plugin import CATALOG\n"
        "def pytest_sessionfinish(session):\n"
        "    print('planned:', ' '.join(sorted(session.config.stash[CATALOG].planned)), ':end')\n"
    )
    result = project.runpytest("--model", HERMES, "-k", "test_round_trip or test_clock", "-s")
    result.stdout.fnmatch_lines(["*planned: clock round_trip :end*"])
    project.path.joinpath("test_own.py").unlink()
    again = project.runpytest("--model", NO_BOS, "-k", "test_double_bos or test_clock")
    again.assert_outcomes(passed=2, failed=2, warnings=0)
    last = project.runpytest("--model", NO_BOS, "--lf", "-s")
    last.stdout.fnmatch_lines(["*planned: double_bos :end*"])
