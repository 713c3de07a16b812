"""The pytest plugin: options, parametrization over models and templates, outcomes and reports.

Imported by pytest on every run of every project where templatecheck is installed, so it imports nothing
heavy (models, tokenizers and transformers load only in a ``--model`` run) and every option but ``--model``
carries the ``--tc-`` prefix, so that no other plugin or conftest collides with it. The work is the library
:class:`~templatecheck.session.Session`'s; this module maps it onto pytest.
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
    from templatecheck.model import Model
    from templatecheck.session import Session

SUITE = Path(__file__).parent / "suite"
MARKER = "templatecheck"
_PROPERTY = "templatecheck"
_PINNED = "templatecheck-pinned"
PREFIX = "tc_"


class TemplatecheckWarning(UserWarning):
    """A check found something legal but risky (shown in pytest's warnings summary)."""


CATALOG: pytest.StashKey[Session] = pytest.StashKey()
OPTIONS = pytest.StashKey[Options]()
BASELINE: pytest.StashKey[Baseline | None] = pytest.StashKey()
RESULTS = pytest.StashKey[list[CheckResult]]()
PINNED = pytest.StashKey[list[str]]()
SELECTED = pytest.StashKey[list[str]]()
BASELINE_WRITTEN = pytest.StashKey[str]()

#: Every option but ``--model``: (name after ``--tc-``, argparse settings). Help texts say what the option does,
#: then its default.
_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("chat-template", {"metavar": "NAME_OR_FILE", "help": "test only this named template of each model, or a "
     "candidate template file (or a folder of them: *.jinja and template *.json files) with its tokenizer"}),
    ("report-json", {"metavar": "PATH", "help": "write every check result of the run to PATH as JSON"}),
    ("report-md", {"metavar": "PATH", "help": "write a Markdown report to PATH (capabilities, checks and "
     "findings per model), for a model card or a pull-request comment"}),
    ("models-from", {"action": "append", "default": [], "metavar": "DIR", "help": "add every subdirectory of "
     "DIR holding a tokenizer_config.json or chat_template.jinja as a --model; repeatable"}),
    ("pin-dir", {"metavar": "DIR", "help": "compare each template's renderings and token ids of a fixed probe "
     "set with the pins in DIR (test_pins); a missing or different pin fails"}),
    ("update-pins", {"action": "store_true", "help": "with --tc-pin-dir: write the pins instead of comparing"}),
    ("strict-checks", {"action": "store_true", "help": "treat warnings of the checks as failures"}),
    ("examples", {"type": int, "default": Options.examples, "metavar": "N",
     "help": "hypothesis conversations per property check (default: 100, hypothesis' own budget)"}),
    ("render-timeout", {"type": float, "default": 2.0, "metavar": "SECONDS",
     "help": "wall-time bound of one template render; a render past it is a finding (default: 2)"}),
    ("reference", {"metavar": "FAMILY", "help": "compare templates with this reference format family instead "
     "of the detected one; 'none' skips the comparison (families: see README)"}),
    ("consumer", {"action": "append", "default": [], "metavar": "NAME", "help": "make this consumer path's "
     "hazards fail instead of warn: apply_chat_template, server or naive; repeatable"}),
    ("template-var", {"action": "append", "default": [], "metavar": "NAME=VALUE", "help": "pass a template "
     "variable to every render (date_string, enable_thinking, ...); VALUE is JSON when it parses; repeatable"}),
    ("baseline", {"metavar": "FILE", "help": "accept the findings FILE lists (by model, template and cause): "
     "they are reported, not failed; a new finding still fails"}),
    ("update-baseline", {"action": "store_true", "help": "with --tc-baseline: write every failed and warning "
     "finding of the run to FILE instead of failing"}),
    ("generate", {"action": "store_true", "help": "run the generation layer: load the weights (needs torch) "
     "and prompt the model with the probe set"}),
    ("device", {"metavar": "DEVICE", "help": "torch device of the generation layer: cpu, cuda, cuda:N, mps "
     "(default: CUDA when available, else CPU)"}),
    ("max-new-tokens", {"type": int, "default": Options.max_new_tokens, "metavar": "N", "help": "token budget "
     f"of each greedy reply of the generation layer (default: {Options.max_new_tokens}; tool calls get 64)"}),
    ("probe-file", {"metavar": "PATH", "help": "JSON-lines probes added to the generation layer's set"}),
)  # fmt: skip


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("templatecheck", "templatecheck: chat-template conformance")
    group.addoption("--model", action="append", default=[], metavar="PATH_OR_ID", help="run the conformance "
                    "suite (only it) on a model directory or Hub id ('owner/name[@revision]'); repeatable; a "
                    "project with its own --model disables this plugin with -p no:templatecheck")  # fmt: skip
    for name, settings in _OPTIONS:
        group.addoption("--tc-" + name, **settings)


