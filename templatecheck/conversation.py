"""Conversations as plain values: lists of message dicts, exactly what chat templates receive."""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
Conversation = list[Message]


def system(content: str) -> Message:
    return {"role": "system", "content": content}


def user(content: str) -> Message:
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


def describe(conversation: Conversation) -> str:
    """A conversation, one message a line, for failure messages."""
    lines = []
    for message in conversation:
        rest = {k: v for k, v in message.items() if k not in ("role", "content")}
        extra = f" {rest}" if rest else ""
        lines.append(f"  {message.get('role')}: {message.get('content')!r}{extra}")
    return "\n".join(lines)
