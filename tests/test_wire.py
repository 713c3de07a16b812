"""Conversations as OpenAI-compatible clients send them, and a crash that is never "unsupported": each wire
shape and the crash-is-a-finding rule both ways, on the Hermes tool template of ``fixtures/hermes-3-tiny``
(which takes every shape) and on variants of it that crash on, refuse, or drop one."""

from __future__ import annotations

import pytest

from templatecheck.capabilities import probe
from templatecheck.checks.sandbox import sandbox
from templatecheck.checks.template import content_fidelity, renders
from templatecheck.checks.tools import tools
from templatecheck.conversation import WIRE, Shape
from templatecheck.result import CheckResult, Outcome
from tests.conftest import subject, subject_with_template

BASE = subject("hermes-3-tiny", "tool_use").template.source
LOOP = "{%- for message in messages %}"
#: For each wire shape, a condition on one message that holds for that shape and for no other probe.
CRASHES_ON = {
    "an empty user message": "message.role == 'user' and message.content == ''",
    "an empty assistant reply in the history": "message.role == 'assistant' and message.content == '' "
    "and message.tool_calls is not defined and message.reasoning_content is not defined",
    "a user message with a name field": "message.role == 'user' and message.name is defined",
    "an assistant reply with reasoning_content": "message.reasoning_content is defined and message.content",
    "a reasoning-only assistant turn (empty content, reasoning_content)": "message.reasoning_content is "
    "defined and message.content == ''",
    "a tool call with content: null": "message.tool_calls is defined and message.content is not defined",
    "an assistant reply with an empty tool_calls list": "message.tool_calls is defined and "
    "message.tool_calls | length == 0",
    "a tool call next to content": "message.tool_calls is defined and message.tool_calls and message.content",
    "a tool call with an OpenAI-style string id (call_ + 24 characters)": "message.tool_calls is defined "
    "and message.tool_calls and message.tool_calls[0].id | length > 20",
    "a tool call with an integer-looking string id": "message.tool_calls is defined "
    "and message.tool_calls and message.tool_calls[0].id == '0'",
    "parallel tool calls with content: null and their results": "message.tool_calls is defined and "
    "message.tool_calls | length > 1 and message.content is not defined",
    "a tool result without a name field (the OpenAI form)": "message.role == 'tool' and message.name is "
    "not defined",
    "a tool exchange on a later request without tools (clients send tools with the first only)": "message"
    ".role == 'tool' and not tools",
}


def with_guard(condition: str, action: str = "{{ 1 + 'x' }}") -> str:
    """The base template doing ``action`` (a TypeError by default) on every message where ``condition``."""
    assert LOOP in BASE
    return BASE.replace(LOOP, f"{LOOP}{{% if {condition} %}}{action}{{% endif %}}", 1)


def owner(shape: Shape) -> str:
    return "renders" if shape.needs == "plain" else "tools"


def run(shape: Shape, source: str) -> CheckResult:
    target = subject_with_template("hermes-3-tiny", source)
    return (renders if owner(shape) == "renders" else tools)(target)


def test_every_shape_has_a_crash_fixture() -> None:
    assert set(CRASHES_ON) == {s.name for s in WIRE}


def test_the_base_template_takes_every_shape() -> None:
    target = subject_with_template("hermes-3-tiny", BASE)
    assert probe(target).failures == ()
    for check in (renders, tools, sandbox):
        assert check(target).outcome is Outcome.PASSED, check(target).message
    assert content_fidelity(target).outcome is Outcome.WARNING  # it refuses list content, no more


@pytest.mark.parametrize("shape", WIRE, ids=lambda s: s.name)
def test_a_crash_on_a_wire_shape_is_a_failure_naming_it(shape: Shape) -> None:
    result = run(shape, with_guard(CRASHES_ON[shape.name]))
    crashes = [f for f in result.findings if f.cause == f"{owner(shape)}.crash"]
    assert result.outcome is Outcome.FAILED and len(crashes) == 1, result.message
    assert crashes[0].message.startswith(
        f"{shape.name} does not render, though clients send it: template raised TypeError: unsupported operand"
    ), crashes[0].message
    assert crashes[0].fix == shape.fix


