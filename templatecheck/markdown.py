"""The Markdown report (``--tc-report-md``): for a model card or a pull-request comment.

Per model: its capabilities (learnt by probing each template), a table of the checks per template, then the
findings, most severe first, each with its message (diffs included) in a fenced block. The text depends only
on the results, never on the order they arrive in, so a ``-n auto`` run writes the serial run's report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from templatecheck.report import Grid, grids
from templatecheck.result import CheckResult, Outcome

#: Lines of a finding's message shown in the report; the rest is in the JSON report and the test output.
MESSAGE_LINES = 40

_ICON = {
    Outcome.PASSED: "✅ passed",
    Outcome.SKIPPED: "skipped",
    Outcome.WARNING: "⚠️ warning",
    Outcome.FAILED: "❌ failed",
    Outcome.ERROR: "💥 error",
}

#: ``(source, template) -> [(capability, supported), ...]``, from :meth:`Capabilities.table`.
CapabilityTables = Mapping[tuple[str, str], Sequence[tuple[str, bool]]]


def markdown_report(
    results: Iterable[CheckResult],
    capabilities: CapabilityTables | None = None,
    notes: Mapping[str, str] | None = None,
    sources: Sequence[str] = (),
    order: Sequence[str] = (),
) -> str:
    """The whole report; ``notes`` add a line under a model's heading, by source (its reference format);
    ``order`` is the check order (see :func:`~templatecheck.report.grids`)."""
    made = grids(results, sources, order)
    lines = ["# templatecheck report", ""]
    if not made:
        lines.append("No checks ran.")
    for grid in made:
        lines += _model_section(grid, capabilities or {}, (notes or {}).get(grid.source))
    report = "\n".join(lines).rstrip("\n") + "\n"
    return report.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate stays visible


_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MARKUP = re.compile(r"[\\`*\[\]|~<>&]")


def text(value: str) -> str:
    """A name from a model repository as inert Markdown: no HTML (so no ``<!--`` hiding what follows), no
    links, emphasis, code spans or table cells of its own, one line."""
    flat = " ".join(value.split())
    return _MARKUP.sub(lambda m: _HTML.get(m.group(0), "\\" + m.group(0)), flat)


def _model_section(grid: Grid, capabilities: CapabilityTables, note: str | None) -> list[str]:
    source = f"`{grid.source}`" if "`" not in grid.source and grid.source.isprintable() else text(grid.source)
    lines = [f"## {text(grid.model)}", "", source + (f" · {text(note)}" if note else ""), ""]
    lines += [f"- **{text(t)}**: {grid.tally(t)}" for t in grid.templates] + [""]
    tables = {t: capabilities[(grid.source, t)] for t in grid.templates if (grid.source, t) in capabilities}
    if tables:
        names = [name for name, _ in next(iter(tables.values()))]
        shown = [t for t in grid.templates if t in tables]
        lines += [
            "### Capabilities",
            "",
            _row("capability", *map(text, shown)),
            _row(*["---"] * (len(shown) + 1)),
        ]
        for i, name in enumerate(names):
            lines.append(_row(name, *("yes" if tables[t][i][1] else "no" for t in shown)))
        lines.append("")
    lines += [
        "### Checks",
        "",
        _row("layer", "check", *map(text, grid.templates)),
        _row(*["---"] * (len(grid.templates) + 2)),
    ]
    for layer, check, outcomes in grid.rows:
        cells = (_ICON[outcomes[t]] if t in outcomes else "-" for t in grid.templates)
        lines.append(_row(layer.value, f"`{check}`", *cells))
    lines.append("")
    findings = grid.findings()
    lines += ["### Findings", ""]
    if not findings:
        lines += ["None.", ""]
    for result, finding in findings:
        label = "accepted" if finding.accepted else _ICON[finding.outcome]
        lines += [f"#### {label}: `{finding.cause or result.check}` ({text(result.template)})", ""]
        lines += [*_fenced(finding.text), ""]
    return lines


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _fenced(message: str) -> list[str]:
    """The message in a fenced block long enough to hold any backtick run inside it, cut at
    :data:`MESSAGE_LINES`."""
    body = message.strip("\n").split("\n")
    if len(body) > MESSAGE_LINES:
        body = [*body[:MESSAGE_LINES], f"… ({len(body) - MESSAGE_LINES} more lines)"]
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", message)), default=0))
    return [fence + "text", *body, fence]


__all__ = ["MESSAGE_LINES", "CapabilityTables", "markdown_report"]
