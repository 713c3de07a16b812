"""What a template supports, learnt by rendering probes with sentinel values (never from its name).

A feature is supported when a conversation using it renders and its sentinel reaches the prompt. The result
decides what the hypothesis conversations may contain (:class:`~templatecheck.strategies.Support`), and is
the capabilities table of the reports (with the verdicts of two role checks: :func:`templatecheck.checks.roles.survey`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from templatecheck.conversation import Conversation, assistant, system, user
from templatecheck.model import Subject
from templatecheck.render import RenderError
from templatecheck.strategies import Support

SENTINEL = "zq7"
#: Tool-call ids of 9 alphanumeric characters: what Mistral's formats require, and valid for every other.
CALL_IDS = ("call00001", "call00002")


def _tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Tool {name}.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }


def _call(name: str, arguments: Any, call_id: str = CALL_IDS[0]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@dataclass(frozen=True)
class Capabilities:
    system: bool
    tools: bool
    tool_calls: bool
    parallel_tool_calls: bool
    tool_role: bool
    list_content: bool
    object_arguments: bool
    string_arguments: bool
    reasoning: bool
    #: Text the template injects when the conversation has no system message (``default_system_prompt``).
    default_system_prompt: bool = False
    #: The template writes the current date (``clock``).
    date_injection: bool = False
    #: Features that reach the prompt only as a Python repr (``"tools"``, ``"list content"``): the template
    #: prints the structure (``tools|string``) instead of its text. Not a row of the table.
    repr_only: frozenset[str] = frozenset()

    @property
    def support(self) -> Support:
        """The conversation features hypothesis may draw for this template."""
        return Support(
            system=self.system,
            tools=self.tools,
            tool_calls=self.tool_calls,
            tool_role=self.tool_role and self.tool_calls,
            list_content=self.list_content,
            string_arguments=self.string_arguments or not self.object_arguments,
            object_arguments=self.object_arguments,
        )

    def table(self) -> list[tuple[str, bool]]:
        """(feature, supported) rows for the reports, in a fixed order."""
        return [
            (_LABELS.get(name, name.replace("_", " ")), value)
            for name, value in self.__dict__.items()
            if isinstance(value, bool)
        ]


_LABELS = {
    "system": "system role",
    "tool_role": "tool responses",
    "list_content": "typed (list) content",
    "object_arguments": "object arguments",
    "string_arguments": "string arguments",
    "reasoning": "thinking / reasoning",
}


def _reaches(subject: Subject, sentinel: str, messages: Conversation, **kwargs: Any) -> str:
    """How the sentinel reaches the prompt: ``"text"``, ``"repr"`` (only inside a Python repr of the structure
    that holds it), or ``"absent"`` (not at all, or the conversation does not render)."""
    try:
        rendered = subject.render(messages, **kwargs)
    except RenderError:
        return "absent"
    if sentinel not in rendered:
        return "absent"
    return "repr" if "{'" in rendered or "[{'" in rendered else "text"


def _count(subject: Subject, text: str, messages: Conversation, **kwargs: Any) -> int:
    """How often ``text`` occurs in the rendering of ``messages`` (-1 when it does not render)."""
    try:
        return subject.render(messages, **kwargs).count(text)
    except RenderError:
        return -1


def _shows(subject: Subject, sentinel: str, messages: Conversation, **kwargs: Any) -> bool:
    """The sentinel reaches the prompt as text, not inside a Python repr of the structure that holds it."""
    return _reaches(subject, sentinel, messages, **kwargs) == "text"


def probe(subject: Subject) -> Capabilities:
    """Render one probe per feature; cached per template of the model."""
    key = ("capabilities", subject.template.name, subject.template.source)
    cached = subject.model.cache.get(key)
    if isinstance(cached, Capabilities):
        return cached
    s = SENTINEL
    ask = user("What is the weather?")
    tool_name = f"tool_{s}"
    tools = [_tool(tool_name)]
    calls = {
        form: [ask, {"role": "assistant", "content": "", "tool_calls": [_call(tool_name, args)]}]
        for form, args in (("object", {"city": f"c{s}"}), ("string", json.dumps({"city": f"c{s}"})))
    }
    object_arguments = _shows(subject, f"c{s}", calls["object"], tools=tools)
    string_arguments = _shows(subject, f"c{s}", calls["string"], tools=tools)
    # a call whose arguments never show (written as a constant) is still a call: its name shows once more
    named = max(_count(subject, tool_name, calls[f], tools=tools) for f in calls)
    tool_calls = (
        object_arguments or string_arguments or named > _count(subject, tool_name, [ask], tools=tools)
    )
    form = "object" if object_arguments else "string"
    parallel = [
        ask,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                _call(tool_name, {"city": "a"}, CALL_IDS[0]),
                _call(f"second_{s}", {"city": "b"}, CALL_IDS[1]),
            ],
        },
    ]
    result = [
        *calls[form],
        {"role": "tool", "tool_call_id": CALL_IDS[0], "name": tool_name, "content": f"r{s}"},
    ]
    source = subject.template.source
    definitions = _reaches(subject, tool_name, [ask], tools=tools)
    parts = _reaches(subject, f"l{s}", [user([{"type": "text", "text": f"l{s}"}])])
    found = Capabilities(
        system=_shows(subject, f"s{s}", [system(f"s{s}"), user("hi")]),
        tools=definitions == "text",
        tool_calls=tool_calls,
        parallel_tool_calls=tool_calls
        and _shows(subject, f"second_{s}", parallel, tools=[*tools, _tool(f"second_{s}")]),
        tool_role=tool_calls and _shows(subject, f"r{s}", result, tools=tools),
        list_content=parts == "text",
        object_arguments=object_arguments,
        string_arguments=string_arguments,
        reasoning=any(f in source for f in ("reasoning_content", "thinking", "enable_thinking"))
        and _shows(subject, f"t{s}", [user("q"), {**assistant("a"), "reasoning_content": f"t{s}"}]),
        repr_only=frozenset(
            name for name, how in (("tools", definitions), ("list content", parts)) if how == "repr"
        ),
    )
    subject.model.cache[key] = found
    return found
