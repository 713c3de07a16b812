"""The pytest plugin: options, parametrization over models and templates, outcomes and reports. Imported on
every run of every project where templatecheck is installed, so it imports nothing heavy, and every option but
``--model`` carries the ``--tc-`` prefix. The work is the :class:`~templatecheck.session.Session`'s."""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from templatecheck.errors import TemplatecheckError
from templatecheck.options import Options
from templatecheck.result import CheckResult, Layer, Outcome
from templatecheck.suite import model_scheduler

if TYPE_CHECKING:
    from templatecheck.checks import Check
    from templatecheck.model import Model
    from templatecheck.session import Session

SUITE = Path(__file__).parent / "suite"  # templatecheck.suite.FOLDER, without importing it
MARKER = "templatecheck"
_PROPERTY = "templatecheck"
_PINNED = "templatecheck-pinned"
_FACTS = "templatecheck-facts"
PREFIX = "tc_"


class TemplatecheckWarning(UserWarning):
    """A check found something legal but risky (shown in pytest's warnings summary)."""


CATALOG: pytest.StashKey[Session] = pytest.StashKey()
OPTIONS = pytest.StashKey[Options]()
RESULTS = pytest.StashKey[list[CheckResult]]()
PINNED = pytest.StashKey[list[str]]()
SELECTED = pytest.StashKey[list[str]]()
BASELINE_WRITTEN = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("templatecheck", "templatecheck: chat-template conformance")
    group.addoption("--model", action="append", default=[], metavar="PATH_OR_ID", help="run the conformance "
                    "suite (only it) on a model directory, GGUF file or Hub id ('owner/name[@revision]'); repeatable; a "
                    "project with its own --model disables this plugin with -p no:templatecheck")  # fmt: skip
    from templatecheck.settings import OPTIONS

    for name, settings in OPTIONS.items():
        group.addoption("--tc-" + name, **settings)


def option(config: pytest.Config, name: str) -> Any:
    """The value of ``--tc-NAME`` (``name`` with underscores: ``report_json``)."""
    return config.getoption(PREFIX + name)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Keep the rootdir (``.pytest_cache``, the paths pytest prints) and the ini-file out of the models: pytest
    picks both before any plugin loads, taking ``--model DIR`` for a path argument, and has no public setter,
    so they are corrected on its private attributes (each only where it exists)."""
    namespace = early_config.known_args_namespace
    given = [*getattr(namespace, "model", []), *getattr(namespace, PREFIX + "models_from", [])]
    if not given:
        return
    from templatecheck.suite import holds, run_root

    models = [p.resolve() for p in (Path(g).expanduser() for g in given) if p.is_dir()]
    here, inipath = early_config.invocation_params.dir.resolve(), early_config.inipath
    if inipath is not None and not namespace.inifilename and not holds(inipath.parent, here):
        for name, empty in (("_inipath", None), ("_inicfg", {}), ("_inicache", {})):
            if hasattr(early_config, name):
                setattr(early_config, name, empty)  # another project's configuration, found above a model
        inipath = None
    old = early_config.rootpath
    root = old if namespace.rootdir else run_root(old, inipath, here, models)  # --rootdir: the user's choice
    if root == SUITE:  # started inside a model directory: no cache, rather than one in the model
        for plugin in ("cacheprovider", "stepwise"):  # as -p no:cacheprovider does
            early_config.pluginmanager.set_blocked(plugin)
    if root != old and hasattr(early_config, "_rootpath"):
        early_config._rootpath = root
        if namespace.confcutdir == str(old):
            namespace.confcutdir = str(root)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a conformance check of templatecheck (a --model run)")
    config.stash[RESULTS] = []
    config.stash[PINNED] = []
    config.pluginmanager.register(_ResultCollector(config), "templatecheck-results")
    from templatecheck.session import Session, models_from, read_baseline
    from templatecheck.suite import node_id

    try:
        options_from(config)  # parsed and checked once, here, where a bad value is a usage error
        baseline = read_baseline(option(config, "baseline"), option(config, "update_baseline"))
        refs = [*config.getoption("model"), *models_from(option(config, "models_from"))]
        if not refs:
            return
        catalog = Session(refs, options_from(config), option(config, "chat_template"),
                          option(config, "render_timeout"), baseline, tables=bool(option(config, "report_md")))  # fmt: skip
        catalog.eager = not (config.getoption("numprocesses", None) or hasattr(config, "workerinput"))
        catalog.require_one()
        if options_from(config).generate:
            from templatecheck.checks.generation import prepare

            prepare(options_from(config))
        chosen = config.args if config.args_source is pytest.Config.ArgsSource.ARGS else []
        config.stash[SELECTED] = [node_id(a, config.invocation_params.dir) for a in chosen]
    except TemplatecheckError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[CATALOG] = catalog
    config.args[:] = [str(SUITE)]  # a --model run collects the conformance suite and nothing else


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Select the suite files and node ids named on the command line (relative to the suite folder), and keep
    one item of each model that does not load (``test_renders`` when it is selected): its error is said once."""
    from templatecheck.suite import selects

    chosen = config.stash.get(SELECTED, [])
    named = [i for i in items if not chosen or any(selects(s, i.path, i.name) for s in chosen)]
    first: dict[str, pytest.Item] = {}
    for item in named:
        ref, template = _target(item)
        if template is None and (ref not in first or item.name.startswith("test_renders[")):
            first[ref] = item
    kept = [i for i in named if _target(i)[1] is not None or first.get(_target(i)[0]) is i]
    if len(kept) < len(items):
        selected = {id(i) for i in named}
        config.hook.pytest_deselected(items=[i for i in items if id(i) not in selected])
        items[:] = kept  # the other items of a model that did not load say nothing new
    if config.stash.get(CATALOG, None) is None:  # a project's own tests: their order is theirs
        return
    # one template's checks one after another, its suite files layer by layer (as the reports list them):
    # they share its renders and what was learnt of it, and a check's work sent ahead is taken soon after
    from templatecheck.checks import REGISTRY

    rank = {name: i for i, name in enumerate(REGISTRY)}
    files: dict[str, int] = {}
    for item in kept:
        files[item.path.name] = min(
            files.get(item.path.name, len(rank)), rank.get(_check_name(item), len(rank))
        )
    order: dict[tuple[str, str | None], int] = {}
    for item in kept:
        order.setdefault(_target(item), len(order))
    items[:] = sorted(kept, key=lambda i: (order[_target(i)], files[i.path.name]))


