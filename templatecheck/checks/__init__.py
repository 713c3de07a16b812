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

from templatecheck.checks.base import NEEDS, REGISTRY, Check, check

# The layer modules register their checks on import; importing them here makes REGISTRY complete, in layer order.
# isort: off
from templatecheck.checks import template, agent, roles, tools, sandbox, tokenizer
from templatecheck.checks import reference, generation
from templatecheck.checks import engine, gguf
# isort: on

__all__ = [
    "NEEDS",
    "REGISTRY",
    "Check",
    "agent",
    "check",
    "engine",
    "generation",
    "gguf",
    "reference",
    "roles",
    "sandbox",
    "template",
    "tokenizer",
    "tools",
]