@pytest.mark.parametrize("shape", WIRE, ids=lambda s: s.name)
def test_a_refusal_of_a_wire_shape_is_a_warning_naming_the_constraint(shape: Shape) -> None:
    refusal = "{{ raise_exception('Tool call ids must be 9 alphanumeric characters') }}"
    result = run(shape, with_guard(CRASHES_ON[shape.name], refusal))
    refused = [f for f in result.findings if f.cause == f"{owner(shape)}.refused"]
    assert result.outcome is Outcome.WARNING, result.message
    assert refused[0].message.startswith(
        f"the template refuses {shape.name} (a constraint of its own): template refused: Tool call ids must "
        "be 9 alphanumeric characters"
    ), refused[0].message


def test_tool_shapes_are_not_tried_on_a_template_that_ignores_tool_calls() -> None:
    """A template without tool support that breaks on ``content: null`` is not judged on tool shapes."""
    target = subject("hermes-3-tiny")
    assert not probe(target).tool_calls
    assert probe(target).failures == ()
    assert tools(target).outcome is Outcome.SKIPPED


def test_a_tool_use_template_is_not_given_a_request_without_tools() -> None:
    """transformers picks a ``tool_use`` template only for a request with tools."""
    source = with_guard("message.role == 'tool' and not tools")
    assert tools(subject_with_template("hermes-3-tiny", source, name="tool_use")).outcome is Outcome.PASSED
    assert tools(subject_with_template("hermes-3-tiny", source)).outcome is Outcome.FAILED


# ------------------------------------------------------------------------- a crash is never "unsupported"


def test_tool_definitions_that_crash_are_a_tools_failure_not_a_skip() -> None:
    """Apertus: a property without a description crashes the definitions; we once said "renders no tools"."""
    source = BASE.replace(
        "{{ tool | tojson }}", "{{ tool.function.parameters.properties.city.description.x }}"
    )
    result = tools(subject_with_template("hermes-3-tiny", source))
    crash = [f for f in result.findings if f.cause == "tools.crash"]
    assert result.outcome is Outcome.FAILED
    assert crash[0].message.startswith(
        "a conversation with tool definitions does not render, though clients send it: template raised "
        "UndefinedError"
    ), crash[0].message
    assert "without assuming fields they may leave out" in (crash[0].fix or "")
    ignoring = probe(subject_with_template("hermes-3-tiny", BASE.replace("{{ tool | tojson }}", "")))
    assert not ignoring.tools and ignoring.failures == ()  # ignored: unsupported, no finding


KIMI_QUEUE = "{%- set queue = namespace(ids=[]) %}"


def test_a_sandbox_refusal_on_tool_calls_is_one_sandbox_failure() -> None:
    """Kimi K2: ``list.append`` on every tool call; the sandbox refuses it. ``sandbox`` fails once, naming the
    shape and the fix; ``tools`` and ``renders`` note it."""
    source = KIMI_QUEUE + with_guard("message.tool_calls is defined", "{%- set _ = queue.ids.append(1) %}")
    target = subject_with_template("hermes-3-tiny", source)
    result = sandbox(target)
    assert result.outcome is Outcome.FAILED
    (finding,) = result.findings
    assert finding.cause == "sandbox.refused_operation"
    assert finding.message.startswith(
        "security: a tool call (dict arguments) does not render: the sandbox refused an operation: access to "
        "attribute 'append' of 'list' object is unsafe."
    ), finding.message
    assert "{% set ns.items = ns.items + [item] %}" in (finding.fix or "")
    for check in (tools, renders):
        noted = check(target)
        assert noted.outcome is not Outcome.FAILED, noted.message
        assert not [f for f in noted.findings if f.outcome is Outcome.FAILED]
        assert any("reported by `sandbox`" in f.message for f in noted.findings) or check is renders


