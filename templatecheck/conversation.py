"""Conversations as plain values: lists of message dicts, exactly what chat templates receive."""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
Conversation = list[Message]


def system(content: str) -> Message:
    return {"role": "system", "content": content}


def user(content: Any) -> Message:
    return {"role": "user", "content": content}


def assistant(content: str) -> Message:
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
