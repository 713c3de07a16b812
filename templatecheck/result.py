"""Outcomes of checks: plain values that the plugin, the reports and the CLI share."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Outcome(str, Enum):
    """How a check ended, most severe last."""

    PASSED = "passed"
    SKIPPED = "skipped"
    WARNING = "warning"
    FAILED = "failed"
    ERROR = "error"

    @property
    def severity(self) -> int:
        return list(Outcome).index(self)


class Layer(str, Enum):
    TEMPLATE = "template"
    TOKENIZER = "tokenizer"
    REFERENCE = "reference"
    GENERATION = "generation"
    ENGINE = "engine"


@dataclass(frozen=True)
class Finding:
    """One thing a check found: a failure, a warning, a note of a passed check, or why it could not run.

    ``cause`` is the stable key of the root cause (see :mod:`templatecheck.causes`); the first line of
    ``message`` says what is wrong, the rest is the evidence (the smallest conversation, the diff, the
    tokens); ``fix`` is what to change. ``accepted`` marks a finding a ``--tc-baseline`` file accepts: it is
    reported, and does not count towards the outcome.
    """

    outcome: Outcome
    message: str
    cause: str = ""
    fix: str | None = None
    accepted: bool = False

    @property
    def text(self) -> str:
        """The message with its fix, as a person reads it."""
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "cause": self.cause,
            "message": self.message,
            "fix": self.fix,
            "accepted": self.accepted,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(
            Outcome(data["outcome"]),
            data["message"],
            data.get("cause", ""),
            data.get("fix"),
            bool(data.get("accepted", False)),
        )


def failed(message: str, cause: str = "") -> Finding:
    return Finding(Outcome.FAILED, message, cause)


def warning(message: str, cause: str = "") -> Finding:
    return Finding(Outcome.WARNING, message, cause)


def skipped(message: str) -> Finding:
    return Finding(Outcome.SKIPPED, message)


def note(message: str, cause: str = "") -> Finding:
    """A remark of a check that passed (a table, a count, another check's cause it observed)."""
    return Finding(Outcome.PASSED, message, cause)


def outcome_of(findings: list[Finding] | tuple[Finding, ...]) -> Outcome:
    """The most severe outcome among the findings a baseline does not accept (passed when none)."""
    return max(
        (f.outcome for f in findings if not f.accepted), key=lambda o: o.severity, default=Outcome.PASSED
    )


@dataclass(frozen=True)
class CheckResult:
    """The result of one check on one template of one model."""

    model: str
    source: str
    template: str
    check: str
    layer: Layer
    outcome: Outcome
    findings: tuple[Finding, ...] = ()

    @classmethod
    def from_findings(
        cls, *, model: str, source: str, template: str, check: str, layer: Layer, findings: list[Finding]
    ) -> CheckResult:
        return cls(model, source, template, check, layer, outcome_of(findings), tuple(findings))

    @property
    def message(self) -> str:
        worst = [f.text for f in self.findings if f.outcome == self.outcome and not f.accepted]
        return "\n\n".join(worst)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "template": self.template,
            "check": self.check,
            "layer": self.layer.value,
            "outcome": self.outcome.value,
            "message": self.message,
            "findings": [f.to_json() for f in self.findings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        findings = tuple(Finding.from_json(f) for f in data.get("findings", ()))
        return cls(
            data["model"],
            data["source"],
            data["template"],
            data["check"],
            Layer(data["layer"]),
            Outcome(data["outcome"]),
            findings,
        )


__all__ = ["CheckResult", "Finding", "Layer", "Outcome", "failed", "note", "outcome_of", "skipped", "warning"]