def test_a_list_built_by_concatenation_passes_the_sandbox() -> None:
    source = KIMI_QUEUE + with_guard(
        "message.tool_calls is defined", "{%- set queue.ids = queue.ids + [1] %}"
    )
    target = subject_with_template("hermes-3-tiny", source)
    assert sandbox(target).outcome is Outcome.PASSED
    assert tools(target).outcome is Outcome.PASSED


def test_a_sandbox_refusal_on_plain_conversations_fails_once() -> None:
    source = "{%- set l = [] %}{%- set _ = l.append(1) %}" + BASE
    target = subject_with_template("hermes-3-tiny", source)
    assert sandbox(target).outcome is Outcome.FAILED
    result = renders(target)
    assert result.outcome is Outcome.PASSED, result.message
    assert "also observed sandbox.refused_operation (reported by `sandbox`)" in result.findings[0].message


# ------------------------------------------------------------------------ a dict tool result dropped


DROPS_OBJECTS = "{%- if message.content is mapping %}{{ '' }}{% else %}{{ message.content }}{% endif %}"
KEEPS_OBJECTS = "{%- if message.content is mapping %}{{ message.content | tojson }}{% else %}{{ message.content }}{% endif %}"


def test_content_fidelity_sees_a_tool_result_given_as_an_object_dropped() -> None:
    """Qwen3's "fixed" template: ``<tool_response>\\n\\n</tool_response>`` for a dict result."""
    assert KEEPS_OBJECTS in BASE
    target = subject_with_template("hermes-3-tiny", BASE.replace(KEEPS_OBJECTS, DROPS_OBJECTS))
    assert probe(target).dict_results
    result = content_fidelity(target)
    noted = [f for f in result.findings if f.cause == "tools.dict_result_dropped"]
    assert noted and noted[0].message.startswith(
        "also observed tools.dict_result_dropped (reported by `tools`): the tool message"
    ), result.message
    assert "(a result given as an object) is dropped" in noted[0].message
    assert (
        tools(target).outcome is Outcome.WARNING
    )  # a hazard of apply_chat_template, the one path with dicts
    kept = content_fidelity(subject_with_template("hermes-3-tiny", BASE))
    assert not [f for f in kept.findings if f.cause == "tools.dict_result_dropped"]


def test_a_generator_given_to_tojson_gets_its_own_fix() -> None:
    """DeepSeek R1 (llama.cpp's copy): ``tools | map(attribute='function') | tojson`` crashes in Jinja."""
    source = BASE.replace(
        "{%- for tool in tools %}{{ tool | tojson }}",
        "{{ tools | map(attribute='function') | tojson }}{%- for tool in [] %}",
    )
    result = tools(subject_with_template("hermes-3-tiny", source))
    (crash,) = [f for f in result.findings if f.cause == "tools.crash"]
    assert "Object of type generator is not JSON serializable" in crash.message
    assert (
        crash.fix
        == "add | list before | tojson: map, select and reject return generators, which JSON cannot encode"
    )


def test_a_shape_that_crashes_is_not_drawn_so_renders_does_not_report_it_again() -> None:
    """QwQ: content null renders alone but crashes once a result follows; ``tools`` reports it, the sample
    (which ``renders`` judges) gives such a template ``content: ""`` instead."""
    source = with_guard("message.role == 'tool' and messages[loop.index0 - 1].content is not defined")
    target = subject_with_template("hermes-3-tiny", source)
    assert probe(target).support.null_content is False
    assert probe(subject_with_template("hermes-3-tiny", BASE)).support.null_content is True
    crash = [f for f in tools(target).findings if f.cause == "tools.crash"]
    assert crash[0].message.startswith("parallel tool calls with content: null and their results does not")
    result = renders(target)
    assert result.outcome is Outcome.PASSED, result.message
