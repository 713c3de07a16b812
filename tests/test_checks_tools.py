"""The tools check, both ways, on fixtures named after real tool bugs."""

from __future__ import annotations

from templatecheck.capabilities import probe
from templatecheck.checks.tools import tools
from templatecheck.result import Outcome
from tests.conftest import subject, subject_with_template


def test_correct_tool_template_passes_and_its_capabilities_are_learnt() -> None:
    target = subject("hermes-3-tiny", "tool_use")
    assert tools(target).outcome is Outcome.PASSED
    caps = probe(target)
    assert (caps.tools, caps.tool_calls, caps.parallel_tool_calls, caps.tool_role) == (True, True, True, True)
    assert (caps.object_arguments, caps.string_arguments) == (True, True)
    assert probe(subject("hermes-3-tiny")).tools is False


def test_template_without_tools_is_skipped() -> None:
    result = tools(subject("llama-3-tiny"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message == "the template renders neither tool definitions nor tool calls"


def test_tool_calls_dropped_when_content_is_present() -> None:
    result = tools(subject("broken/drops-tool-calls-with-content", "tool_use"))
    assert result.outcome is Outcome.FAILED
    assert result.message == "the tool call is dropped when the assistant message also has content"


def test_dict_tool_result_rendered_as_python_repr() -> None:
    result = tools(subject("broken/tool-result-repr", "tool_use"))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith(
        "a dict tool result is rendered as a Python repr (\"{'temperature': 21, 'unit': 'zq7unit'}\")"
    )


def test_tool_json_broken_by_a_quote_in_a_description() -> None:
    result = tools(subject("broken/tool-json-quotes", "tool_use"))
    assert result.outcome is Outcome.FAILED
    assert (
        "the tool definitions the template writes as JSON do not parse (a quote in the description"
        in result.message
    )
    assert '"description": "Find a "city" by name' in result.message


def test_string_arguments_encoded_twice() -> None:
    source = subject("hermes-3-tiny", "tool_use").template.source.replace(
        "{%- if fn.arguments is string %}{{ fn.arguments }}{% else %}{{ fn.arguments | tojson }}{% endif %}",
        "{{- fn.arguments | tojson }}",
    )
    assert source != subject("hermes-3-tiny", "tool_use").template.source
    result = tools(subject_with_template("hermes-3-tiny", source, name="tool_use"))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith(
        "a tool call renders differently with arguments as a dict and as a JSON string"
    )
    assert (
        '{\\"cityzq7\\": \\"Pariszq7arg\\"}' in result.message
    )  # the double encoding is visible in the diff
