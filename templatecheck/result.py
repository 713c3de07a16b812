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


@dataclass(frozen=True)
class Finding:
    """One thing a check found: a failure, a warning, or the reason it could not run (skipped)."""

    outcome: Outcome
    message: str


def failed(message: str) -> Finding:
    return Finding(Outcome.FAILED, message)


def warning(message: str) -> Finding:
    return Finding(Outcome.WARNING, message)


def skipped(message: str) -> Finding:
    return Finding(Outcome.SKIPPED, message)


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
        outcome = max((f.outcome for f in findings), key=lambda o: o.severity, default=Outcome.PASSED)
        return cls(model, source, template, check, layer, outcome, tuple(findings))

    @property
    def message(self) -> str:
        worst = [f.message for f in self.findings if f.outcome == self.outcome]
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
            "findings": [{"outcome": f.outcome.value, "message": f.message} for f in self.findings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        findings = tuple(Finding(Outcome(f["outcome"]), f["message"]) for f in data.get("findings", ()))
        return cls(
            data["model"],
            data["source"],
            data["template"],
            data["check"],
            Layer(data["layer"]),
            Outcome(data["outcome"]),
            findings,
        )


__all__ = ["CheckResult", "Finding", "Layer", "Outcome", "failed", "skipped", "warning"]
