"""Tool calls in a template's own format: how the template writes one, and whether a reply holds one.

The format is learnt from the template itself: it renders a conversation whose assistant turn calls
``get_weather``; the JSON object that names the function, the key of its arguments and the text the template
writes before it (``<tool_call>`` for Hermes, ``[TOOL_CALLS][`` for Mistral, nothing for Llama 3.1) are what a
reply must reproduce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from templatecheck import conversation as conv
from templatecheck.probeset import WEATHER, Call, normalize
from templatecheck.render import RenderError

if TYPE_CHECKING:
    from templatecheck.model import Subject

_NAME = "get_weather"


@dataclass(frozen=True)
class CallFormat:
    """Where a call starts (``opener``, may be empty) and the keys of its JSON object."""

    opener: str
    name_key: str
    arguments_key: str
    example: str


def call_format(subject: Subject) -> CallFormat | None:
    """The template's tool-call format, or ``None`` when it renders no tool definitions or no calls."""
    tools = [conv.WEATHER_TOOL]
    question = [conv.user(WEATHER.format(city="Paris"))]
    call = {"type": "function", "function": {"name": _NAME, "arguments": {"city": "Paris"}}}
    answered = [*question, {"role": "assistant", "content": "", "tool_calls": [call]}]
    try:
        prompt = subject.render(question, add_generation_prompt=True, tools=tools)
        full = subject.render(answered, add_generation_prompt=False, tools=tools)
    except RenderError:
        return None
    if _NAME not in prompt or not full.startswith(prompt):
        return None
    turn = full[len(prompt) :]
    found = _first_object(turn, lambda obj: _NAME in obj.values())
    if found is None:
        return None
    start, obj = found
    name_key = next(k for k, v in obj.items() if v == _NAME)
    arguments_key = next((k for k, v in obj.items() if "Paris" in json.dumps(v)), "arguments")
    return CallFormat(turn[:start].strip(), name_key, arguments_key, turn.strip())


def parse_call(reply: str, fmt: CallFormat) -> Call | None:
    """The first call in ``reply`` (special tokens kept) written in ``fmt``, or ``None``."""
    at = reply.find(fmt.opener) if fmt.opener else 0
    if at < 0:
        return None
    found = _first_object(reply[at + len(fmt.opener) :], lambda obj: isinstance(obj.get(fmt.name_key), str))
    if found is None:
        return None
    obj = found[1]
    arguments = obj.get(fmt.arguments_key, {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return Call(str(obj[fmt.name_key]), arguments)


def same_call(got: Call, expected: Call) -> bool:
    """Same function and arguments, string values compared as probe answers are."""

    def norm(value: Any) -> Any:
        return normalize(value) if isinstance(value, str) else value

    return got.name == expected.name and {k: norm(v) for k, v in got.arguments.items()} == {
        k: norm(v) for k, v in expected.arguments.items()
    }


def _first_object(text: str, accept: Any) -> tuple[int, dict[str, Any]] | None:
    decoder = json.JSONDecoder()
    at = text.find("{")
    while at >= 0:
        try:
            obj, _ = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and accept(obj):
            return at, obj
        at = text.find("{", at + 1)
    return None
