"""One run of the suite as a library object: the settings, the models, and checks run to results.

A :class:`Session` owns the complete :class:`~templatecheck.options.Options` of a run, the models it tests
(each loaded once per process; a model that fails to load keeps its error), the baseline of accepted
findings, and the facts the reports need (capabilities, reference choices, the settings that change a
verdict). The pytest plugin, the CLI and other tools drive it; it never imports pytest.
"""

from __future__ import annotations

import shlex
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from templatecheck.errors import TemplatecheckError
from templatecheck.options import Options
from templatecheck.result import CheckResult, Finding, Outcome

if TYPE_CHECKING:
    from templatecheck.baseline import Baseline
    from templatecheck.checks import Check
    from templatecheck.model import Model, Subject

#: The template (and source) under which :attr:`Session.facts` keeps the facts of a whole model (of the run).
_RUN = ""
#: The files that mark a folder as a model directory for ``--tc-models-from``.
MODEL_MARKERS = ("tokenizer_config.json", "chat_template.jinja")


@dataclass
class Session:
    """The models of one run and how checks run on them."""

    refs: list[str]
    options: Options = field(default_factory=Options)
    chat_template: str | None = None
    render_timeout: float = 2.0
    baseline: Baseline | None = None
    loaded: dict[str, Model | TemplatecheckError] = field(default_factory=dict)
    #: Load each model's tokenizer with the model (else on first use: under pytest-xdist, each worker loads
    #: only its models' tokenizers; its files are still checked at once).
    eager: bool = True
    #: Whether the items record each template's capabilities table (the Markdown report shows it).
    tables: bool = False
    #: The report facts that items recorded (:meth:`facts_of`), by ``(source, template, name)``: under
    #: pytest-xdist the workers that ran the checks send them, so the controller computes nothing at the end.
    facts: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    #: The results of checks by model, check and :attr:`~templatecheck.model.Template.key`: a template with
    #: the key of one checked before (a folder of fine-tunes' templates holds many copies of one) gets its
    #: results under its own name, unless the check's findings name the template (:attr:`Check.named`).
    #: Kept only for the keys that more than one template of the model has.
    results: dict[tuple[str, str, tuple[str, str]], CheckResult] = field(default_factory=dict)
    #: The names of the checks this run runs (``None``: any): work a check sends ahead is sent only for
    #: those (see :func:`~templatecheck.checks.base.ahead_of`).
    planned: frozenset[str] | None = None

    def __post_init__(self) -> None:
        _exit_without_collecting()

    def exiting(self) -> None:
        """The process ends after this run (a pytest-xdist worker once its session finished): freeze what is
        alive (:func:`gc.freeze`), so that the garbage collections pytest runs at its cleanup and the interpreter
        runs at exit skip the heap of the run (about a second of CPU each, on every worker)."""
        import gc

        gc.freeze()

    def get(self, ref: str) -> Model | TemplatecheckError:
        """The model ``ref`` names, loaded on first use (its templates and its tokenizer), or the error that
        stopped it loading: a missing or broken file is one error for the model, not one per check."""
        if ref not in self.loaded:
            from templatecheck.model import check_tokenizer_files, load_model
            from templatecheck.render import Limits

            try:
                model = load_model(
                    ref, chat_template=self.chat_template, limits=Limits(seconds=self.render_timeout)
                )
                if self.eager:
                    _ = model.tokenizer
                elif model.gguf is None:  # a GGUF's metadata is checked as it is read
                    check_tokenizer_files(model.directory, ref)
                self.loaded[ref] = model
            except TemplatecheckError as error:
                self.loaded[ref] = error
        return self.loaded[ref]

    def require_one(self) -> None:
        """Raise when no model of the run loads (then there is nothing to test: a usage error), naming each
        model's error; stops at the first model that loads."""
        errors = []
        for ref in self.refs:
            model = self.get(ref)
            if not isinstance(model, TemplatecheckError):
                return
            errors.append(str(model))
        if errors:
            raise TemplatecheckError("no model of the run loads:\n  " + "\n  ".join(errors))

    def models(self) -> Iterator[tuple[str, Model]]:
        """``(ref, model)`` for every model that loads."""
        for ref in self.refs:
            model = self.get(ref)
            if not isinstance(model, TemplatecheckError):
                yield ref, model

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

    def run(self, check: Check, model: Model, template: str) -> CheckResult:
        """``check`` on one template, to a result: errors of the model's files and of ours included, the
        baseline applied."""
        from templatecheck.model import Subject

        subject = Subject(model, model.templates[template], self.options)
        shared = _shared(check, model, subject.template.key)
        try:
            if shared in self.results:
                result = replace(self.results[shared], template=template)
            else:
                self._send_ahead(check, subject)
                result = check(subject)
            if result.outcome is not Outcome.ERROR:
                if shared is not None:
                    self.results.setdefault(shared, result)
                self.record(model.ref.text, template, self._facts_of(check, model, template))
        except TemplatecheckError as error:
            result = error_result(model.ref.text, model.name, template, check, str(error))
        except Exception as error:  # an error of ours: an `error` result in every report, never a lost item
            where = traceback.extract_tb(error.__traceback__)[-1]
            message = (
                f"templatecheck error in check {check.name}: {type(error).__name__}: {error} "
                f"({Path(where.filename).name}:{where.lineno}); please report it with this message"
            )
            result = error_result(model.ref.text, model.name, template, check, message)
        return self.baseline.accept(result) if self.baseline is not None else result

    def _send_ahead(self, check: Check, subject: Subject) -> None:
        """Start the work other checks send ahead when ``check`` starts (for those this run runs on the
        template, whose results it does not share from a copy); a start that fails leaves that check to make
        its work itself."""
        from templatecheck.checks.base import AHEAD, REGISTRY
        from templatecheck.gates import gate

        for name, start in AHEAD.get(check.name, ()):
            other = REGISTRY[name]
            if self.planned is not None and name not in self.planned:
                continue
            if _shared(other, subject.model, subject.template.key) in self.results:
                continue
            try:
                if gate(subject, other.needs) is None:
                    start(subject)
            except Exception:  # the check makes the work itself, and reports what fails there
                continue

    def _facts_of(self, check: Check, model: Model, template: str) -> dict[str, Any]:
        """The report facts that running ``check`` on ``template`` gives (JSON values), computed where the
        check ran: the model's reference choice with the ``reference`` check (a fact of the model, recorded
        here), the template's capabilities table with ``renders`` when :attr:`tables` is set. Both are cached
        by the checks that use them."""
        facts: dict[str, Any] = {}
        if (_RUN, _RUN, "check order") not in self.facts:
            from templatecheck.checks import REGISTRY

            self.record(_RUN, _RUN, {"check order": list(REGISTRY)})
        if check.name == "reference" and (model.ref.text, _RUN, "reference") not in self.facts:
            self.record(model.ref.text, _RUN, {"reference": _reference_note(model, self.options)})
        if check.name == "renders" and self.tables:
            table = _capabilities_table(model, template, self.options)
            if table is not None:
                facts["capabilities"] = table
        return facts

    def record(self, source: str, template: str, facts: dict[str, Any]) -> None:
        """Keep report facts (of this process's checks, or sent by an xdist worker)."""
        for name, value in facts.items():
            self.facts[(source, template, name)] = value

    def facts_about(self, source: str, template: str) -> list[list[Any]]:
        """The report facts known of one template, of its model and of the run, as JSON (what an item sends to
        the controller of an xdist run: :meth:`record_all` reads it)."""
        keys = ((source, template), (source, _RUN), (_RUN, _RUN))
        return [[s, t, n, v] for (s, t, n), v in self.facts.items() if (s, t) in keys]

    def record_all(self, facts: list[list[Any]]) -> None:
        """Keep the facts :meth:`facts_about` gave (in an xdist worker)."""
        for source, template, name, value in facts:
            self.facts[(str(source), str(template), str(name))] = value

    def check_order(self) -> list[str]:
        """The names of the checks in the order of the reports: as the items recorded it (so the controller of
        an xdist run need not import the checks), else from the registry."""
        recorded = self.facts.get((_RUN, _RUN, "check order"))
        if recorded is None:
            from templatecheck.checks import REGISTRY

            return list(REGISTRY)
        return [str(name) for name in recorded]

    def capabilities(self) -> dict[tuple[str, str], list[tuple[str, bool]]]:
        """``(source, template) -> capabilities table`` for every loaded model: as the items recorded it, else
        (a ``renders`` item deselected) probed here."""
        tables = {}
        for ref, model in self.models():
            for name in model.templates:
                table = self.facts.get((ref, name, "capabilities"))
                if table is None:
                    table = _capabilities_table(model, name, self.options)
                if table is not None:
                    tables[(ref, name)] = [(str(label), bool(value)) for label, value in table]
        return tables

    def reference_notes(self, results: list[CheckResult]) -> dict[str, str]:
        """``source -> "reference: FAMILY (how)"`` for the models whose reference check ran (as its item
        recorded it)."""
        sources = {r.source for r in results if r.check == "reference"}
        notes = {}
        for ref, model in self.models():
            if ref in sources:
                recorded = self.facts.get((ref, _RUN, "reference"))
                notes[ref] = str(recorded) if recorded is not None else _reference_note(model, self.options)
        return notes

    def load_error(self, ref: str, check: Check) -> CheckResult:
        """The result that says once that model ``ref`` did not load (on the item of ``check`` carrying it)."""
        from templatecheck.model import short_name

        return error_result(ref, short_name(ref), "", check, str(self.get(ref)))

    def accept_hint(self) -> str:
        """The line a failure adds in a run with a baseline: the command that accepts the run's findings."""
        if self.baseline is None:
            return ""
        return f"\n  not in the baseline; to accept it: {accept_command(self.refs, str(self.baseline.path))}"

    def rewrite_baseline(self, results: list[CheckResult]) -> str:
        """Write the baseline file: this run's findings, plus the entries of checks that did not run here (a
        ``-k`` selection keeps what it did not select); what was written, for the summary."""
        assert self.baseline is not None
        entries = self.baseline.rewrite(results)
        return f"{self.baseline.path} ({len(entries)} accepted findings)"

    def write_reports(
        self,
        results: list[CheckResult],
        recorded: dict[str, Any],
        json_path: Path | None,
        md_path: Path | None,
    ) -> None:
        """The JSON report (with ``recorded`` settings and the provenance) and the Markdown report, atomically;
        an interrupted run (``recorded["interrupted"]``) says it is partial."""
        from templatecheck.report import write_atomically, write_json_report

        if json_path is not None:
            write_json_report(json_path, results, recorded, provenance(self))
        if md_path is not None:
            from templatecheck.markdown import markdown_report

            notes = self.reference_notes(results)
            text = markdown_report(results, self.capabilities(), notes, self.refs, self.check_order())
            partial = (
                "> **Interrupted run**: this report is partial.\n\n" if recorded.get("interrupted") else ""
            )
            write_atomically(md_path, partial + text)

    def summary(self, results: list[CheckResult], rewritten: str | None) -> list[str]:
        """The terminal summary: per model its table and findings, then what became of the baseline."""
        from templatecheck.report import summary_lines

        lines = summary_lines(results, self.reference_notes(results), self.refs, self.check_order())
        if rewritten:
            return [*lines, f"baseline written: {rewritten}"]
        stale = self.baseline.stale(results) if self.baseline is not None else []
        if stale and self.baseline is not None:
            command = accept_command(self.refs, str(self.baseline.path))
            lines.append(
                f"baseline: {len(stale)} accepted findings no longer occur (stale); rewrite with "
                f"--tc-update-baseline: {command}"
            )
            lines += [f"  stale: {entry.model}:{entry.template} {entry.cause}" for entry in stale]
        return lines

    def pins_check(self, root: Path, update: bool, written: Callable[[Path], None]) -> Check:
        """``test_pins``' check: compare each template's renderings and token ids with the pins under ``root``,
        or (``update``) write them, telling ``written`` each path written or removed."""
        from templatecheck import pins
        from templatecheck.checks import Check
        from templatecheck.result import Layer

        def run(subject: Subject) -> list[Finding]:
            """A rendering or token ids that differ from the pinned ones: any change of behaviour of a template
            (a publisher's edit, a transformers or tokenizer upgrade) since the pins were written."""
            if not update:
                return pins.compare(subject, root, self.update_pins_command(subject.model.ref.text, root))
            for path in pins.update(subject, root):
                written(path)
            return []

        return Check("pins", Layer.TEMPLATE, run)

    def update_pins_command(self, source: str, root: Path) -> str:
        """The command that rewrites the pins of model ``source`` under ``root``."""
        words = ["pytest", "--model", source, "--tc-pin-dir", str(root), "--tc-update-pins"]
        chosen = ["--tc-chat-template", self.chat_template] if self.chat_template else []
        return shlex.join([*words, *chosen])


