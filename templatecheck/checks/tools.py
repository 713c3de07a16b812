"""Template layer: tool definitions, tool calls and tool results."""

from __future__ import annotations

import json
from typing import Any

from templatecheck import conversation as conv
from templatecheck.capabilities import probe
from templatecheck.checks import check
from templatecheck.model import Subject
from templatecheck.render import RenderError
from templatecheck.report import diff
from templatecheck.result import Finding, Layer, failed, skipped

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_zq7",
        "description": 'Find a "city" by name, e.g. "Paris" (quotes on purpose).',
        "parameters": {
            "type": "object",
            "properties": {"cityzq7": {"type": "string", "description": "The city's name."}},
            "required": ["cityzq7"],
        },
    },
}
_ASK = conv.user("Where is Paris?")


def _call(arguments: Any) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "lookup_zq7", "arguments": arguments}}


def _with_call(arguments: Any, content: str = "") -> conv.Conversation:
    return [_ASK, {"role": "assistant", "content": content, "tool_calls": [_call(arguments)]}]


def _json_objects_around(text: str, needle: str) -> list[Any]:
    """Every JSON object that parses from a ``{`` before an occurrence of ``needle`` and spans it."""
    decoder = json.JSONDecoder()
    found = []
    at = text.find(needle)
    while at >= 0:
        start = at
        for _ in range(8):
            start = text.rfind("{", 0, start)
            if start < 0:
                break
            try:
                value, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            if end > at:
                found.append(value)
                break
        at = text.find(needle, at + 1)
    return found


def _render(subject: Subject, messages: conv.Conversation, problems: list[Finding], what: str) -> str | None:
    try:
        return subject.render(messages, tools=[TOOL])
    except RenderError as error:
        if error.kind != "refused":  # a deliberate raise_exception is a clear error for the client
            problems.append(failed(f"{what} does not render: {error}"))
        return None


@check(Layer.TEMPLATE)
def tools(subject: Subject) -> list[Finding]:
    """Tool definitions, tool calls (name and arguments, as a dict and as a JSON string) and tool results
    reach the prompt; JSON the template builds parses; both argument forms render alike or one errors clearly.

    Catches tool definitions or calls that are dropped (often when the assistant message also has content),
    hand-built JSON broken by a quote in a description, arguments double-encoded when passed as a string,
    and a dict tool result printed as a Python repr.
    """
    caps = probe(subject)
    if not (caps.tools or caps.tool_calls):
        return [skipped("the template renders neither tool definitions nor tool calls")]
    findings: list[Finding] = []
    if caps.tools:
        prompt = _render(subject, [_ASK], findings, "a conversation with tools")
        if prompt is not None:
            missing = [s for s in ("lookup_zq7", "cityzq7") if s not in prompt]
            if missing:
                findings.append(
                    failed(f"tool definitions lose {', '.join(missing)} on the way into the prompt")
                )
            if '"lookup_zq7"' in prompt and not _json_objects_around(prompt, '"lookup_zq7"'):
                at = prompt.find('"lookup_zq7"')
                findings.append(
                    failed(
                        "the tool definitions the template writes as JSON do not parse (a quote in the "
                        "description breaks hand-built JSON; use | tojson)\n"
                        f"  near: {prompt[max(0, at - 40) : at + 120]!r}"
                    )
                )
    if caps.tool_calls:
        findings += _tool_calls(subject, caps.object_arguments, caps.string_arguments)
    if caps.tool_role:
        findings += _tool_results(subject, "object" if caps.object_arguments else "string")
    return findings


def _tool_calls(subject: Subject, object_ok: bool, string_ok: bool) -> list[Finding]:
    findings: list[Finding] = []
    arguments = {"cityzq7": "Pariszq7arg"}
    as_object = _render(subject, _with_call(arguments), findings, "a tool call with dict arguments")
    as_string = _render(
        subject, _with_call(json.dumps(arguments)), findings, "a tool call with string arguments"
    )
    if as_object is not None and as_string is not None and as_object != as_string:
        findings.append(
            failed(
                "a tool call renders differently with arguments as a dict and as a JSON string (clients send "
                "either; e.g. a string passed through | tojson is encoded twice)\n"
                + diff(as_object, as_string, labels=("dict arguments", "string arguments"))
            )
        )
    for form, rendered in (("dict", as_object), ("string", as_string)):
        if rendered is not None and "Pariszq7arg" not in rendered:
            findings.append(
                failed(
                    f"a tool call with {form} arguments is dropped: its argument value is not in the prompt"
                )
            )
    chosen = arguments if object_ok else json.dumps(arguments)
    both = _render(
        subject, _with_call(chosen, content="Let me look zq7content up."), findings, "a call with content"
    )
    if both is not None:
        if "Pariszq7arg" not in both:
            findings.append(failed("the tool call is dropped when the assistant message also has content"))
        if "zq7content" not in both:
            findings.append(failed("the assistant's content is dropped when the message also has tool calls"))
    return findings


def _tool_results(subject: Subject, form: str) -> list[Finding]:
    findings: list[Finding] = []
    arguments: Any = {"cityzq7": "Paris"} if form == "object" else json.dumps({"cityzq7": "Paris"})
    result = {"temperature": 21, "unit": "zq7unit"}
    for content in ("sunny zq7result", result):
        messages = [
            *_with_call(arguments),
            {"role": "tool", "tool_call_id": "call_1", "name": "lookup_zq7", "content": content},
        ]
        rendered = _render(subject, messages, findings, "a tool result")
        if rendered is None:
            continue
        if isinstance(content, str) and "zq7result" not in rendered:
            findings.append(failed("the tool result is dropped from the prompt"))
        if isinstance(content, dict) and repr(content) in rendered:
            findings.append(
                failed(
                    f"a dict tool result is rendered as a Python repr ({repr(content)!r}): the model sees "
                    "single-quoted pseudo-JSON; render it with | tojson"
                )
            )
    return findings
