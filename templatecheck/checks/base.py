"""What a check is (:class:`Check`), the decorator that registers one (:func:`check`), and the registry.

A leaf below the layer modules: they import :func:`check` from here, and :mod:`templatecheck.checks` imports
them (which fills :data:`REGISTRY`, in layer order) and re-exports what is here. The rules
:meth:`Check.findings` applies are described in :mod:`templatecheck.checks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from templatecheck.causes import CAUSES, Cause
from templatecheck.gates import gate
from templatecheck.model import Subject
from templatecheck.result import CheckResult, Finding, Layer, Outcome, skipped

#: What a check needs of the template before it can say anything: nothing, that it parses, or that a plain
#: conversation renders.
NEEDS = ("nothing", "parses", "renders")


@dataclass(frozen=True)
class Check:
    name: str
    layer: Layer
    run: Callable[[Subject], list[Finding]]
    needs: str = "renders"
    #: Whether the findings depend on the template's name, not only on its :attr:`~Template.key` (a GGUF's
    #: template is compared with the original's of the same name; generations are labelled with it): the
    #: results of the other checks are shared by the templates of one key (:meth:`Session.run`).
    named: bool = False

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()

    @property
    def causes(self) -> list[str]:
        """The keys of the causes this check owns."""
        return [key for key in CAUSES if key.split(".", 1)[0] == self.name]

    def findings(self, subject: Subject) -> list[Finding]:
        """The check's findings on ``subject``, after the shared rules (see :mod:`templatecheck.checks`)."""
        blocked = gate(subject, self.needs)
        found = (
            [skipped(blocked)]
            if blocked is not None
            else [self._settle(f, subject) for f in self.run(subject)]
        )
        subject.model.cache.setdefault(_reports_key(self, subject), {(f.cause, f.outcome) for f in found})
        return found

    def _settle(self, finding: Finding, subject: Subject) -> Finding:
        if finding.outcome in (Outcome.PASSED, Outcome.SKIPPED, Outcome.ERROR):
            return finding
        if not finding.cause:
            finding = replace(finding, cause=f"{self.name}.unclassified")
        owner = finding.cause.split(".", 1)[0]
        if owner != self.name:
            return Finding(
                Outcome.PASSED,
                f"also observed {finding.cause} (reported by `{owner}`): {finding.message.strip()}",
                finding.cause,
                finding.fix,
            )
        rule = CAUSES.get(finding.cause)
        if rule is not None and rule.hazard_of is not None and rule.hazard_of in subject.options.consumers:
            return replace(
                finding,
                outcome=Outcome.FAILED,
                message=f"{finding.message}\n  (fails: --tc-consumer {rule.hazard_of})",
            )
        return finding

    def __call__(self, subject: Subject) -> CheckResult:
        return CheckResult.from_findings(
            model=subject.model.name,
            source=subject.model.ref.text,
            template=subject.template.name,
            check=self.name,
            layer=self.layer,
            findings=self.findings(subject),
        )


#: Every check by name, in the order the suite runs them.
REGISTRY: dict[str, Check] = {}
#: Work of a check that starts when another check does, by the name of that other check: each entry the name
#: of the check whose work it is, and what starts it (see :func:`ahead_of`).
AHEAD: dict[str, list[tuple[str, Callable[[Subject], None]]]] = {}


def ahead_of(at: str, of: Check, start: Callable[[Subject], None]) -> None:
    """Start ``start(subject)`` when check ``at`` starts on a template that check ``of`` will run on: work of
    ``of`` in another process (an engine's renders) that is made while ``at`` waits on its own, and that
    ``of`` takes when it comes to it. What ``of`` finds does not depend on it: a check that finds no such work
    makes it itself."""
    AHEAD.setdefault(at, []).append((of.name, start))


def check(
    layer: Layer, *, needs: str = "renders", named: bool = False
) -> Callable[[Callable[[Subject], list[Finding]]], Check]:
    """Register a check function under its own name; ``needs`` is one of :data:`NEEDS`, ``named`` as
    :attr:`Check.named`."""
    assert needs in NEEDS, needs

    def register(fn: Callable[[Subject], list[Finding]]) -> Check:
        made = Check(fn.__name__, layer, fn, needs, named)
        REGISTRY[made.name] = made
        return made

    return register


def owner_reports(subject: Subject, cause: Cause) -> bool:
    """Whether the check that owns ``cause`` reports it on ``subject``, with its severity: what the check
    reported when it ran on the template, or it runs now (renders and probes are shared, so asking costs no
    render the suite does not make anyway)."""
    owner = REGISTRY[cause.check]
    key = _reports_key(owner, subject)
    if key not in subject.model.cache:
        owner.findings(subject)  # keeps what it reports
    reported: set[tuple[str, Outcome]] = subject.model.cache[key]
    return (cause.key, cause.severity) in reported


def _reports_key(check: Check, subject: Subject) -> tuple[str, ...]:
    """Where the causes a check reported on a template are kept (by :meth:`Check.findings`): under the
    template's key, and its name for a :attr:`~Check.named` check."""
    name = subject.template.name if check.named else ""
    return ("reports", check.name, *subject.template.key, name, repr(subject.options))
