"""The reports at the top of the data flow: the JSON report and the terminal summary.

They receive the check order as data (``order``, the registry's names), so nothing here imports the checks.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from templatecheck.result import CheckResult, Finding, Layer, Outcome
from templatecheck.text import first_line

REPORT_VERSION = 1

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


def grids(
    results: Iterable[CheckResult], sources: Sequence[str] = (), order: Sequence[str] = ()
) -> list[Grid]:
    """The results per model, in the order of ``sources`` (then of appearance); the same whatever order the
    results arrive in (xdist), except for models missing from ``sources``. Within a layer, checks come in
    ``order`` (the registry's: ``list(templatecheck.checks.REGISTRY)``), then the others by name."""
    registered = list(order)
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


def _short(line: str, width: int = 150) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def summary_lines(
    results: Iterable[CheckResult],
    notes: Mapping[str, str] | None = None,
    sources: Sequence[str] = (),
    order: Sequence[str] = (),
) -> list[str]:
    """Per model: a table of checks (layer, check, one column per template), then per template its tally and
    one line per finding, most severe first.

    ``notes`` adds text to a model's header line, by source (the reference format the model was compared with);
    ``order`` is the check order (see :func:`grids`).
    """
    lines: list[str] = []
    for grid in grids(results, sources, order):
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
