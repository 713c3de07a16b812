"""Hypothesis strategies for conversations, biased toward what breaks templates.

``conversations()`` draws system/user/assistant/tool turns, tool definitions, assistant tool calls (arguments
as a dict or a JSON string, single or parallel, ids of the forms clients send, ``content: null`` or text next
to them), tool results (strings, JSON strings and dicts, with or without ``name``), list-of-parts content,
empty content, ``name`` fields on user turns and ``reasoning_content`` (also on reasoning-only replies), as
OpenAI-compatible clients send them, with
text that has leading and trailing whitespace, ``\\r\\n``, Jinja syntax, control-token look-alikes, quotes and
characters outside the BMP. ``Support`` limits the draw to what a template supports (see
:mod:`templatecheck.capabilities`). Everything shrinks toward one short user turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from templatecheck.conversation import Conversation, Message

#: Fragments that have broken real templates: whitespace a template may trim, Jinja syntax it may evaluate,
#: markup it may confuse with its own, quotes that break hand-built JSON, characters outside the BMP.
TRICKY_FRAGMENTS = (
    " ",
    "\n",
    "\r\n",
    "\t",
    "  ",
    "\n\n",
    "{{ x }}",
    "{% if %}",
    "{#",
    "<|im_end|>",
    "<|eot_id|>",
    "</s>",
    "[INST]",
    "<tool_call>",
    "'",
    '"',
    "\\",
    "None",
    "😀",
    "𝔘",
    "é",
)

WORDS = ("hello", "Paris", "42", "yes", "the", "answer", "x", "weather", "city")


@dataclass(frozen=True)
class Support:
    """What a conversation may contain: the parts of the chat format a template supports."""

    system: bool = True
    tools: bool = True
    tool_calls: bool = True
    tool_role: bool = True
    list_content: bool = True
    string_arguments: bool = True
    object_arguments: bool = True
    #: ``content: null`` next to tool calls (what OpenAI clients send), else ``""``.
    null_content: bool = True
    #: Tool-call ids of every form clients send (``call_…``, ``"0"``), else only 9 alphanumerics (Mistral's).
    any_call_ids: bool = True
    #: ``name`` fields on user messages.
    names: bool = True
    #: Tool results without ``name`` (the OpenAI form), else each names its tool.
    nameless_results: bool = True
    #: ``reasoning_content`` on assistant replies, and reasoning-only replies (empty content).
    reasoning: bool = True
    #: Tool results given as a dict (a transformers extension), else as its JSON string.
    dict_results: bool = True
    #: Assistant turns with more than one tool call, else one call per turn.
    parallel_calls: bool = True
    #: Text next to tool calls in one assistant turn, else calls with empty (or null) content.
    content_with_calls: bool = True

    @classmethod
    def plain(cls) -> Support:
        """Only system, user and assistant turns with string content."""
        return cls(
            tools=False,
            tool_calls=False,
            tool_role=False,
            list_content=False,
            null_content=False,
            names=False,
            reasoning=False,
            dict_results=False,
        )


#: A small alphabet with what breaks templates and tokenizers: printable ASCII, control characters, unusual
#: spaces and line breaks, accents, CJK, and characters outside the BMP. Drawing from an explicit alphabet
#: spares Hypothesis building its Unicode tables, which takes seconds in a directory without ``.hypothesis``.
SAMPLE_ALPHABET = (
    "".join(chr(c) for c in range(32, 127))
    + "\t\n\r\x0b\x0c\x1f\x7f\u00a0\u00e9\u00df\u200b\u2028\u4e2d\U0001f600\U0001d518"
)


def text(
    *, min_size: int = 0, max_size: int = 40, alphabet: str | None = SAMPLE_ALPHABET
) -> st.SearchStrategy[str]:
    """Message text: mostly plain words, with template-breaking fragments mixed in.

    The text between fragments is drawn from ``alphabet``, or from all of Unicode with ``alphabet=None``.
    """
    word = st.sampled_from(WORDS)
    free = st.text(max_size=4) if alphabet is None else st.text(alphabet, max_size=4)
    piece = st.one_of(word, word, st.sampled_from(TRICKY_FRAGMENTS), free)
    joined = st.lists(piece, min_size=1 if min_size else 0, max_size=max_size // 4 + 1).map("".join)
    return joined.filter(lambda s: len(s) >= min_size) if min_size else joined


def _name() -> st.SearchStrategy[str]:
    return st.sampled_from(["get_weather", "search", "add", "lookup_city"])


def tool_definitions() -> st.SearchStrategy[list[dict[str, Any]]]:
    """JSON-schema tool definitions, with descriptions that may carry quotes and newlines."""

    def make(name: str, description: str, param: str) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {param: {"type": "string", "description": description}},
                    "required": [param],
                },
            },
        }

    one = st.builds(make, _name(), text(max_size=24), st.sampled_from(["city", "query", "a"]))
    return st.lists(one, min_size=1, max_size=2, unique_by=lambda t: t["function"]["name"])


def _arguments(support: Support) -> st.SearchStrategy[dict[str, Any] | str]:
    values = st.dictionaries(
        st.sampled_from(["city", "query", "n"]),
        st.one_of(text(max_size=12), st.integers()),
        min_size=1,
        max_size=2,
    )
    forms: list[st.SearchStrategy[Any]] = []
    if support.object_arguments:
        forms.append(values)
    if support.string_arguments:
        forms.append(values.map(lambda v: json.dumps(v, ensure_ascii=False)))
    return st.one_of(*forms)


def nine_character_id(index: int, k: int) -> str:
    """A tool-call id of 9 alphanumerics (the form Mistral's formats require), unique per call."""
    return f"c{index:04d}{k:04d}"


def call_id(form: int, index: int, k: int) -> str:
    """A tool-call id in one of the forms clients send: OpenAI's ``call_`` + 24 characters, an
    integer-looking string, a short custom one, and 9 alphanumerics."""
    if form == 0:
        return f"call_{index}{k}Hx8GjKq2mWv5RtY1nBzP3a"[:29]
    if form == 1:
        return str(index * 2 + k)
    if form == 2:
        return f"call_{index}_{k}"
    return nine_character_id(index, k)


def _result(support: Support) -> st.SearchStrategy[Any]:
    forms: list[st.SearchStrategy[Any]] = [text(min_size=1, max_size=20), st.just('{"temperature": 21}')]
    if support.dict_results:
        forms.append(st.builds(lambda sky: {"temperature": 21, "sky": sky}, text(min_size=1, max_size=8)))
    return st.one_of(*forms)


@st.composite
def tool_exchange(draw: st.DrawFn, support: Support, index: int) -> list[Message]:
    """An assistant turn with one or more tool calls, then (if supported) one tool result per call."""
    calls: list[dict[str, Any]] = []
    form = draw(st.integers(0, 3)) if support.any_call_ids else 3
    for k in range(draw(st.integers(min_value=1, max_value=2 if support.parallel_calls else 1))):
        calls.append(
            {
                "id": call_id(form, index, k),
                "type": "function",
                "function": {"name": draw(_name()), "arguments": draw(_arguments(support))},
            }
        )
    empty = [st.just(None)] if support.null_content else []
    worded = [text(max_size=20)] if support.content_with_calls else []
    content = draw(st.one_of(st.just(""), *empty, *worded))
    messages: list[Message] = [{"role": "assistant", "content": content, "tool_calls": calls}]
    if support.tool_role:
        named = not support.nameless_results or draw(st.booleans())
        for call in calls:
            result: Message = {"role": "tool", "tool_call_id": call["id"], "content": draw(_result(support))}
            if named:
                result["name"] = call["function"]["name"]
            messages.append(result)
    return messages


@st.composite
def _reply(draw: st.DrawFn, support: Support, content: st.SearchStrategy[str]) -> Message:
    """An assistant reply; with reasoning supported, sometimes with ``reasoning_content``, or with it only."""
    shape = draw(st.integers(0, 5)) if support.reasoning else 0
    if shape < 4:
        return {"role": "assistant", "content": draw(content)}
    thought = draw(text(min_size=1, max_size=16))
    return {"role": "assistant", "content": draw(content) if shape == 4 else "", "reasoning_content": thought}


def _content(support: Support, content: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    if not support.list_content:
        return content
    parts = content.map(lambda t: [{"type": "text", "text": t}])
    return st.one_of(content, content, content, parts)


@st.composite
def conversations(
    draw: st.DrawFn,
    *,
    support: Support | None = None,
    system: bool | None = None,
    max_turns: int = 3,
    end_with_user: bool = True,
    content: st.SearchStrategy[str] | None = None,
) -> Conversation:
    """A well-formed conversation: an optional system message, then user turns each answered by the assistant
    (directly, or through tool calls and their results when ``support`` allows).

    ``system=None`` draws whether there is a system message (when supported). With ``end_with_user`` the last
    turn is the user's, ready for a generation prompt; otherwise the conversation ends with an assistant reply.
    """
    support = support if support is not None else Support.plain()
    text_strategy = content if content is not None else text()
    messages: list[Message] = []
    want_system = system if system is not None else draw(st.booleans())
    if want_system and support.system:
        messages.append({"role": "system", "content": draw(text_strategy)})
    turns = draw(st.integers(min_value=1, max_value=max_turns))
    for i in range(turns):
        turn: Message = {"role": "user", "content": draw(_content(support, text_strategy))}
        if support.names and draw(st.integers(0, 7)) == 0:
            turn["name"] = draw(st.sampled_from(["alice", "user_2"]))
        messages.append(turn)
        if i == turns - 1 and end_with_user:
            break
        if support.tool_calls and draw(st.integers(0, 3)) == 0:
            messages.extend(draw(tool_exchange(support, i)))
        messages.append(draw(_reply(support, text_strategy)))
    return messages