@lru_cache(maxsize=1)
def _exit_without_collecting() -> None:
    """Once per process: at the interpreter's exit, skip the last garbage collection over what the run loaded
    (tokenizers, transformers, torch: about 3 s of CPU, paid again by every pytest-xdist worker). The objects
    alive then are frozen (:func:`gc.freeze`), which exempts them from collection; the exit frees the memory."""
    import atexit
    import gc

    atexit.register(gc.freeze)


def _reference_note(model: Model, options: Options) -> str:
    from templatecheck.formats.detect import choose

    return "reference: " + choose(model, options).short()


def _capabilities_table(model: Model, template: str, options: Options) -> list[tuple[str, bool]] | None:
    """The capabilities table of one template (``None`` when its probes cannot run)."""
    from templatecheck.checks.roles import survey
    from templatecheck.model import Subject

    try:
        return survey(Subject(model, model.templates[template], options)).table()
    except TemplatecheckError:
        return None


def error_result(source: str, name: str, template: str, check: Check, message: str) -> CheckResult:
    """The result of a check that could not run: one ``error`` finding."""
    return CheckResult(
        name, source, template, check.name, check.layer, Outcome.ERROR, (Finding(Outcome.ERROR, message),)
    )


def warning_line(result: CheckResult) -> str:
    """A warning result in one line: the causes of its unaccepted warnings and the first one's message."""
    from templatecheck.text import first_line

    first = [f for f in result.findings if f.outcome is Outcome.WARNING and not f.accepted]
    causes = ", ".join(dict.fromkeys(f.cause for f in first))
    return f"{causes}: {first_line(first[0].message)}"