def option(config: pytest.Config, name: str) -> Any:
    """The value of ``--tc-NAME`` (``name`` with underscores: ``report_json``)."""
    return config.getoption(PREFIX + name)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Keep the rootdir (and with it ``.pytest_cache`` and the paths pytest prints) and the ini-file out of the
    model directories.

    pytest chooses both before it loads any plugin, from the free arguments of the command line, and takes the
    value of ``--model DIR`` for one: the rootdir becomes the model directory or a folder above it, and a
    ``pyproject.toml`` above the model (another project's) configures the run. No hook comes earlier than this
    one and pytest has no public setter, so the choice is corrected here, on the private attributes pytest
    keeps it in (each only where it exists)."""
    namespace = early_config.known_args_namespace
    given = [*getattr(namespace, "model", []), *getattr(namespace, PREFIX + "models_from", [])]
    if not given:
        return
    models = [p.resolve() for p in (Path(g).expanduser() for g in given) if p.is_dir()]
    here = early_config.invocation_params.dir.resolve()
    inipath = early_config.inipath
    if inipath is not None and not namespace.inifilename and not _holds(inipath.parent, here):
        for name, empty in (("_inipath", None), ("_inicfg", {}), ("_inicache", {})):
            if hasattr(early_config, name):
                setattr(early_config, name, empty)  # another project's configuration, found above a model
        inipath = None
    old = early_config.rootpath
    root = Path(namespace.rootdir) if namespace.rootdir else _run_root(old, inipath, here, models)
    if root == SUITE:  # started inside a model directory: no cache, rather than one in the model
        for plugin in ("cacheprovider", "stepwise"):  # as -p no:cacheprovider does
            early_config.pluginmanager.set_blocked(plugin)
    if root != old and hasattr(early_config, "_rootpath"):
        early_config._rootpath = root
        if namespace.confcutdir == str(old):
            namespace.confcutdir = str(root)


def _holds(folder: Path, path: Path) -> bool:
    return folder == path or folder in path.parents


def _run_root(root: Path, inipath: Path | None, here: Path, models: list[Path]) -> Path:
    """pytest's rootdir when it is the working directory or the project folder above it (it holds the ini-file
    or a setup.py); else the working directory; the suite's own folder when the working directory is inside a
    model directory."""
    if any(_holds(m, here) for m in models):
        return SUITE
    project = (inipath is not None and inipath.parent == root) or (root / "setup.py").is_file()
    inside = any(_holds(m, root) for m in models)
    return root if root == here or (root in here.parents and project and not inside) else here


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a conformance check of templatecheck (a --model run)")
    config.stash[RESULTS] = []
    config.stash[PINNED] = []
    config.pluginmanager.register(_ResultCollector(config), "templatecheck-results")
    from templatecheck.session import Session, models_from, read_baseline

    try:
        options_from(config)  # parsed and checked once, here, where a bad value is a usage error
        config.stash[BASELINE] = read_baseline(option(config, "baseline"), option(config, "update_baseline"))
        refs = [*config.getoption("model"), *models_from(option(config, "models_from"))]
        if not refs:
            return
        catalog = Session(
            refs, options_from(config), option(config, "chat_template"), option(config, "render_timeout"),
            config.stash[BASELINE],
        )  # fmt: skip
        catalog.require_one()
        if options_from(config).generate:
            from templatecheck.checks.generation import prepare

            prepare(options_from(config))
        chosen = config.args if config.args_source is pytest.Config.ArgsSource.ARGS else []
        config.stash[SELECTED] = [_suite_id(a, config.invocation_params.dir) for a in chosen]
    except TemplatecheckError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[CATALOG] = catalog
    config.args[:] = [str(SUITE)]  # a --model run collects the conformance suite and nothing else


def _suite_id(arg: str, here: Path) -> str:
    """A suite file or node id as the user gave it (``test_tokenizer.py::test_double_bos[m:default]``, or with
    the path of the installed suite), relative to the suite folder."""
    path, sep, rest = arg.partition("::")
    full = (here / path).resolve()
    if full == SUITE or SUITE in full.parents:
        return full.relative_to(SUITE).as_posix() + sep + rest
    if path and (SUITE / path).exists():
        return Path(path).as_posix() + sep + rest
    files = ", ".join(sorted(p.name for p in SUITE.glob("test_*.py")))
    raise TemplatecheckError(
        f"{arg!r}: a --model run collects only the conformance suite; name one of its files ({files}) or a "
        "node id it printed, or run your own tests without --model"
    )


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Select the suite files and node ids named on the command line (relative to the suite folder), and keep
    one item of each model that does not load (``test_renders`` when it is selected): its error is said once."""
    chosen = [s.removeprefix("./") for s in config.stash.get(SELECTED, [])]
    named = [i for i in items if not chosen or any(_names(s, i) for s in chosen)]
    carriers: dict[str, pytest.Item] = {}
    for item in named:
        ref, template = _target(item)
        if (
            ref is not None
            and template is None
            and (ref not in carriers or item.name.startswith("test_renders["))
        ):
            carriers[ref] = item
    carried = {id(i) for i in carriers.values()}
    kept = [i for i in named if _target(i)[1] is not None or id(i) in carried]
    if len(kept) < len(items):
        selected = {id(i) for i in named}
        config.hook.pytest_deselected(items=[i for i in items if id(i) not in selected])
        items[:] = kept  # the other items of a model that did not load say nothing new


