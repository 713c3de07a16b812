"""The pytest plugin: options, parametrization over models and templates, results and reports.

Imported by pytest on every run of every project where templatecheck is installed, so it imports nothing
heavy: models, tokenizers and transformers load only inside the fixtures of a ``--model`` run.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from templatecheck.errors import TemplatecheckError
from templatecheck.options import Options
from templatecheck.result import CheckResult, Layer, Outcome

if TYPE_CHECKING:
    from templatecheck.baseline import Baseline
    from templatecheck.checks import Check
    from templatecheck.model import Model, Subject
    from templatecheck.session import Session

SUITE = Path(__file__).parent / "suite"
_PROPERTY = "templatecheck"
_PINNED = "templatecheck-pinned"


class TemplatecheckWarning(UserWarning):
    """A check found something legal but risky (shown in pytest's warnings summary)."""


CATALOG: pytest.StashKey[Session] = pytest.StashKey()
OPTIONS = pytest.StashKey[Options]()
BASELINE: pytest.StashKey[Baseline | None] = pytest.StashKey()
RESULTS = pytest.StashKey[list[CheckResult]]()
PINNED = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("templatecheck", "templatecheck: chat-template conformance")
    group.addoption(
        "--model",
        action="append",
        default=[],
        metavar="PATH_OR_ID",
        help="run the conformance suite (only it) on a model directory or Hub id ('org/name[@revision]'); "
        "repeat for several models",
    )
    group.addoption(
        "--chat-template",
        metavar="NAME_OR_FILE",
        help="test only this named template of each model, or a candidate template file (or a folder of "
        "them: *.jinja and template *.json files) with the model's tokenizer",
    )
    group.addoption(
        "--report-json", metavar="PATH", help="write every check result of the run to PATH as JSON"
    )
    group.addoption(
        "--report-md",
        metavar="PATH",
        help="write a Markdown report to PATH (capabilities, checks and findings per model), for a model card "
        "or a pull-request comment",
    )
    group.addoption(
        "--models-from",
        action="append",
        default=[],
        metavar="DIR",
        help="add every subdirectory of DIR that holds a tokenizer_config.json or chat_template.jinja as a "
        "--model (a sweep in one session); repeatable",
    )
    group.addoption(
        "--pin-dir",
        metavar="DIR",
        help="compare each template's renderings and token ids of a fixed probe set with the pins in DIR "
        "(test_pins); a missing or different pin fails",
    )
    group.addoption(
        "--update-pins",
        action="store_true",
        help="with --pin-dir: write the current renderings as the pins instead of comparing",
    )
    group.addoption(
        "--strict-checks",
        action="store_true",
        help="treat warnings of the checks as failures (pytest itself owns --strict)",
    )
    group.addoption(
        "--examples",
        type=int,
        default=100,
        metavar="N",
        help="hypothesis conversations per property check (default: 100, hypothesis' own budget)",
    )
    group.addoption(
        "--render-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="wall-time bound of one template render; a render past it is a finding (default: 2)",
    )
    group.addoption(
        "--reference",
        metavar="FAMILY",
        help="compare templates with this reference format family instead of the detected one; "
        "'none' skips the comparison (families: see README, or templatecheck.formats.names())",
    )
    group.addoption(
        "--consumer",
        action="append",
        default=[],
        metavar="NAME",
        help="make this consumer path's hazards fail instead of warn: apply_chat_template, server (rendering "
        "encoded without special tokens: vLLM, SGLang, TGI) or naive (tokenizer(prompt)); repeatable",
    )
    group.addoption(
        "--template-var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pass a template variable to every render, as apply_chat_template's keyword arguments are "
        "(date_string, enable_thinking, ...); VALUE is read as JSON when it parses, else as a string; repeatable",
    )
    group.addoption(
        "--baseline",
        metavar="FILE",
        help="accept the findings FILE lists (by model, template and cause): they are reported, not failed; "
        "a new finding still fails",
    )
    group.addoption(
        "--update-baseline",
        action="store_true",
        help="with --baseline: write every failed and warning finding of the run to FILE instead of failing",
    )
    group.addoption(
        "--generate",
        action="store_true",
        help="run the generation layer: load the weights (needs torch) and prompt the model with the probe set",
    )
    group.addoption(
        "--device",
        metavar="DEVICE",
        help="torch device of the generation layer: cpu, cuda, cuda:N, mps (default: CUDA when available, else CPU)",
    )
    group.addoption(
        "--max-new-tokens",
        type=int,
        default=Options.max_new_tokens,
        metavar="N",
        help=f"token budget of each greedy reply of the generation layer (default: {Options.max_new_tokens}; "
        "tool calls get 64)",
    )
    group.addoption(
        "--probe-file",
        metavar="PATH",
        help="JSON-lines probes added to the generation layer's built-in set (format: see README)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "templatecheck: a conformance check of templatecheck")
    config.stash[RESULTS] = []
    config.stash[PINNED] = []
    config.pluginmanager.register(_ResultCollector(config), "templatecheck-results")
    reference = config.getoption("reference")
    if reference is not None:
        from templatecheck.formats import NONE, get

        if reference != NONE:
            try:
                get(reference)
            except TemplatecheckError as error:
                raise pytest.UsageError(str(error)) from None
    if config.getoption("update_pins") and config.getoption("pin_dir") is None:
        raise pytest.UsageError("--update-pins writes the pins of --pin-dir DIR: pass --pin-dir too")
    from templatecheck import settings as checked
    from templatecheck.session import read_baseline

    try:
        checked.check_render_timeout(config.getoption("render_timeout"))
        checked.check_examples(config.getoption("examples"))
        for option in ("report_json", "report_md"):
            checked.check_report_path("--" + option.replace("_", "-"), config.getoption(option))
        if config.getoption("probe_file") and not config.getoption("generate"):
            raise TemplatecheckError(
                "--probe-file adds probes to the generation layer, which runs only with --generate: pass --generate"
            )
        options_from(config)  # parsed and checked once, here, where a bad value is a usage error
        config.stash[BASELINE] = read_baseline(
            config.getoption("baseline"), config.getoption("update_baseline")
        )
    except TemplatecheckError as error:
        raise pytest.UsageError(str(error)) from None
    from templatecheck.session import Session, models_from

    try:
        refs: list[str] = [*(config.getoption("model") or []), *models_from(config.getoption("models_from"))]
    except TemplatecheckError as error:
        raise pytest.UsageError(str(error)) from None
    if not refs:
        return
    config.stash[CATALOG] = Session(
        refs,
        options_from(config),
        config.getoption("chat_template"),
        config.getoption("render_timeout"),
        config.stash[BASELINE],
    )
    if config.getoption("generate"):
        from templatecheck.checks.generation import prepare

        try:
            prepare(options_from(config))
        except TemplatecheckError as error:
            raise pytest.UsageError(str(error)) from None
    # `--model` runs the conformance suite and nothing else, whatever paths were given.
    config.args[:] = [str(SUITE)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tc" not in metafunc.fixturenames:
        return
    catalog = metafunc.config.stash.get(CATALOG, None)
    if catalog is None:
        metafunc.parametrize(
            "tc", [pytest.param(None, marks=pytest.mark.skip(reason="no --model given"))], indirect=True
        )
        return
    targets = list(catalog.targets())
    metafunc.parametrize("tc", [t for t, _ in targets], ids=[i for _, i in targets], indirect=True)


class CheckRunner:
    """What a suite test holds: runs one check on its (model, template) and turns the result into an outcome."""

    def __init__(self, request: pytest.FixtureRequest, model: Model, template: str) -> None:
        self.request = request
        self.model = model
        self.template = template

    def run(self, check: Check) -> CheckResult:
        config = self.request.config
        if check.layer is Layer.GENERATION and options_from(config).generate:
            try:
                _fetch_weights(config, self.model)
            except TemplatecheckError as error:
                pytest.fail(str(error), pytrace=False)
        result = config.stash[CATALOG].run(check, self.model, self.template)
        _record(self.request, result)
        strict = config.getoption("strict_checks")
        if config.getoption("update_baseline") and result.outcome in (Outcome.FAILED, Outcome.WARNING):
            return result  # its findings are written to the baseline at the end of the run
        if result.outcome is Outcome.ERROR:
            pytest.fail(result.message, pytrace=False)
        if result.outcome is Outcome.FAILED or (strict and result.outcome is Outcome.WARNING):
            pytest.fail(result.message + _accept_hint(config), pytrace=False)
        if result.outcome is Outcome.WARNING:
            first = [f for f in result.findings if f.outcome is Outcome.WARNING and not f.accepted]
            causes = ", ".join(dict.fromkeys(f.cause for f in first))
            from templatecheck.report import first_line

            warnings.warn(TemplatecheckWarning(f"{causes}: {first_line(first[0].message)}"), stacklevel=2)
        if result.outcome is Outcome.SKIPPED:
            pytest.skip(result.message)
        return result


def _settings(config: pytest.Config) -> dict[str, Any]:
    from templatecheck.session import settings

    return settings(
        options_from(config),
        strict=bool(config.getoption("strict_checks")),
        baseline=config.getoption("baseline"),
    )


def options_from(config: pytest.Config) -> Options:
    """The check settings of this run, from the command line (parsed once, at configuration)."""
    if OPTIONS not in config.stash:
        config.stash[OPTIONS] = _options(config)
    return config.stash[OPTIONS]


def _options(config: pytest.Config) -> Options:
    from templatecheck import settings as checked

    return Options(
        examples=config.getoption("examples"),
        reference=config.getoption("reference"),
        generate=config.getoption("generate"),
        device=config.getoption("device"),
        max_new_tokens=config.getoption("max_new_tokens"),
        probe_file=config.getoption("probe_file"),
        consumers=checked.parse_consumers(config.getoption("consumer")),
        template_vars=checked.parse_template_vars(config.getoption("template_var")),
    )


def _accept_hint(config: pytest.Config) -> str:
    """The command that accepts the run's findings, for a run with ``--baseline``."""
    if config.getoption("baseline") is None:
        return ""
    from templatecheck.session import accept_command

    command = accept_command(config.getoption("model"), config.getoption("baseline"))
    return f"\n  not in the baseline; to accept it: {command}"


def _fetch_weights(config: pytest.Config, model: Model) -> None:
    """Download a Hub model's weights (once) with output capture off, so that the progress bars show."""
    from templatecheck.model import weights_directory

    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        weights_directory(model)


def _record(request: pytest.FixtureRequest, result: CheckResult) -> None:
    request.node.user_properties.append((_PROPERTY, json.dumps(result.to_json())))


@pytest.fixture
def tc(request: pytest.FixtureRequest) -> CheckRunner:
    """The (model, template) under test, as a runner of checks."""
    from templatecheck.checks import REGISTRY
    from templatecheck.model import short_name
    from templatecheck.session import error_result

    ref, template = request.param
    model = request.config.stash[CATALOG].get(ref)
    if isinstance(model, TemplatecheckError):
        name = request.function.__name__.removeprefix("test_")
        check = REGISTRY.get(name) or _pins_check(request)
        _record(request, error_result(ref, short_name(ref), "", check, str(model)))
        pytest.fail(str(model), pytrace=False)
    assert template is not None
    return CheckRunner(request, model, template)


@pytest.fixture
def pin_check(request: pytest.FixtureRequest) -> Check:
    """``test_pins``' check: compare the renderings with the pins in ``--pin-dir`` (or write them)."""
    if request.config.getoption("pin_dir") is None:
        pytest.skip("no --pin-dir given (pinning compares each template's renderings with golden files)")
    return _pins_check(request)


def _pins_check(request: pytest.FixtureRequest) -> Check:
    from templatecheck import pins
    from templatecheck.checks import Check
    from templatecheck.result import Finding, Layer

    config = request.config
    root = Path(config.getoption("pin_dir") or ".")

    def run(subject: Subject) -> list[Finding]:
        """A rendering or token ids that differ from the pinned ones: any change of behaviour of a template
        (a publisher's edit, a transformers or tokenizer upgrade) since the pins were written."""
        if not config.getoption("update_pins"):
            return pins.compare(subject, root, _update_command(config, subject.model.ref.text))
        for path in pins.update(subject, root):
            request.node.user_properties.append((_PINNED, str(path)))
        return []

    return Check("pins", Layer.TEMPLATE, run)


def _update_command(config: pytest.Config, source: str) -> str:
    import shlex

    words = ["pytest", "--model", source, "--pin-dir", config.getoption("pin_dir"), "--update-pins"]
    chosen = config.getoption("chat_template")
    return shlex.join([*words, *(["--chat-template", chosen] if chosen else [])])


class _ResultCollector:
    """Gathers the results recorded on test reports (those of xdist workers too) into the config's stash."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":  # user properties accumulate; the teardown report carries them all
            return
        for key, value in report.user_properties:
            if key == _PROPERTY:
                self.config.stash[RESULTS].append(CheckResult.from_json(json.loads(str(value))))
            elif key == _PINNED:
                self.config.stash[PINNED].append(str(value))


BASELINE_WRITTEN = pytest.StashKey[str]()


def _finish_baseline(config: pytest.Config, results: list[CheckResult]) -> None:
    """Write the baseline (``--update-baseline``): this run's findings, plus the entries of checks that did
    not run here (a ``-k`` selection keeps what it did not select)."""
    accepted = config.stash.get(BASELINE, None)
    if accepted is None or not config.getoption("update_baseline"):
        return
    entries = accepted.rewrite(results)
    config.stash[BASELINE_WRITTEN] = f"{accepted.path} ({len(entries)} accepted findings)"


def _report_path(config: pytest.Config, option: str, interrupted: bool) -> Path | None:
    """Where a report goes: the path given, or beside it (``NAME.interrupted.EXT``) for an interrupted run,
    so a partial report never replaces the last complete one."""
    name = config.getoption(option)
    if not name or CATALOG not in config.stash or hasattr(config, "workerinput"):
        return None
    path = Path(name)
    return path.with_name(f"{path.stem}.interrupted{path.suffix}") if interrupted else path


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    if CATALOG in config.stash and not hasattr(config, "workerinput") and not interrupted:
        _finish_baseline(config, config.stash[RESULTS])
    path = _report_path(config, "report_json", interrupted)
    if path is not None:
        from templatecheck.report import write_json_report

        results: list[CheckResult] = config.stash[RESULTS]
        from templatecheck.session import provenance

        write_json_report(
            path,
            results,
            {**_settings(config), "interrupted": interrupted},
            provenance(config.stash.get(CATALOG, None)),
        )
    md_path = _report_path(config, "report_md", interrupted)
    if md_path is not None:
        from templatecheck.markdown import markdown_report
        from templatecheck.report import write_atomically

        results = config.stash[RESULTS]
        catalog = config.stash[CATALOG]
        text = markdown_report(
            results, catalog.capabilities(), catalog.reference_notes(results), catalog.refs
        )
        if interrupted:
            text = "> **Interrupted run**: this report is partial.\n\n" + text
        write_atomically(md_path, text)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    written: list[str] = config.stash.get(PINNED, [])
    pinned = sorted(written)
    if pinned:
        terminalreporter.write_sep("=", f"templatecheck pins: {len(pinned)} files written or removed")
        for path in pinned:
            terminalreporter.write_line(path)
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    from templatecheck.report import summary_lines

    terminalreporter.write_sep("=", "templatecheck summary")
    catalog = config.stash.get(CATALOG, None)
    sources = catalog.refs if catalog is not None else []
    notes = catalog.reference_notes(results) if catalog is not None else {}
    for line in summary_lines(results, notes, sources):
        terminalreporter.write_line(line)
    accepted = config.stash.get(BASELINE, None)
    rewritten = config.stash.get(BASELINE_WRITTEN, None)
    if rewritten:
        terminalreporter.write_line(f"baseline written: {rewritten}")
    elif accepted is not None:
        stale = accepted.stale(results)
        if stale:
            terminalreporter.write_line(
                f"baseline: {len(stale)} accepted findings no longer occur (stale); rewrite with "
                f"--update-baseline:{_accept_hint(config).split(':', 1)[1]}"
            )
            for entry in stale:
                terminalreporter.write_line(f"  stale: {entry.model}:{entry.template} {entry.cause}")
    for option, label in (("report_json", "JSON report"), ("report_md", "Markdown report")):
        path = config.getoption(option)
        if path:
            terminalreporter.write_line(f"{label}: {path}")
