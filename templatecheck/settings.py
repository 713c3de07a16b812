"""Command-line values checked and parsed once, before any test runs: each bad value is one clear error."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from templatecheck.causes import CONSUMERS
from templatecheck.errors import TemplatecheckError

#: Variables the suite itself passes to every render; a --template-var cannot replace them.
RESERVED = frozenset({"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"})


def parse_consumers(values: Iterable[str]) -> tuple[str, ...]:
    """``--consumer`` values, each a known consumer path."""
    chosen = []
    for value in values:
        if value not in CONSUMERS:
            known = ", ".join(CONSUMERS)
            raise TemplatecheckError(f"--consumer {value!r}: not a consumer path; choose from {known}")
        chosen.append(value)
    return tuple(dict.fromkeys(chosen))


def parse_template_vars(values: Iterable[str]) -> dict[str, Any]:
    """``--template-var NAME=VALUE`` values; VALUE is JSON when it parses (``true``, ``3``, ``["a"]``), else
    the string itself (``date_string=26 Jul 2024``)."""
    found: dict[str, Any] = {}
    for value in values:
        name, sep, text = value.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise TemplatecheckError(
                f"--template-var {value!r}: expected NAME=VALUE with NAME a template variable name, "
                "e.g. --template-var date_string='26 Jul 2024'"
            )
        if name in RESERVED:
            raise TemplatecheckError(
                f"--template-var {name}: the suite sets {name} itself for every render; pass another variable"
            )
        try:
            found[name] = json.loads(text)
        except (ValueError, RecursionError):
            found[name] = text
    return found


__all__ = ["RESERVED", "parse_consumers", "parse_template_vars"]
