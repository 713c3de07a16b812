"""The checks, one module per layer. A check takes a :class:`~templatecheck.model.Subject` and returns
findings; it never asserts and never lets a template's exception escape.

Running a check (:meth:`Check.__call__`) applies the rules every check shares:

- **Gates.** A template that does not parse is one finding of ``renders``; every other check is skipped
  with that reason. A check that needs a rendering is skipped when no plain conversation renders.
- **One owner per cause.** A finding whose cause another check owns becomes a note of this check naming the
  owner (the owner reports it): one root cause fails once.
- **Consumer paths.** A hazard of a consumer path (:attr:`~templatecheck.causes.Cause.hazard_of`) fails when
  ``--tc-consumer`` names that path, and warns otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from templatecheck.causes import CAUSES
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

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()

    @property
    def causes(self) -> list[str]:
        """The keys of the causes this check owns."""
        return [key for key in CAUSES if key.split(".", 1)[0] == self.name]

    def findings(self, subject: Subject) -> list[Finding]:
        """The check's findings on ``subject``, after the shared rules (see the module docstring)."""
        from templatecheck.gates import gate

        blocked = gate(subject, self.needs)
        if blocked is not None:
            return [skipped(blocked)]
        return [self._settle(f, subject) for f in self.run(subject)]

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


def check(layer: Layer, *, needs: str = "renders") -> Callable[[Callable[[Subject], list[Finding]]], Check]:
    """Register a check function under its own name; ``needs`` is one of :data:`NEEDS`."""
    assert needs in NEEDS, needs

    def register(fn: Callable[[Subject], list[Finding]]) -> Check:
        made = Check(fn.__name__, layer, fn, needs)
        REGISTRY[made.name] = made
        return made

    return register


# The layer modules register their checks on import; importing them here makes REGISTRY complete, in layer order.
from templatecheck.checks import template, roles, tools, sandbox, tokenizer  # noqa: E402, I001
from templatecheck.checks import reference, generation  # noqa: E402

__all__ = [
    "NEEDS",
    "REGISTRY",
    "Check",
    "check",
    "generation",
    "reference",
    "roles",
    "sandbox",
    "template",
    "tokenizer",
    "tools",
]