def _names(chosen: str, item: pytest.Item) -> bool:
    """Whether a suite file or node id (relative to the suite folder) names ``item``."""
    if SUITE not in item.path.parents:
        return False
    key = f"{item.path.relative_to(SUITE).as_posix()}::{item.name}"
    return chosen in ("", ".") or key == chosen or key.startswith((chosen + "::", chosen + "["))


def _target(item: pytest.Item) -> tuple[str | None, str | None]:
    """The (model source, template) a suite item tests; the template is ``None`` for a model that did not load."""
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("tc") if callspec is not None else None
    return (target[0], target[1]) if isinstance(target, tuple) else (None, "")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tc" not in metafunc.fixturenames:
        return
    catalog = metafunc.config.stash.get(CATALOG, None)
    if catalog is None:
        metafunc.parametrize(
            "tc", [pytest.param(None, marks=pytest.mark.skip(reason="no --model given"))], indirect=True
        )
        return
    mark = getattr(pytest.mark, MARKER)
    params = [pytest.param(target, id=name, marks=mark) for target, name in catalog.targets()]
    metafunc.parametrize("tc", params, indirect=True)


def options_from(config: pytest.Config) -> Options:
    """The check settings of this run, from the command line (parsed and checked once)."""
    if OPTIONS not in config.stash:
        from templatecheck import settings

        values = {name.replace("-", "_"): option(config, name.replace("-", "_")) for name, _ in _OPTIONS}
        config.stash[OPTIONS] = settings.options(values)
    return config.stash[OPTIONS]


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
        if option(config, "update_baseline") and result.outcome in (Outcome.FAILED, Outcome.WARNING):
            return result  # its findings are written to the baseline at the end of the run
        if result.outcome is Outcome.ERROR:
            pytest.fail(result.message, pytrace=False)
        strict = option(config, "strict_checks")
        if result.outcome is Outcome.FAILED or (strict and result.outcome is Outcome.WARNING):
            pytest.fail(result.message + _accept_hint(config), pytrace=False)
        if result.outcome is Outcome.WARNING:
            from templatecheck.report import first_line

            first = [f for f in result.findings if f.outcome is Outcome.WARNING and not f.accepted]
            causes = ", ".join(dict.fromkeys(f.cause for f in first))
            warnings.warn(TemplatecheckWarning(f"{causes}: {first_line(first[0].message)}"), stacklevel=2)
        if result.outcome is Outcome.SKIPPED:
            pytest.skip(result.message)
        return result


