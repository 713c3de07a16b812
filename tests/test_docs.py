"""The documentation stays in step with the code: a section per check, a working CI workflow for publishers."""

from __future__ import annotations

import re

import yaml

from templatecheck.checks import REGISTRY
from tests.conftest import ROOT

CHECKS = (ROOT / "docs" / "checks.md").read_text()


def test_every_registered_check_has_a_section_with_bug_example_and_fix() -> None:
    sections = dict(re.findall(r"^## `(\w+)`\n(.*?)(?=^## |\Z)", CHECKS, flags=re.M | re.S))
    assert set(REGISTRY) <= set(sections), f"undocumented: {sorted(set(REGISTRY) - set(sections))}"
    assert set(sections) - set(REGISTRY) == {"pins"}
    for name, body in sections.items():
        for part in ("**Catches**", "**Example**", "**Fix**"):
            assert part in body, f"docs/checks.md, {name}: no {part}"


def test_the_sections_follow_the_registry_order() -> None:
    order = re.findall(r"^## `(\w+)`", CHECKS, flags=re.M)
    assert order == [*REGISTRY, "pins"]


def test_the_ci_workflow_runs_the_suite_and_uploads_the_report() -> None:
    workflow = yaml.safe_load((ROOT / "docs" / "templatecheck-ci.yml").read_text())
    steps = workflow["jobs"]["templatecheck"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert any(r.startswith("pip install templatecheck") for r in runs)
    assert any(r.startswith("pytest --model . --tc-report-md report.md") for r in runs)
    upload = next(step for step in steps if str(step.get("uses", "")).startswith("actions/upload-artifact"))
    assert "report.md" in upload["with"]["path"] and upload["if"] == "always()"
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true


def test_the_cause_table_is_the_registered_causes() -> None:
    from templatecheck.causes import table
    from templatecheck.cli import all_causes

    generated = re.search(r"<!-- causes: .*? -->\n(.*?)<!-- /causes -->", CHECKS, flags=re.S)
    assert generated is not None, "docs/checks.md has no generated cause table"
    assert generated.group(1) == table(all_causes()), (
        "docs/checks.md's cause table is out of date: replace it with `templatecheck checks --markdown`"
    )
