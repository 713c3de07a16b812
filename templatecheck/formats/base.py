"""What every reference format shares: the renderer signature, the format value, and ``Unsupported``.

A reference renderer is plain Python string building, written from a family's published format, never from
(or by running) a model's own template. It takes the inputs a chat template takes and returns the text the
format prescribes; for an input its source does not define (a role, tools, a message shape) it raises
:class:`Unsupported`, and the comparison skips that conversation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

Messages = Sequence[Mapping[str, Any]]
Tools = Sequence[Mapping[str, Any]]


class Unsupported(Exception):
    """The reference format does not define this input; the comparison skips the conversation."""


class ReferenceRenderer(Protocol):
    """The signature of a reference renderer: the variables a chat template receives."""

    def __call__(
        self,
        messages: Messages,
        *,
        add_generation_prompt: bool = False,
        tools: Tools | None = None,
        bos_token: str = "",
        eos_token: str = "",
        now: datetime = ...,
        **variables: Any,
    ) -> str: ...


@dataclass(frozen=True)
class Evidence:
    """What family detection reads about a model: tokenizer, templates, ``config.json``."""

    #: Added and special token strings of the tokenizer (``[INST]``, ``<|im_start|>``, ...).
    tokens: frozenset[str] = frozenset()
    #: The text of every chat template of the model.
    templates: tuple[str, ...] = ()
    #: ``config.json``: ``model_type``, ``architectures``, ...
    config: Mapping[str, Any] = field(default_factory=dict)
    #: ``"sentencepiece"`` (Metaspace / ``tokenizer.model``), ``"tekken"``, ``"bytelevel"`` or ``"unknown"``.
    tokenizer_kind: str = "unknown"

    def writes(self, *literals: str) -> bool:
        """Some template contains every one of ``literals``."""
        return any(all(literal in source for literal in literals) for source in self.templates)

    def confirms(self, head: str, end: str) -> str | None:
        """How the evidence shows a family whose turns open with ``head`` and end with ``end``: the template
        writes both, or writes ``head`` and the tokenizer has ``end`` (a template that lost its end-of-turn
        token is still of the family); ``None`` otherwise."""
        if self.writes(head, end):
            return f"the template writes {head} and {end}"
        if self.writes(head) and end in self.tokens:
            return f"the template writes {head}, and the tokenizer has {end}"
        return None

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type") or "")


#: A detector returns why the evidence points to its family (shown to the user), or ``None``. Detection asks
#: every detector about the templates first, then again with ``templates=()`` so that detectors can fall back
#: on the tokenizer's tokens (decide from tokens only when ``evidence.templates`` is empty).
Detector = Callable[[Evidence], "str | None"]


@dataclass(frozen=True)
class Free:
    """Wording a format leaves to the template (a date, a sentence of a preamble, a space).

    The ``reference`` check reads the value once per template, with ``pattern`` (one group), from the
    template's own renderings of a few plain conversations, and passes it to the renderer as the keyword
    ``variable``; without a match the renderer writes its default.
    """

    variable: str
    #: A regular expression with one group; ``{eos}`` stands for the tokenizer's EOS token.
    pattern: str
    #: What the value is, for the report: ``date of the system preamble``.
    what: str

    def read(self, rendering: str, eos: str = "") -> str | None:
        """The value in ``rendering``, or ``None``."""
        if "{eos}" in self.pattern and not eos:
            return None
        found = re.search(self.pattern.replace("{eos}", re.escape(eos)), rendering)
        return found.group(1) if found else None


@dataclass(frozen=True)
class Format:
    """A reference format family: its name, its renderer, and how to recognise a model of the family.

    ``render``'s docstring names the published source the renderer was written from. ``detect`` is optional:
    a format without it is used only when asked for by name (``--tc-reference NAME``).
    """

    name: str
    render: ReferenceRenderer
    summary: str
    detect: Detector | None = None
    aliases: tuple[str, ...] = ()
    #: The format writes message text without its leading and trailing whitespace (Meta's Llama reference
    #: code and Gemma's templates strip it), so a template that trims is faithful to it.
    strips_text: bool = False
    #: What the format leaves to the template (see :class:`Free`).
    free: tuple[Free, ...] = ()

    @property
    def source(self) -> str:
        """The renderer's docstring: where the format is specified and what it leaves undefined."""
        return (self.render.__doc__ or "").strip()


# ------------------------------------------------------------------------------------------------ helpers


def text(message: Mapping[str, Any], family: str) -> str:
    """The message's content as a string; a list of content parts is not defined by the text formats."""
    content = message.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise Unsupported(f"{family} defines text content only, not {type(content).__name__} content")
    return content


def roles(messages: Messages, allowed: Sequence[str], family: str) -> None:
    """Raise :class:`Unsupported` for a role the format has no place for."""
    for message in messages:
        role = message.get("role")
        if role not in allowed:
            raise Unsupported(f"{family} has no place for a {role!r} message")


def no_tools(tools: Tools | None, messages: Messages, family: str) -> None:
    """Raise :class:`Unsupported` when tools, tool calls or tool results are given to a format without them."""
    if tools:
        raise Unsupported(f"{family} defines no tool definitions")
    for message in messages:
        if message.get("tool_calls") or message.get("role") in ("tool", "ipython"):
            raise Unsupported(f"{family} defines no tool calls or tool results")


def tool_call(call: Mapping[str, Any]) -> tuple[str, Any]:
    """``(name, arguments)`` of an OpenAI-style tool call (``{"function": {...}}`` or flat)."""
    function = call.get("function", call)
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise Unsupported(f"a tool call without a function name: {call!r}")
    return function["name"], function.get("arguments", {})


def arguments_json(arguments: Any) -> str:
    """Tool-call arguments as JSON text: a string is taken as JSON already, anything else is encoded."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` as chat formats write JSON: non-ASCII characters kept."""
    return json.dumps(value, ensure_ascii=False, **kwargs)


__all__ = [
    "Detector",
    "Evidence",
    "Format",
    "Free",
    "Messages",
    "ReferenceRenderer",
    "Tools",
    "Unsupported",
]
