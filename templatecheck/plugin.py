"""The pytest plugin: options, parametrization over models and templates, results and reports.

Imported by pytest on every run of every project where templatecheck is installed, so it imports nothing
heavy: models, tokenizers and transformers load only inside the fixtures of a ``--model`` run.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from templatecheck.errors import TemplatecheckError
from templatecheck.options import Options
from templatecheck.result import CheckResult, Layer, Outcome

if TYPE_CHECKING:
    from templatecheck.checks import Check
    from templatecheck.model import Model

SUITE = Path(__file__).parent / "suite"
_PROPERTY = "templatecheck"


class TemplatecheckWarning(UserWarning):
    """A check found something legal but risky (shown in pytest's warnings summary)."""


@dataclass
class Catalog:
    """The models of this run, loaded once per process; a model that fails to load keeps its error."""

    refs: list[str]
    chat_template: str | None
    render_timeout: float
    loaded: dict[str, Model | TemplatecheckError] = field(default_factory=dict)

    def get(self, ref: str) -> Model | TemplatecheckError:
        if ref not in self.loaded:
            from templatecheck.model import load_model
            from templatecheck.render import Limits

            try:
                self.loaded[ref] = load_model(
                    ref, chat_template=self.chat_template, limits=Limits(seconds=self.render_timeout)
                )
            except TemplatecheckError as error:
                self.loaded[ref] = error
        return self.loaded[ref]

    def targets(self) -> Iterator[tuple[tuple[str, str | None], str]]:
        """(model, template) pairs with their test ids; a model that fails to load gives one failing pair."""
        from templatecheck.model import short_name

        for ref in self.refs:
            model = self.get(ref)
            if isinstance(model, TemplatecheckError):
                yield (ref, None), f"{short_name(ref)}:load-error"
            else:
                for template in model.templates:
                    yield (ref, template), f"{model.name}:{template}"


CATALOG = pytest.StashKey[Catalog]()
RESULTS = pytest.StashKey[list[CheckResult]]()


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
        help="test only this named template of each model, or a candidate template file with its tokenizer",
    )
    group.addoption(
        "--report-json", metavar="PATH", help="write every check result of the run to PATH as JSON"
    )
    group.addoption(
        "--strict-checks",
        action="store_true",
        help="treat warnings of the checks as failures (pytest itself owns --strict)",
    )
    group.addoption(
        "--render-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="wall-time bound of one template render; a render past it is a finding (default: 2)",
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
    config.pluginmanager.register(_ResultCollector(config), "templatecheck-results")
    refs: list[str] = config.getoption("model") or []
    if not refs:
        return
    config.stash[CATALOG] = Catalog(
        refs, config.getoption("chat_template"), config.getoption("render_timeout")
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
        from templatecheck.model import Subject

        subject = Subject(self.model, self.model.templates[self.template], options_from(self.request.config))
        try:
            if check.layer is Layer.GENERATION and subject.options.generate:
                _fetch_weights(self.request.config, self.model)
            result = check(subject)
        except TemplatecheckError as error:
            result = _error_result(self.model.ref.text, self.model.name, self.template, check, str(error))
        _record(self.request, result)
        strict = self.request.config.getoption("strict_checks")
        if result.outcome is Outcome.ERROR:
            pytest.fail(result.message, pytrace=False)
        if result.outcome is Outcome.FAILED or (strict and result.outcome is Outcome.WARNING):
            pytest.fail(result.message, pytrace=False)
        if result.outcome is Outcome.WARNING:
            warnings.warn(TemplatecheckWarning(f"{check.name}: {result.message}"), stacklevel=1)
        if result.outcome is Outcome.SKIPPED:
            pytest.skip(result.message)
        return result


def options_from(config: pytest.Config) -> Options:
    """The check settings of this run, from the command line."""
    return Options(
        generate=config.getoption("generate"),
        device=config.getoption("device"),
        max_new_tokens=config.getoption("max_new_tokens"),
        probe_file=config.getoption("probe_file"),
    )


def _fetch_weights(config: pytest.Config, model: Model) -> None:
    """Download a Hub model's weights (once) with output capture off, so that the progress bars show."""
    from templatecheck.model import weights_directory

    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        weights_directory(model)


def _error_result(source: str, name: str, template: str, check: Check, message: str) -> CheckResult:
    from templatecheck.result import Finding

    return CheckResult(
        name, source, template, check.name, check.layer, Outcome.ERROR, (Finding(Outcome.ERROR, message),)
    )


def _record(request: pytest.FixtureRequest, result: CheckResult) -> None:
    request.node.user_properties.append((_PROPERTY, json.dumps(result.to_json())))


@pytest.fixture
def tc(request: pytest.FixtureRequest) -> CheckRunner:
    """The (model, template) under test, as a runner of checks."""
    from templatecheck.checks import REGISTRY
    from templatecheck.model import short_name

    ref, template = request.param
    model = request.config.stash[CATALOG].get(ref)
    if isinstance(model, TemplatecheckError):
        check = REGISTRY[request.function.__name__.removeprefix("test_")]
        _record(request, _error_result(ref, short_name(ref), "", check, str(model)))
        pytest.fail(str(model), pytrace=False)
    assert template is not None
    return CheckRunner(request, model, template)


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


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    path = config.getoption("report_json")
    if path and CATALOG in config.stash and not hasattr(config, "workerinput"):
        from templatecheck.report import write_json_report

        results: list[CheckResult] = config.stash[RESULTS]
        write_json_report(Path(path), results)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    from templatecheck.report import summary_lines

    terminalreporter.write_sep("=", "templatecheck summary")
    for line in summary_lines(results):
        terminalreporter.write_line(line)
    path = config.getoption("report_json")
    if path:
        terminalreporter.write_line(f"JSON report: {path}")
