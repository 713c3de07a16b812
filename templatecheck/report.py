"""What a person reads: strings with visible whitespace, diffs, token lists, the JSON report, the summary."""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from templatecheck.result import CheckResult, Finding, Layer, Outcome

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


def json_report(
    results: Iterable[CheckResult],
    settings: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every result, grouped by model, in the documented schema (see README, "JSON report"), with the
    ``settings`` that change a verdict and the ``provenance`` (versions, template hashes)."""
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        entry = models.setdefault(
            (result.model, result.source),
            {"model": result.model, "source": result.source, "templates": [], "results": []},
        )
        if result.template not in entry["templates"]:
            entry["templates"].append(result.template)
        entry["results"].append(result.to_json())
    return {
        "version": REPORT_VERSION,
        "settings": dict(settings or {}),
        "provenance": dict(provenance or {}),
        "models": list(models.values()),
    }


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(
            fd, "w", encoding="utf-8", newline=""
        ) as handle:  # exact bytes: no newline translation
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_report(
    path: Path,
    results: Iterable[CheckResult],
    settings: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """The JSON report at ``path``, atomically; text that is not valid Unicode (a lone surrogate a template
    echoed) is written as a JSON escape, so any string serializes."""
    data = json_report(results, settings, provenance)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, indent=2, ensure_ascii=True)
    write_atomically(path, text + "\n")


# ---------------------------------------------------------------------------------------- terminal summary

_MARK = {
    Outcome.PASSED: "passed",
    Outcome.SKIPPED: "skipped",
    Outcome.WARNING: "WARNING",
    Outcome.FAILED: "FAILED",
    Outcome.ERROR: "ERROR",
}


@dataclass(frozen=True)
class Grid:
    """One model's results as a table: a row per check (in layer order), a column per template."""

    model: str
    source: str
    templates: tuple[str, ...]
    rows: tuple[tuple[Layer, str, Mapping[str, Outcome]], ...]
    results: tuple[CheckResult, ...]

    def tally(self, template: str) -> str:
        """``13 passed, 3 skipped, 1 warning`` for one template."""
        outcomes = [r.outcome for r in self.results if r.template == template]
        return ", ".join(f"{outcomes.count(o)} {o.value}" for o in Outcome if o in outcomes)

    def findings(self, template: str | None = None) -> list[tuple[CheckResult, Finding]]:
        """The warnings, failures and errors, most severe first, then in check order."""
        order = {check: i for i, (_, check, _) in enumerate(self.rows)}
        found = [
            (r, f)
            for r in self.results
            if template is None or r.template == template
            for f in r.findings
            if f.outcome not in (Outcome.PASSED, Outcome.SKIPPED)
        ]
        return sorted(
            found,
            key=lambda rf: (
                rf[1].accepted,
                -rf[1].outcome.severity,
                order[rf[0].check],
                self.templates.index(rf[0].template),
            ),
        )


def grids(results: Iterable[CheckResult], sources: Sequence[str] = ()) -> list[Grid]:
    """The results per model, in the order of ``sources`` (then of appearance); the same whatever order the
    results arrive in (xdist), except for models missing from ``sources``."""
    from templatecheck.checks import REGISTRY

    registered = list(REGISTRY)
    by_model: dict[tuple[str, str], list[CheckResult]] = {}
    for result in results:
        by_model.setdefault((result.model, result.source), []).append(result)
    rank = {source: i for i, source in enumerate(sources)}
    keys = sorted(by_model, key=lambda k: rank.get(k[1], len(rank)))
    made = []
    for model, source in keys:
        found = by_model[(model, source)]
        templates = sorted({r.template for r in found}, key=lambda t: (t != "default", t))
        layers = list(Layer)
        checks = sorted(
            {(r.layer, r.check) for r in found},
            key=lambda lc: (
                layers.index(lc[0]),
                registered.index(lc[1]) if lc[1] in registered else len(registered),
                lc[1],
            ),
        )
        rows = tuple(
            (layer, check, {r.template: r.outcome for r in found if r.check == check})
            for layer, check in checks
        )
        position = {check: i for i, (_, check) in enumerate(checks)}
        found.sort(key=lambda r: (templates.index(r.template), position[r.check]))
        made.append(Grid(model, source, tuple(templates), rows, tuple(found)))
    return made


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


def _short(line: str, width: int = 150) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def summary_lines(
    results: Iterable[CheckResult], notes: Mapping[str, str] | None = None, sources: Sequence[str] = ()
) -> list[str]:
    """Per model: a table of checks (layer, check, one column per template), then per template its tally and
    one line per finding, most severe first.

    ``notes`` adds text to a model's header line, by source (the reference format the model was compared with).
    """
    lines: list[str] = []
    for grid in grids(results, sources):
        note = (notes or {}).get(grid.source)
        lines.append(f"{grid.model} ({grid.source})" + (f" [{note}]" if note else ""))
        header = ("layer", "check", *grid.templates)
        cells = [header] + [
            (
                layer.value,
                check,
                *(outcomes[t].value if t in outcomes else "-" for t in grid.templates),
            )
            for layer, check, outcomes in grid.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for row in cells:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for template in grid.templates:
            lines.append(f"  {template}: {grid.tally(template)}")
            for result, finding in grid.findings(template):
                mark = "accepted" if finding.accepted else _MARK[finding.outcome]
                lines.append(
                    f"    {mark} {finding.cause or result.check}: {_short(first_line(finding.message))}"
                )
            for result in grid.results:
                for finding in result.findings:
                    if (
                        result.template == template
                        and finding.outcome is Outcome.PASSED
                        and finding.message
                        and not finding.cause  # a cause another check owns: that check shows it
                    ):
                        # a note of a passed check, such as the generation layer's variant table, in full
                        first, *rest = finding.message.split("\n")
                        lines.append(f"    {_MARK[Outcome.PASSED]} {result.check}: {first}")
                        lines += [f"      {line}" for line in rest]
    return lines