def pytest_collection_finish(session: pytest.Session) -> None:
    """The checks the run runs, once every plugin has deselected its items (``--lf``, ``--sw`` included): work
    a check sends ahead is sent only for those."""
    catalog = session.config.stash.get(CATALOG, None)
    if catalog is not None:
        catalog.planned = frozenset(_check_name(i) for i in session.items)


def _check_name(item: pytest.Item) -> str:
    """The check a suite item runs: its test function's name without ``test_``."""
    return str(getattr(item, "originalname", item.name)).removeprefix("test_")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Keep the items that share work on one worker (see :func:`~templatecheck.suite.model_scheduler`)."""
    catalog = config.stash.get(CATALOG, None)
    return model_scheduler(config, log) if catalog is not None and catalog.refs else None


def _target(item: pytest.Item) -> tuple[str, str | None]:
    """The (model source, template) a suite item tests; the template is ``None`` for a model that did not load."""
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("tc") if callspec is not None else None
    return target if isinstance(target, tuple) else ("", "")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tc" not in metafunc.fixturenames:
        return
    catalog = metafunc.config.stash.get(CATALOG, None)
    if catalog is None:  # the suite's files collected without --model
        return metafunc.parametrize("tc", [pytest.param(None, marks=pytest.mark.skip("no --model given"))])
    mark = getattr(pytest.mark, MARKER)
    params = [pytest.param(target, id=name, marks=mark) for target, name in catalog.targets()]
    metafunc.parametrize("tc", params, indirect=True)


def options_from(config: pytest.Config) -> Options:
    """The check settings of this run, from the command line (parsed and checked once)."""
    if OPTIONS not in config.stash:
        from templatecheck.settings import options

        given = {k.removeprefix(PREFIX): v for k, v in vars(config.option).items() if k.startswith(PREFIX)}
        config.stash[OPTIONS] = options(given)
    return config.stash[OPTIONS]


@dataclass(frozen=True)
class CheckRunner:
    """What a suite test holds: runs one check on its (model, template) and turns the result into an outcome."""

    request: pytest.FixtureRequest
    model: Model
    template: str

    def run(self, check: Check) -> CheckResult:
        config = self.request.config
        if check.layer is Layer.GENERATION and options_from(config).generate:
            try:
                _fetch_weights(config, self.model)
            except TemplatecheckError as error:
                pytest.fail(str(error), pytrace=False)
        result = config.stash[CATALOG].run(check, self.model, self.template)
        _record(self.request, result)
        if option(config, "update_baseline") and result.outcome in (Outcome.FAILED, Outcome.WARNING):
            return result  # its findings are written to the baseline at the end of the run
        if result.outcome is Outcome.ERROR:
            pytest.fail(result.message, pytrace=False)
        strict = option(config, "strict_checks")
        if result.outcome is Outcome.FAILED or (strict and result.outcome is Outcome.WARNING):
            pytest.fail(result.message + config.stash[CATALOG].accept_hint(), pytrace=False)
        if result.outcome is Outcome.WARNING:
            from templatecheck.session import warning_line

            warnings.warn(TemplatecheckWarning(warning_line(result)), stacklevel=2)
        if result.outcome is Outcome.SKIPPED:
            pytest.skip(result.message)
        return result


def _fetch_weights(config: pytest.Config, model: Model) -> None:
    """Download a Hub model's weights (once) with output capture off, so that the progress bars show."""
    from templatecheck.model import weights_directory

    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        weights_directory(model)