def _accept_hint(config: pytest.Config) -> str:
    """The command that accepts the run's findings, for a run with ``--tc-baseline``."""
    if option(config, "baseline") is None:
        return ""
    from templatecheck.session import accept_command

    command = accept_command(config.getoption("model"), option(config, "baseline"))
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
    """The (model, template) under test, as a runner of checks; a model that did not load fails here, once."""
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
    """``test_pins``' check: compare the renderings with the pins in ``--tc-pin-dir`` (or write them)."""
    if option(request.config, "pin_dir") is None:
        pytest.skip("no --tc-pin-dir given (pinning compares each template's renderings with golden files)")
    return _pins_check(request)


def _pins_check(request: pytest.FixtureRequest) -> Check:
    config = request.config

    def written(path: Path) -> None:
        request.node.user_properties.append((_PINNED, str(path)))

    root = Path(option(config, "pin_dir") or ".")
    return config.stash[CATALOG].pins_check(root, bool(option(config, "update_pins")), written)


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


def _report_path(config: pytest.Config, name: str, interrupted: bool) -> Path | None:
    """Where a report goes: the path given, or beside it (``NAME.interrupted.EXT``) for an interrupted run,
    so a partial report never replaces the last complete one."""
    given = option(config, name)
    if not given or CATALOG not in config.stash or hasattr(config, "workerinput"):
        return None
    path = Path(given)
    return path.with_name(f"{path.stem}.interrupted{path.suffix}") if interrupted else path


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    catalog = config.stash.get(CATALOG, None)
    if catalog is None or hasattr(config, "workerinput"):
        return
    results = config.stash[RESULTS]
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    accepted = config.stash.get(BASELINE, None)
    if accepted is not None and option(config, "update_baseline") and not interrupted:
        # this run's findings, plus the entries of checks that did not run here (-k keeps what it skipped)
        entries = accepted.rewrite(results)
        config.stash[BASELINE_WRITTEN] = f"{accepted.path} ({len(entries)} accepted findings)"
    json_path = _report_path(config, "report_json", interrupted)
    if json_path is not None:
        from templatecheck.report import write_json_report
        from templatecheck.session import provenance, settings

        recorded = settings(options_from(config), strict=bool(option(config, "strict_checks")),
                            baseline=option(config, "baseline"))  # fmt: skip
        write_json_report(json_path, results, {**recorded, "interrupted": interrupted}, provenance(catalog))
    md_path = _report_path(config, "report_md", interrupted)
    if md_path is not None:
        from templatecheck.markdown import markdown_report
        from templatecheck.report import write_atomically

        text = markdown_report(
            results, catalog.capabilities(), catalog.reference_notes(results), catalog.refs
        )
        write_atomically(
            md_path, ("> **Interrupted run**: this report is partial.\n\n" if interrupted else "") + text
        )


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
    elif accepted is not None and (stale := accepted.stale(results)):
        terminalreporter.write_line(
            f"baseline: {len(stale)} accepted findings no longer occur (stale); rewrite with "
            f"--tc-update-baseline:{_accept_hint(config).split(':', 1)[1]}"
        )
        for entry in stale:
            terminalreporter.write_line(f"  stale: {entry.model}:{entry.template} {entry.cause}")
    for name, label in (("report_json", "JSON report"), ("report_md", "Markdown report")):
        if option(config, name):
            terminalreporter.write_line(f"{label}: {option(config, name)}")