def report_path(given: str | None, interrupted: bool) -> Path | None:
    """Where a report goes: the path given, or beside it (``NAME.interrupted.EXT``) for an interrupted run, so
    a partial report never replaces the last complete one."""
    if not given:
        return None
    path = Path(given)
    return path.with_name(f"{path.stem}.interrupted{path.suffix}") if interrupted else path


def models_from(directories: list[str]) -> list[str]:
    """The model directories directly under each of ``directories``, sorted by name."""
    found = []
    for name in directories:
        directory = Path(name).expanduser()
        if not directory.is_dir():
            raise TemplatecheckError(
                f"--tc-models-from {name!r}: no such directory; pass a folder of model directories"
            )
        models = [
            str(sub)
            for sub in sorted(directory.iterdir())
            if sub.is_dir() and not sub.is_symlink() and any((sub / f).is_file() for f in MODEL_MARKERS)
        ]
        if not models:
            raise TemplatecheckError(
                f"--tc-models-from {name!r}: no subdirectory holds a tokenizer_config.json or chat_template.jinja; "
                "pass the folder that contains the model directories"
            )
        found += models
    return found


def read_baseline(name: str | None, update: bool) -> Baseline | None:
    """The ``--tc-baseline`` file, read once; ``None`` without the option."""
    if name is None:
        if update:
            raise TemplatecheckError(
                "--tc-update-baseline writes the file of --tc-baseline FILE: pass --tc-baseline too"
            )
        return None
    from templatecheck import baseline

    path = Path(name).expanduser()
    if not path.parent.is_dir():
        raise TemplatecheckError(
            f"--tc-baseline {name}: the folder {path.parent} does not exist; create it first"
        )
    return baseline.read(path)


