"""The checks, one module per layer. A check takes a :class:`~templatecheck.model.Subject` and returns
findings; it never asserts and never lets a template's exception escape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from templatecheck.model import Subject
from templatecheck.result import CheckResult, Finding, Layer


@dataclass(frozen=True)
class Check:
    name: str
    layer: Layer
    run: Callable[[Subject], list[Finding]]

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()

    def __call__(self, subject: Subject) -> CheckResult:
        findings = self.run(subject)
        return CheckResult.from_findings(
            model=subject.model.name,
            source=subject.model.ref.text,
            template=subject.template.name,
            check=self.name,
            layer=self.layer,
            findings=findings,
        )


#: Every check by name, in the order the suite runs them.
REGISTRY: dict[str, Check] = {}


def check(layer: Layer) -> Callable[[Callable[[Subject], list[Finding]]], Check]:
    """Register a check function under its own name."""

    def register(fn: Callable[[Subject], list[Finding]]) -> Check:
        made = Check(fn.__name__, layer, fn)
        REGISTRY[made.name] = made
        return made

    return register


# The layer modules register their checks on import; importing them here makes REGISTRY complete, in layer order.
from templatecheck.checks import template, roles, tools, sandbox, tokenizer  # noqa: E402, I001
from templatecheck.checks import reference, generation  # noqa: E402

__all__ = [
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
