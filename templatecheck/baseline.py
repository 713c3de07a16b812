"""Accepted findings: a baseline file that lets a publisher gate CI on a model with a known finding.

A baseline lists findings by model, template and cause key (``--tc-baseline FILE``). A finding it lists is
reported as accepted and does not count towards its check's outcome; a finding it does not list fails as
usual, so a new root cause (a new key) fails even while an accepted one persists. An accepted entry that no
longer occurs is stale: listed at the end of the run with the command that rewrites the file.
``--tc-update-baseline`` writes every failed and warning finding of the run (atomically) and passes.

The file is JSON, sorted, one entry per (model, template, cause), with the finding's first line as a
reminder of what was accepted::

    {"version": 1, "accepted": [{"model": "m", "template": "default", "cause": "double_bos.missing",
                                 "summary": "..."}]}

This module never imports pytest: the plugin and other tools share it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from templatecheck.errors import TemplatecheckError
from templatecheck.report import write_atomically
from templatecheck.result import CheckResult, Outcome, outcome_of

VERSION = 1
_MAX_BYTES = 16_000_000

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Entry:
    model: str
    template: str
    cause: str
    summary: str = ""

    @property
    def key(self) -> Key:
        return (self.model, self.template, self.cause)


@dataclass(frozen=True)
class Baseline:
    """The accepted findings of one file (empty when the file does not exist yet)."""

    path: Path
    entries: tuple[Entry, ...] = ()

    @property
    def keys(self) -> frozenset[Key]:
        return frozenset(e.key for e in self.entries)

    def accept(self, result: CheckResult) -> CheckResult:
        """``result`` with the findings this baseline lists marked accepted, and its outcome recomputed."""
        if not self.entries:
            return result
        keys = self.keys
        findings = tuple(
            replace(f, accepted=True)
            if f.outcome in (Outcome.FAILED, Outcome.WARNING)
            and (result.model, result.template, f.cause) in keys
            else f
            for f in result.findings
        )
        return replace(result, findings=findings, outcome=outcome_of(findings))

    def rewrite(self, results: Iterable[CheckResult]) -> list[Entry]:
        """Write this run's findings as the baseline, keeping the entries of checks that did not run on their
        model and template (a ``-k`` selection keeps what it did not select); return what was written."""
        results = list(results)
        ran = {(r.model, r.template, r.check) for r in results}
        kept = [e for e in self.entries if (e.model, e.template, e.cause.split(".", 1)[0]) not in ran]
        entries = sorted([*entries_of(results), *kept], key=lambda e: e.key)
        write(self.path, entries)
        return entries

    def stale(self, results: Iterable[CheckResult]) -> list[Entry]:
        """Entries for checks that ran on their model and template in this run but found nothing of them."""
        ran = {(r.model, r.template, r.check) for r in results}
        seen = {(r.model, r.template, f.cause) for r in results for f in r.findings if f.cause}
        return [
            e
            for e in self.entries
            if (e.model, e.template, e.cause.split(".", 1)[0]) in ran and e.key not in seen
        ]


def read(path: Path) -> Baseline:
    """The baseline at ``path``; a missing file is an empty baseline, a malformed one a clear error."""
    if not path.exists():
        return Baseline(path)
    if not path.is_file():
        raise TemplatecheckError(f"--tc-baseline {path}: not a regular file; pass the baseline's JSON file")
    if path.stat().st_size > _MAX_BYTES:
        raise TemplatecheckError(
            f"--tc-baseline {path}: larger than {_MAX_BYTES:,} bytes; not a baseline file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TemplatecheckError(
            f"--tc-baseline {path}: not valid JSON ({exc}); fix it, or rewrite it with --tc-update-baseline"
        ) from None
    if (
        not isinstance(data, dict)
        or data.get("version") != VERSION
        or not isinstance(data.get("accepted"), list)
    ):
        raise TemplatecheckError(
            f"--tc-baseline {path}: not a templatecheck baseline (version {VERSION} with an 'accepted' list); "
            "rewrite it with --tc-update-baseline"
        )
    entries = []
    for item in data["accepted"]:
        fields = ("model", "template", "cause")
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in fields):
            raise TemplatecheckError(
                f"--tc-baseline {path}: an entry needs string 'model', 'template' and 'cause', got {item!r:.200}"
            )
        entries.append(Entry(item["model"], item["template"], item["cause"], str(item.get("summary", ""))))
    return Baseline(path, tuple(entries))


def entries_of(results: Iterable[CheckResult]) -> list[Entry]:
    """One entry per failed or warning finding with a cause, sorted."""
    found: dict[Key, Entry] = {}
    for result in results:
        for f in result.findings:
            if f.outcome in (Outcome.FAILED, Outcome.WARNING) and f.cause:
                summary = f.message.strip().split("\n", 1)[0][:200]
                found.setdefault(
                    (result.model, result.template, f.cause),
                    Entry(result.model, result.template, f.cause, summary),
                )
    return [found[k] for k in sorted(found)]


def write(path: Path, entries: Iterable[Entry]) -> None:
    """Write ``entries`` as the baseline at ``path``, atomically."""
    data = {
        "version": VERSION,
        "accepted": [
            {"model": e.model, "template": e.template, "cause": e.cause, "summary": e.summary}
            for e in entries
        ],
    }
    write_atomically(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


__all__ = ["Baseline", "Entry", "entries_of", "read", "write"]
