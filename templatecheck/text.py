"""Text a person reads in a finding: strings with whitespace made visible, diffs, token lists.

A leaf module: every check, the tokens stage and the reports use it, and it imports nothing of templatecheck.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

_WS = {"\n": "␤", "\t": "⇥", "\r": "␍", "\u00a0": "⍽"}
# A space is shown as ␠ unless it sits alone between two visible characters.
_ODD_SPACE = re.compile(r"(?<=[ \n\t\r])  *| +(?=[ \n\t\r]|$)|^ +")


def visible(text: str) -> str:
    """``text`` with newlines (␤, then a real line break), tabs (⇥), CRs (␍) and odd spaces (␠) visible."""
    lines = text.split("\n")
    shown = []
    for line in lines:
        line = _ODD_SPACE.sub(lambda m: "␠" * len(m.group(0)), line)
        shown.append("".join(_WS.get(c, c) for c in line))
    return "␤\n".join(shown)


def quote(text: str, indent: str = "    ") -> str:
    """A block of visible text, indented, for failure messages."""
    body = visible(text) if text else "(empty)"
    return "\n".join(indent + line for line in body.split("\n"))


def diff(expected: str, actual: str, *, labels: tuple[str, str] = ("expected", "got")) -> str:
    """A unified diff of two renderings, whitespace visible, with the first differing character named."""
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    lines = list(
        difflib.unified_diff(
            visible(expected).splitlines(),
            visible(actual).splitlines(),
            fromfile=labels[0],
            tofile=labels[1],
            lineterm="",
            n=2,
        )
    )
    context = visible(expected[max(0, at - 20) : at + 20])
    head = f"first difference at character {at} (near {context!r})"
    return head + "\n" + "\n".join("    " + line for line in lines)


def tokens(ids: Sequence[int], pieces: Sequence[str], limit: int = 12) -> str:
    """``[id 'piece']`` for the first ``limit`` tokens, whitespace visible."""
    shown = [f"[{i} {visible(p)!r}]" for i, p in zip(ids[:limit], pieces[:limit], strict=False)]
    more = f" … ({len(ids) - limit} more)" if len(ids) > limit else ""
    return " ".join(shown) + more


def common_prefix(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` begin with in common."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def first_line(text: str) -> str:
    """The first line of ``text``, blank lines before it skipped, for one-line summaries."""
    return text.strip().split("\n", 1)[0]
