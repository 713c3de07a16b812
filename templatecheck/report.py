"""What a person reads: strings with visible whitespace, diffs, token lists, the JSON report, the summary."""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from templatecheck.result import CheckResult, Outcome

REPORT_VERSION = 1

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


# ------------------------------------------------------------------------------------------------ JSON report


def json_report(results: Iterable[CheckResult]) -> dict[str, Any]:
    """Every result, grouped by model, in the documented schema (see README, "JSON report")."""
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        entry = models.setdefault(
            (result.model, result.source),
            {"model": result.model, "source": result.source, "templates": [], "results": []},
        )
        if result.template not in entry["templates"]:
            entry["templates"].append(result.template)
        entry["results"].append(result.to_json())
    return {"version": REPORT_VERSION, "models": list(models.values())}


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_report(path: Path, results: Iterable[CheckResult]) -> None:
    write_atomically(path, json.dumps(json_report(results), indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------- terminal summary

_MARK = {
    Outcome.PASSED: "passed",
    Outcome.SKIPPED: "skipped",
    Outcome.WARNING: "WARNING",
    Outcome.FAILED: "FAILED",
    Outcome.ERROR: "ERROR",
}


def summary_lines(results: Iterable[CheckResult]) -> list[str]:
    """Per model and template: the checks with their outcomes, then one line per finding; notes of passed
    checks (the generation layer's table) in full."""
    grouped: dict[tuple[str, str], dict[str, list[CheckResult]]] = {}
    for result in results:
        grouped.setdefault((result.model, result.source), {}).setdefault(result.template, []).append(result)
    lines: list[str] = []
    for (model, source), templates in grouped.items():
        lines.append(f"{model} ({source})")
        for template, checks in templates.items():
            counts = {o: sum(1 for r in checks if r.outcome == o) for o in Outcome}
            tally = ", ".join(f"{n} {o.value}" for o, n in counts.items() if n)
            lines.append(f"  {template}: {tally}")
            for result in sorted(checks, key=lambda r: -r.outcome.severity):
                for finding in result.findings:
                    if finding.outcome is Outcome.PASSED and finding.message:  # a note, such as a table
                        first, *rest = finding.message.split("\n")
                        lines.append(f"    {_MARK[Outcome.PASSED]} {result.check}: {first}")
                        lines += [f"      {line}" for line in rest]
                        continue
                    if finding.outcome in (Outcome.PASSED, Outcome.SKIPPED):
                        continue
                    first = finding.message.strip().split("\n", 1)[0]
                    lines.append(f"    {_MARK[finding.outcome]} {result.check}: {first}")
    return lines
