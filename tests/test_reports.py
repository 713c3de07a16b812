"""The reports: the terminal summary's table, the JSON report against its documented schema, the Markdown
report, and the capabilities table they show."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from templatecheck.capabilities import Capabilities
from templatecheck.checks import REGISTRY
from templatecheck.checks.roles import survey
from templatecheck.markdown import MESSAGE_LINES, markdown_report
from templatecheck.report import REPORT_VERSION, grids, summary_lines
from templatecheck.result import CheckResult, Finding, Layer, Outcome
from tests.conftest import FIXTURES, ROOT, fixture_model, subject, subject_with_template

HERMES = str(FIXTURES / "hermes-3-tiny")
NO_BOS = str(FIXTURES / "broken" / "no-bos")
SCHEMA = json.loads((ROOT / "docs" / "report-schema.json").read_text())


# ------------------------------------------------------------------------------------------ the schema


def violations(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What in ``value`` breaks ``schema`` (the JSON Schema subset docs/report-schema.json uses)."""
    kinds = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "boolean": bool,
        "null": type(None),
    }
    kind = schema.get("type")
    allowed = kind if isinstance(kind, list) else [kind] if kind else []
    if allowed and not any(isinstance(value, kinds[k]) for k in allowed):
        return [f"{where}: expected {' or '.join(allowed)}, got {type(value).__name__}"]
    found = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        found += [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        if schema.get("additionalProperties") is False:
            found += [f"{where}: unexpected {key!r}" for key in value if key not in properties]
        for key, item in value.items():
            if key in properties:
                found += violations(item, properties[key], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += violations(item, schema["items"], f"{where}[{i}]")
    return found


def test_the_validator_catches_what_the_schema_forbids() -> None:
    assert violations({"version": 1, "settings": {}, "provenance": {}, "models": []}, SCHEMA) == []
    assert violations({"version": 2, "settings": {}, "provenance": {}, "models": [], "extra": 0}, SCHEMA) == [
        "$: unexpected 'extra'",
        "$.version: 2 not in [1]",
    ]
    bad = {"version": 1, "models": [{"model": "m", "source": "s", "templates": [1], "results": [{}]}]}
    problems = violations(bad, SCHEMA)
    assert "$.models[0].templates[0]: expected string, got int" in problems
    assert "$.models[0].results[0]: missing 'outcome'" in problems


def test_the_schema_documents_the_code_s_version_and_enums() -> None:
    assert SCHEMA["properties"]["version"]["enum"] == [REPORT_VERSION]
    result = SCHEMA["properties"]["models"]["items"]["properties"]["results"]["items"]
    assert result["properties"]["outcome"]["enum"] == [o.value for o in Outcome]
    assert result["properties"]["layer"]["enum"] == [layer.value for layer in Layer]
    sample = CheckResult("m", "s", "t", "c", Layer.TEMPLATE, Outcome.FAILED, (Finding(Outcome.FAILED, "x"),))
    assert sorted(sample.to_json()) == sorted(result["required"])
    assert "docs/report-schema.json" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module", autouse=True)
def _import_transformers_first() -> None:
    """See tests/test_plugin.py: numpy cannot be imported twice in one process."""
    _ = fixture_model("hermes-3-tiny").tokenizer


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    """One real run over a clean model, a broken one and a missing one: (JSON report, Markdown, stdout)."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("reports")
    args = ["--model", HERMES, "--model", NO_BOS, "--model", "./nope", "--tc-examples", "10"]
    args += [
        "--tc-report-json",
        str(out / "r.json"),
        "--tc-report-md",
        str(out / "r.md"),
        "-p",
        "no:cacheprovider",
    ]
    no_node = {**os.environ, "TEMPLATECHECK_NODE_DIR": str(out / "no-node")}  # the counts do not depend on it
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
        env=no_node,
    )
    return json.loads((out / "r.json").read_text()), (out / "r.md").read_text(), run.stdout


def test_a_real_json_report_has_the_documented_shape(reports: tuple[dict[str, Any], str, str]) -> None:
    data, _, _ = reports
    assert violations(data, SCHEMA) == []
    assert {r["outcome"] for m in data["models"] for r in m["results"]} == {
        "passed",
        "skipped",
        "warning",
        "failed",
        "error",
    }


def test_the_markdown_report_has_capabilities_checks_and_findings(
    reports: tuple[dict[str, Any], str, str],
) -> None:
    _, md, stdout = reports
    assert md.startswith("# templatecheck report\n\n## hermes-3-tiny\n")
    assert [line for line in md.splitlines() if line.startswith("## ")] == [
        "## hermes-3-tiny",
        "## no-bos",
        "## nope",
    ]
    hermes, no_bos, nope = md.split("\n## ")[1:]
    assert f"`{HERMES}` · reference: chatml (detected)" in hermes
    assert "| capability | default | tool_use |" in hermes
    assert "| tools | no | yes |" in hermes and "| system role | yes | yes |" in hermes
    assert "| layer | check | default | tool_use |" in hermes
    assert "| tokenizer | `double_bos` | ✅ passed | ✅ passed |" in hermes
    assert "| tokenizer | `double_bos` | ❌ failed | ❌ failed |" in no_bos
    findings = no_bos.split("### Findings\n", 1)[1]
    # most severe first, then in check order
    assert findings.index("#### ❌ failed: `double_bos.") < findings.index("#### ⚠️ warning:")
    assert (
        "```text\napply_chat_template(tokenize=True) and servers (the rendering encoded without special tokens) give no BOS"
        in findings
    )
    assert "### Capabilities" not in nope and "no such directory" in nope
    assert "Markdown report: " in stdout


def test_the_terminal_summary_has_a_table_per_model(reports: tuple[dict[str, Any], str, str]) -> None:
    _, _, stdout = reports
    lines = stdout.splitlines()
    start = lines.index(f"no-bos ({NO_BOS}) [reference: chatml (detected)]")
    assert lines[start + 1].split() == ["layer", "check", "default", "tool_use"]
    rows = {line.split()[1]: line.split() for line in lines[start + 2 : start + 2 + len(REGISTRY)]}
    assert set(rows) == set(REGISTRY)
    assert rows["double_bos"] == ["tokenizer", "double_bos", "failed", "failed"]
    assert rows["tools"] == ["template", "tools", "skipped", "passed"]
    assert lines[start + 2 + len(REGISTRY)] == "  default: 15 passed, 10 skipped, 2 warning, 1 failed"


# ----------------------------------------------------------------------------------- the report helpers


def _result(template: str, check: str, outcome: Outcome, message: str = "", model: str = "m") -> CheckResult:
    layer = REGISTRY[check].layer if check in REGISTRY else Layer.TEMPLATE
    findings = () if outcome is Outcome.PASSED else (Finding(outcome, message or f"{check} {outcome.value}"),)
    return CheckResult(model, f"./{model}", template, check, layer, outcome, findings)


RESULTS = [
    _result("default", "renders", Outcome.PASSED),
    _result("default", "double_bos", Outcome.FAILED, "two BOS\n```\nfenced ``` inside\n```"),
    _result("default", "clock", Outcome.WARNING, "writes the date"),
    _result("tool_use", "renders", Outcome.ERROR, "crashed"),
    _result("tool_use", "double_bos", Outcome.PASSED),
    _result("tool_use", "clock", Outcome.SKIPPED, "no plain conversation renders"),
    _result("default", "renders", Outcome.PASSED, model="a"),
]


#: The check order the reports receive as data (the plugin, the session and the CLI pass the registry's).
ORDER = list(REGISTRY)


def test_grids_order_checks_by_layer_and_registry_whatever_the_arrival_order() -> None:
    for seed in range(5):
        shuffled = random.Random(seed).sample(RESULTS, len(RESULTS))
        assert grids(shuffled, ["./m", "./a"], ORDER) == grids(RESULTS, ["./m", "./a"], ORDER)
        assert markdown_report(shuffled, sources=["./m", "./a"], order=ORDER) == markdown_report(
            RESULTS, sources=["./m", "./a"], order=ORDER
        )
    (grid, _) = grids(RESULTS, ["./m", "./a"], ORDER)
    assert [check for _, check, _ in grid.rows] == ["renders", "clock", "double_bos"]
    assert grid.templates == ("default", "tool_use")
    assert [(r.check, r.template) for r, _ in grid.findings()] == [
        ("renders", "tool_use"),
        ("double_bos", "default"),
        ("clock", "default"),
    ]


def test_the_check_order_is_data_the_reports_receive() -> None:
    """Within a layer, rows follow ``order``; checks it does not name come after it, by name."""
    (grid, _) = grids(RESULTS, ["./m", "./a"], ["clock", "renders"])
    assert [check for _, check, _ in grid.rows] == ["clock", "renders", "double_bos"]
    (grid, _) = grids(RESULTS, ["./m", "./a"], ["renders"])
    assert [check for _, check, _ in grid.rows] == ["renders", "clock", "double_bos"]
    (grid, _) = grids(RESULTS, ["./m", "./a"])
    assert [check for _, check, _ in grid.rows] == ["clock", "renders", "double_bos"]


def test_summary_lines_golden() -> None:
    assert summary_lines(RESULTS, {"./m": "reference: chatml (detected)"}, ["./m"], ORDER) == [
        "m (./m) [reference: chatml (detected)]",
        "  layer      check       default  tool_use",
        "  template   renders     passed   error",
        "  template   clock       warning  skipped",
        "  tokenizer  double_bos  failed   passed",
        "  default: 1 passed, 1 warning, 1 failed",
        "    FAILED double_bos: two BOS",
        "    WARNING clock: writes the date",
        "  tool_use: 1 passed, 1 skipped, 1 error",
        "    ERROR renders: crashed",
        "a (./a)",
        "  layer     check    default",
        "  template  renders  passed",
        "  default: 1 passed",
    ]


def test_markdown_golden() -> None:
    tables = {("./m", "default"): [("system role", True), ("tools", False)]}
    md = markdown_report(RESULTS[:6], tables, {"./m": "reference: chatml (detected)"}, order=ORDER)
    assert md == "\n".join(
        [
            "# templatecheck report",
            "",
            "## m",
            "",
            "`./m` · reference: chatml (detected)",
            "",
            "- **default**: 1 passed, 1 warning, 1 failed",
            "- **tool_use**: 1 passed, 1 skipped, 1 error",
            "",
            "### Capabilities",
            "",
            "| capability | default |",
            "| --- | --- |",
            "| system role | yes |",
            "| tools | no |",
            "",
            "### Checks",
            "",
            "| layer | check | default | tool_use |",
            "| --- | --- | --- | --- |",
            "| template | `renders` | ✅ passed | 💥 error |",
            "| template | `clock` | ⚠️ warning | skipped |",
            "| tokenizer | `double_bos` | ❌ failed | ✅ passed |",
            "",
            "### Findings",
            "",
            "#### 💥 error: `renders` (tool_use)",
            "",
            "```text",
            "crashed",
            "```",
            "",
            "#### ❌ failed: `double_bos` (default)",
            "",
            "````text",
            "two BOS",
            "```",
            "fenced ``` inside",
            "```",
            "````",
            "",
            "#### ⚠️ warning: `clock` (default)",
            "",
            "```text",
            "writes the date",
            "```",
            "",
        ]
    )


def test_markdown_cuts_long_messages_and_says_when_nothing_ran() -> None:
    long = _result("default", "renders", Outcome.FAILED, "\n".join(f"line {i}" for i in range(100)))
    md = markdown_report([long])
    assert f"line {MESSAGE_LINES - 1}\n… (60 more lines)\n```" in md and f"line {MESSAGE_LINES}\n" not in md
    assert markdown_report([]) == "# templatecheck report\n\nNo checks ran.\n"
    assert "### Findings\n\nNone.\n" in markdown_report([_result("default", "renders", Outcome.PASSED)])


# ---------------------------------------------------------------------------------- capabilities table

ALL = [
    "system",
    "tools",
    "calls",
    "parallel",
    "tool_role",
    "list",
    "object",
    "string",
    "reasoning",
    "default_system",
    "date",
]


def _flags(caps: Capabilities) -> set[str]:
    return {name for name, (_, value) in zip(ALL, caps.table(), strict=True) if value}


@pytest.mark.parametrize(
    ("model", "template", "expected"),
    [
        ("hermes-3-tiny", "default", {"system"}),
        (
            "hermes-3-tiny",
            "tool_use",
            {"system", "tools", "calls", "parallel", "tool_role", "object", "string"},
        ),
        ("llama-3-tiny", "default", {"system"}),
        ("families/gemma", "default", set()),
        ("families/gemma3", "default", {"system"}),
        (
            "families/mistral-v3",
            "default",
            {"system", "tools", "calls", "parallel", "tool_role", "object", "string"},
        ),
        (
            "families/llama3.1",
            "default",
            {"system", "tools", "calls", "parallel", "tool_role", "object", "string", "date"},
        ),
        (
            "families/qwen2.5",
            "default",
            {"system", "tools", "calls", "parallel", "tool_role", "object", "string", "default_system"},
        ),
    ],
)
def test_capabilities_of_the_bundled_fixtures(model: str, template: str, expected: set[str]) -> None:
    assert _flags(survey(subject(model, template))) == expected


def test_capability_labels_are_the_reports_names() -> None:
    names = [name for name, _ in survey(subject("hermes-3-tiny")).table()]
    assert names == [
        "system role",
        "tools",
        "tool calls",
        "parallel tool calls",
        "tool responses",
        "typed (list) content",
        "object arguments",
        "string arguments",
        "thinking / reasoning",
        "default system prompt",
        "date injection",
    ]


def test_reasoning_and_list_content_are_learnt_from_renderings() -> None:
    source = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{{ p.text }}{% endfor %}"
        "{% endif %}{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert _flags(survey(subject_with_template("hermes-3-tiny", source, name="thinks"))) == {
        "system",
        "list",
        "reasoning",
    }
    # the same words in a comment, without the behaviour, are not a capability
    named = "{# reasoning_content thinking #}" + source.replace("m.reasoning_content", "m.nothing")
    assert "reasoning" not in _flags(survey(subject_with_template("hermes-3-tiny", named, name="commented")))