def accept_command(models: list[str], baseline: str) -> str:
    """The command that accepts a run's findings into ``baseline``."""
    words = [w for m in models for w in ("--model", m)]
    return shlex.join(["pytest", *words, "--tc-baseline", baseline, "--tc-update-baseline"])


def provenance(session: Session | None) -> dict[str, Any]:
    """What a report's verdicts depend on besides the options: the versions of templatecheck and of the
    libraries that render and tokenize, and per model its directory's revision (for a Hub model) and each
    template's sha256, as evaluation harnesses record them."""
    import hashlib
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in ("templatecheck", "transformers", "tokenizers", "jinja2", "huggingface-hub"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    models: dict[str, Any] = {}
    for ref, model in session.models() if session is not None else ():
        revision = model.directory.name if model.ref.repo_id is not None else None
        models[ref] = {
            "revision": model.ref.revision,
            "resolved_revision": revision,
            "templates": {
                name: hashlib.sha256(t.source.encode("utf-8", "surrogatepass")).hexdigest()
                for name, t in model.templates.items()
            },
        }
    return {"versions": versions, "models": models}


def settings(options: Options, *, strict: bool, baseline: str | None) -> dict[str, Any]:
    """The options that change a verdict, as the reports record them."""
    return {
        "examples": options.examples,
        "reference": options.reference,
        "consumers": list(options.consumers),
        "template_vars": options.template_vars,
        "strict_checks": strict,
        "baseline": baseline,
        "generate": options.generate,
    }


__all__ = [
    "Session",
    "accept_command",
    "error_result",
    "models_from",
    "provenance",
    "read_baseline",
    "report_path",
    "settings",
    "warning_line",
]


def _has_copies(model: Model, key: tuple[str, str]) -> bool:
    """Whether another template of ``model`` has ``key`` (counted once per model)."""
    counted = model.cache.get(("template keys",))
    if counted is None:
        counted = model.cache[("template keys",)] = Counter(t.key for t in model.templates.values())
    return bool(counted[key] > 1)


def _shared(check: Check, model: Model, key: tuple[str, str]) -> tuple[str, str, tuple[str, str]] | None:
    """Where :attr:`Session.results` keeps the result of ``check`` that the templates of ``key`` share; ``None``
    when they share none (a named check, or a key no other template of the model has)."""
    return None if check.named or not _has_copies(model, key) else (model.ref.text, check.name, key)