def _record(request: pytest.FixtureRequest, result: CheckResult) -> None:  # with its template's report facts
    facts = request.config.stash[CATALOG].facts_about(result.source, result.template)
    request.node.user_properties += [(_PROPERTY, json.dumps(result.to_json())), (_FACTS, json.dumps(facts))]


@pytest.fixture
def tc(request: pytest.FixtureRequest) -> CheckRunner:
    """The (model, template) under test, as a runner of checks; a model that did not load fails here, once."""
    from templatecheck.checks import REGISTRY

    ref, template = request.param
    catalog = request.config.stash[CATALOG]
    model = catalog.get(ref)
    if isinstance(model, TemplatecheckError):
        check = REGISTRY.get(request.function.__name__.removeprefix("test_")) or _pins_check(request)
        _record(request, catalog.load_error(ref, check))
        pytest.fail(str(model), pytrace=False)
    assert template is not None
    return CheckRunner(request, model, template)


@pytest.fixture
def pin_check(request: pytest.FixtureRequest) -> Check:
    """``test_pins``' check: compare the renderings with the pins in ``--tc-pin-dir`` (or write them)."""
    if option(request.config, "pin_dir") is None:
        pytest.skip("no --tc-pin-dir given (pinning compares each template's renderings with golden files)")
    return _pins_check(request)


def _pins_check(request: pytest.FixtureRequest) -> Check:
    root, update = Path(option(request.config, "pin_dir") or "."), bool(option(request.config, "update_pins"))
    written = request.node.user_properties.append  # each path written, as (_PINNED, path)
    return request.config.stash[CATALOG].pins_check(root, update, lambda path: written((_PINNED, str(path))))


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
            elif key == _FACTS:
                self.config.stash[CATALOG].record_all(json.loads(str(value)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    catalog = config.stash.get(CATALOG, None)
    if catalog is not None and hasattr(config, "workerinput"):  # an xdist worker, which exits next
        catalog.exiting()
    if catalog is None or hasattr(config, "workerinput"):  # the controller reports
        return
    from templatecheck.session import report_path, settings

    results = config.stash[RESULTS]
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    if catalog.baseline is not None and option(config, "update_baseline") and not interrupted:
        config.stash[BASELINE_WRITTEN] = catalog.rewrite_baseline(results)
    strict, baseline = option(config, "strict_checks"), option(config, "baseline")
    recorded = settings(options_from(config), strict=strict, baseline=baseline)
    paths = (report_path(option(config, name), interrupted) for name in ("report_json", "report_md"))
    catalog.write_reports(results, {**recorded, "interrupted": interrupted}, *paths)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if written := sorted(config.stash.get(PINNED, []).copy()):
        terminalreporter.write_sep("=", f"templatecheck pins: {len(written)} files written or removed")
        terminalreporter.write_line("\n".join(written))
    results, catalog = config.stash.get(RESULTS, []), config.stash.get(CATALOG, None)
    if not results or catalog is None:
        return
    terminalreporter.write_sep("=", "templatecheck summary")
    for line in catalog.summary(results, config.stash.get(BASELINE_WRITTEN, None)):
        terminalreporter.write_line(line)
    for name, label in (("report_json", "JSON report"), ("report_md", "Markdown report")):
        if option(config, name):
            terminalreporter.write_line(f"{label}: {option(config, name)}")
