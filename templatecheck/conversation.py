"""Conversations as plain values: lists of message dicts, exactly what chat templates receive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]
Conversation = list[Message]


def system(content: Any) -> Message:
    return {"role": "system", "content": content}


def user(content: Any) -> Message:
    return {"role": "user", "content": content}


def assistant(content: Any) -> Message:
    return {"role": "assistant", "content": content}


#: The plain conversations every template must render.
SYSTEM_TEXT = "You are a concise assistant."
USER_TEXT = "What is the capital of France?"
ASSISTANT_TEXT = "The capital of France is Paris."

USER_ONLY: Conversation = [user(USER_TEXT)]
SYSTEM_USER: Conversation = [system(SYSTEM_TEXT), user(USER_TEXT)]
SYSTEM_USER_ASSISTANT: Conversation = [*SYSTEM_USER, assistant(ASSISTANT_TEXT)]

#: Named conversations for diagnostics: the name says which one a message is about.
PLAIN: dict[str, Conversation] = {
    "user only": USER_ONLY,
    "system + user": SYSTEM_USER,
    "system + user + assistant": SYSTEM_USER_ASSISTANT,
}


#: A tool definition (JSON schema) for templates that need tools to render, such as a ``tool_use`` template.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name."}},
            "required": ["city"],
        },
    },
}


_NEXT = {
    "start": {"user"},
    "system": {"user"},
    "user": {"assistant"},
    "assistant": {"user"},
    "calls": {"tool", "assistant"},
    "tool": {"tool", "assistant", "user"},
}


def well_formed(conversation: Conversation) -> bool:
    """An optional system message, then user turns each answered by the assistant (directly, or through tool
    calls and their results); it may end after any user, assistant or tool message."""
    state = "start"
    for i, message in enumerate(conversation):
        role = message.get("role")
        if role == "system" and i == 0:
            state = "system"
            continue
        if role not in _NEXT[state]:
            return False
        state = "calls" if role == "assistant" and message.get("tool_calls") else str(role)
    return state != "start" and state != "system"


def describe(conversation: Conversation) -> str:
    """A conversation, one message a line, for failure messages."""
    lines = []
    for message in conversation:
        rest = {k: v for k, v in message.items() if k not in ("role", "content")}
        extra = f" {rest}" if rest else ""
        lines.append(f"  {message.get('role')}: {message.get('content')!r}{extra}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the wire format


@dataclass(frozen=True)
class Shape:
    """A conversation shape that OpenAI-compatible clients send, rendered to tell a template that takes it from
    one that crashes on it.

    ``needs`` is the capability the shape exercises (``"plain"``, ``"tool_calls"``, ``"tool_role"``): a shape is
    tried only on a template that renders that feature, since a template that ignores tool calls is not judged
    on their forms. Every shape is legal in the wire format, so a crash on one is a failure; a template that
    refuses one with ``raise_exception`` states a documented constraint of its own (Mistral's 9-character
    tool-call ids): a warning that names it. (A dict tool result, an extension of transformers and not of the
    wire format, is the tools check's: a crash on it is a warning there.) ``tools`` is
    what the request carries: ``"called"`` (definitions of the tools the conversation calls) or ``None`` (no
    ``tools``, as on the later requests of a client that sends them with the first only). ``fix`` is what the
    template should do instead of crashing.
    """

    name: str
    needs: str
    messages: Conversation
    fix: str
    tools: str | None = "called"


def _call(call_id: str, name: str = "get_weather", arguments: Any = '{"city": "Paris"}') -> Message:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _calls(content: Any, *calls: Message) -> Message:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def _result(call_id: str, content: Any = "sunny", **extra: Any) -> Message:
    return {"role": "tool", "tool_call_id": call_id, "content": content, **extra}


_ASK = user("What is the weather in Paris?")
_NINE = "call00001"
_NULL_CONTENT = (
    "clients send content: null next to tool calls: test {% if message.content is string %} (or "
    "`is not none`) before writing or joining it"
)

#: The shapes of :class:`Shape`, in the order they are tried.
WIRE: tuple[Shape, ...] = (
    Shape(
        "an empty user message",
        "plain",
        [user("")],
        "write empty content as an empty string; do not index or strip into it unguarded",
    ),
    Shape(
        "an empty assistant reply in the history",
        "plain",
        [user("hi"), assistant(""), user("again")],
        "write empty content as an empty string",
    ),
    Shape(
        "a user message with a name field",
        "plain",
        [{"role": "user", "content": "hi", "name": "alice"}],
        "ignore the optional name field, or write it where the format names the speaker",
    ),
    Shape(
        "an assistant reply with reasoning_content",
        "plain",
        [user("hi"), {**assistant("Hello."), "reasoning_content": "The user greets."}, user("again")],
        "read reasoning_content only where the format writes reasoning, and ignore it elsewhere",
    ),
    Shape(
        "a reasoning-only assistant turn (empty content, reasoning_content)",
        "plain",
        [user("hi"), {**assistant(""), "reasoning_content": "Thinking only."}, user("again")],
        "write an assistant turn whose content is empty (its reasoning may be dropped from history)",
    ),
    Shape(
        "a tool call with content: null",
        "tool_calls",
        [_ASK, _calls(None, _call(_NINE))],
        _NULL_CONTENT,
    ),
    Shape(
        "an assistant reply with an empty tool_calls list",
        "tool_calls",
        [_ASK, _calls("It is sunny in Paris."), user("Thanks")],
        "treat tool_calls: [] as no calls: test {% if message.tool_calls %} before iterating or indexing it",
    ),
    Shape(
        "a tool call next to content",
        "tool_calls",
        [_ASK, _calls("Let me look that up.", _call(_NINE))],
        "write the turn's content and its calls (clients send both), or refuse the pair with "
        "raise_exception('...')",
    ),
    Shape(
        "a tool call with an OpenAI-style string id (call_ + 24 characters)",
        "tool_calls",
        [_ASK, _calls("", _call("call_Hx8GjKq2mWv5RtY1nBzP3aLc"))],
        "accept any string id (write it as it is), or refuse other forms with raise_exception('...')",
    ),
    Shape(
        "a tool call with an integer-looking string id",
        "tool_calls",
        [_ASK, _calls("", _call("0"))],
        "accept any string id (write it as it is), or refuse other forms with raise_exception('...')",
    ),
    Shape(
        "parallel tool calls with content: null and their results",
        "tool_role",
        [
            _ASK,
            _calls(None, _call(_NINE), _call("call00002", "get_time", '{"city": "Paris"}')),
            _result(_NINE, name="get_weather"),
            _result("call00002", "noon", name="get_time"),
            assistant("Sunny at noon."),
        ],
        _NULL_CONTENT,
    ),
    Shape(
        "a tool result without a name field (the OpenAI form)",
        "tool_role",
        [_ASK, _calls("", _call(_NINE)), _result(_NINE)],
        "find the tool's name from the call with the same tool_call_id, or leave it out; the OpenAI form "
        "has no name on tool messages",
    ),
    Shape(
        "a tool exchange on a later request without tools (clients send tools with the first only)",
        "tool_role",
        [
            _ASK,
            _calls("", _call(_NINE)),
            _result(_NINE, name="get_weather"),
            assistant("Sunny."),
            user("Thanks"),
        ],
        "render tool calls and results without reading `tools`: later requests of a conversation often "
        "carry none",
        tools=None,
    ),
)


def tools_for(conversation: Conversation) -> list[dict[str, Any]]:
    """Definitions of the tools a conversation calls, for rendering it with ``tools=``."""
    names = sorted(
        {
            str(call["function"]["name"])
            for message in conversation
            for call in message.get("tool_calls") or []
            if isinstance(call, dict) and "function" in call
        }
    )
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": f"The {name} tool.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
        for name in names
    ]
