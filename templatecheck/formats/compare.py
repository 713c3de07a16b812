"""Comparing a shipped template with a reference format over a deterministic sample of conversations.

The sample: the plain conversations of :mod:`templatecheck.conversation`, a derandomized hypothesis draw of
:func:`templatecheck.strategies.conversations` (whitespace, look-alike control tokens, non-BMP text), and,
for templates that read tools or tool calls, a tool call with its result, with and without tool
definitions. A conversation that ends with the user or a tool result is rendered with and without the
generation prompt; one that ends with a reply, without.

A leading BOS is removed from both renderings before they are compared: whether BOS comes from the template
or from the tokenizer is the ``double_bos`` check's concern, and formats differ only in who writes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from templatecheck import conversation as conv
from templatecheck.formats.base import Format, Unsupported
from templatecheck.render import PINNED_CLOCK, RenderError

Message = Mapping[str, Any]


@dataclass(frozen=True)
class Case:
    """One rendering to compare: a conversation, the generation-prompt flag and the tools."""

    name: str
    messages: tuple[Message, ...]
    add_generation_prompt: bool = False
    tools: tuple[Mapping[str, Any], ...] | None = None

    def describe(self) -> str:
        tools = f", tools: {', '.join(_tool_names(self.tools))}" if self.tools else ""
        head = f"{self.name} (add_generation_prompt={self.add_generation_prompt}{tools})"
        return f"{head}:\n{conv.describe([dict(m) for m in self.messages])}"

    def with_tools(self, tools: Sequence[Mapping[str, Any]] | None) -> Case:
        return Case(self.name, self.messages, self.add_generation_prompt, tuple(tools) if tools else None)


def _tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(t.get("function", t).get("name")) for t in tools]


CALL_ID = "call00001"  # nine letters and digits: the id shape Mistral's formats require

TOOL_EXCHANGE: tuple[Message, ...] = (
    conv.user("What is the weather in Paris?"),
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": CALL_ID,
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": CALL_ID, "name": "get_weather", "content": '{"temperature": 18}'},
)
TOOL_FOLLOW_UP: tuple[Message, ...] = (
    *TOOL_EXCHANGE,
    conv.assistant("It is 18 degrees in Paris."),
    conv.user("Thanks!"),
)


def _variants(name: str, messages: Sequence[Message]) -> list[Case]:
    frozen = tuple(messages)
    if frozen and frozen[-1].get("role") == "assistant":
        return [Case(name, frozen, False)]
    return [Case(name, frozen, False), Case(name, frozen, True)]


def drawn(examples: int) -> tuple[tuple[Message, ...], ...]:
    """``examples`` plain conversations (half ending with the user, half with a reply), the same in every run:
    the suite's one hypothesis draw (:func:`templatecheck.sample.sample`), shared with the other checks."""
    if examples <= 0:
        return ()
    from templatecheck.sample import sample
    from templatecheck.strategies import Support

    prompts = sample(Support.plain(), end_with_user=True, count=(examples + 1) // 2)
    replies = sample(Support.plain(), end_with_user=False, count=examples // 2)
    return tuple(tuple(conversation) for conversation in [*prompts, *replies])


#: A second user turn after a reply: shows where a format puts the system prompt (first or last turn).
TWO_TURNS: tuple[Message, ...] = (
    *conv.SYSTEM_USER_ASSISTANT,
    conv.user("And of Italy?"),
)


def cases(examples: int, *, tool_calls: bool) -> list[Case]:
    """The sample: plain conversations, ``examples`` drawn ones, and tool exchanges when ``tool_calls``."""
    plain = {**conv.PLAIN, "system + two user turns": TWO_TURNS}
    out = [case for name, messages in plain.items() for case in _variants(name, messages)]
    for i, messages in enumerate(drawn(examples)):
        out += _variants(f"drawn conversation #{i + 1}", messages)
    if tool_calls:
        for name, messages in (("tool call", TOOL_EXCHANGE), ("tool call and follow-up", TOOL_FOLLOW_UP)):
            for case in _variants(name, messages):
                out += [case, case.with_tools([conv.WEATHER_TOOL])]
    return out


def comparable(text: str, bos_token: str) -> str:
    """``text`` without a leading BOS (see the module docstring)."""
    return text[len(bos_token) :] if bos_token and text.startswith(bos_token) else text


@dataclass(frozen=True)
class Difference:
    case: Case
    reference: str
    template: str

    @property
    def size(self) -> tuple[bool, int, int]:
        """Smaller is easier to read: a named conversation before a drawn one, fewer messages, less text."""
        text = sum(len(str(m.get("content") or "")) for m in self.case.messages)
        return self.case.name.startswith("drawn"), len(self.case.messages), text


@dataclass
class Comparison:
    """What comparing one template with one format found."""

    compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    #: Why the reference skipped conversations: its :class:`Unsupported` messages, counted.
    unsupported: Counter[str] = field(default_factory=Counter)
    #: Conversations the template itself refused or failed on (the ``renders`` check's concern).
    not_rendered: int = 0
    #: An exception of the reference renderer other than :class:`Unsupported` (a bug in the format).
    broken: str | None = None

    def skipped_summary(self) -> str:
        """Why conversations were not compared, most frequent first, with counts."""
        parts = [f"{why} ({n})" for why, n in self.unsupported.most_common(3)]
        rest = sum(self.unsupported.values()) - sum(n for _, n in self.unsupported.most_common(3))
        if rest:
            parts.append(f"other reasons ({rest})")
        if self.not_rendered:
            parts.append(f"the template does not render the conversation ({self.not_rendered})")
        return "; ".join(parts)


Render = Callable[[Case], str]


def compare(
    fmt: Format, render_template: Render, cases: Sequence[Case], special: Mapping[str, str]
) -> Comparison:
    """Render every case with ``fmt`` and with the template; collect the differences (leading BOS removed).

    ``render_template`` raises :class:`~templatecheck.render.RenderError` for what the template refuses;
    ``special`` holds ``bos_token`` and ``eos_token``.
    """
    bos, eos = special.get("bos_token", ""), special.get("eos_token", "")
    result = Comparison()
    for case in cases:
        try:
            expected = fmt.render(
                [dict(m) for m in case.messages],
                add_generation_prompt=case.add_generation_prompt,
                tools=[dict(t) for t in case.tools] if case.tools else None,
                bos_token=bos,
                eos_token=eos,
                now=PINNED_CLOCK,
            )
        except Unsupported as why:
            result.unsupported[str(why)] += 1
            continue
        except Exception as exc:  # a bug in the format, not in the template under test
            result.broken = f"the {fmt.name} reference renderer raised {type(exc).__name__}: {exc}"
            return result
        try:
            actual = render_template(case)
        except RenderError:
            result.not_rendered += 1
            continue
        result.compared += 1
        if comparable(actual, bos) != comparable(expected, bos):
            result.differences.append(Difference(case, comparable(expected, bos), comparable(actual, bos)))
    return result
