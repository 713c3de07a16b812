"""The causes a check can report, each with its severity by rule and why: the table ``docs/checks.md`` shows.

A cause is one root cause of a finding (``double_bos.text_with_special_tokens``,
``generation_prompt.always_added``). Its key is ``<owner check>.<name>``: one check owns it, and a check that
observes a cause another check owns reports it only as a note (see :mod:`templatecheck.checks`). The
severity is the cause's, not the check's:

- ``failed``: what the publisher should change, or what breaks a documented way the model is used;
- ``warning``: legal and deliberate policy (an injected default system prompt, a date in the prompt, trimming
  the family's format prescribes, raising on an unsupported input), or a hazard of one consumer path that the
  harness fixes on its side (:attr:`Cause.hazard_of`; ``--tc-consumer NAME`` makes that path gate).

This module is a leaf: it imports nothing of templatecheck but the outcome values.
"""

from __future__ import annotations

from dataclasses import dataclass

from templatecheck.result import Finding, Outcome

#: The ways the token ids of a prompt reach the model (see :mod:`templatecheck.tokens`).
CONSUMERS: dict[str, str] = {
    "apply_chat_template": "apply_chat_template(tokenize=True): transformers pipelines, TRL, Hugging Face examples",
    "server": "the rendering encoded without special tokens: chat servers (vLLM, SGLang, TGI)",
    "naive": "the rendering encoded with special tokens, tokenizer(prompt): hand-written harness code",
}


@dataclass(frozen=True)
class Cause:
    """One root cause: its key, its severity by rule, and the reason for that severity."""

    key: str
    severity: Outcome
    why: str
    #: The consumer path whose hazard this is (a warning unless ``--tc-consumer`` names the path).
    hazard_of: str | None = None

    @property
    def check(self) -> str:
        """The check that owns the cause."""
        return self.key.split(".", 1)[0]

    def __call__(self, message: str, *, fix: str | None = None) -> Finding:
        """A finding of this cause; ``fix`` is what to change, shown after the message."""
        return Finding(self.severity, message, cause=self.key, fix=fix)


#: Every registered cause by key, in registration order (checks register theirs on import).
CAUSES: dict[str, Cause] = {}


def cause(key: str, severity: Outcome, why: str, *, hazard_of: str | None = None) -> Cause:
    """Register a cause; registering one key twice with different rules is a programming error."""
    if severity not in (Outcome.FAILED, Outcome.WARNING):
        raise ValueError(f"cause {key!r}: a cause is failed or warning, not {severity.value}")
    if hazard_of is not None and hazard_of not in CONSUMERS:
        raise ValueError(f"cause {key!r}: unknown consumer path {hazard_of!r}")
    made = Cause(key, severity, why, hazard_of)
    if CAUSES.setdefault(key, made) != made:
        raise ValueError(f"cause {key!r} is registered twice with different rules")
    return made


def defect(key: str, why: str) -> Cause:
    """A cause that fails: the publisher should change it."""
    return cause(key, Outcome.FAILED, why)


def policy(key: str, why: str) -> Cause:
    """A cause that warns: a legal, deliberate choice, or a hazard the harness fixes."""
    return cause(key, Outcome.WARNING, why)


def hazard(key: str, consumer: str, why: str) -> Cause:
    """A warning about one consumer path; ``--tc-consumer`` ``consumer`` makes it fail."""
    return cause(key, Outcome.WARNING, why, hazard_of=consumer)


def table(causes: list[Cause] | None = None) -> str:
    """The causes as the Markdown table of ``docs/checks.md``: key, severity, why (``templatecheck checks
    --markdown`` prints it)."""
    rows = ["| cause | severity | why |", "| --- | --- | --- |"]
    for c in causes if causes is not None else list(CAUSES.values()):
        severity = c.severity.value + (f" (fails with `--tc-consumer {c.hazard_of}`)" if c.hazard_of else "")
        why = c.why.replace("|", "\\|")
        rows.append(f"| `{c.key}` | {severity} | {why} |")
    return "\n".join(rows) + "\n"


__all__ = ["CAUSES", "CONSUMERS", "Cause", "cause", "defect", "hazard", "policy", "table"]
