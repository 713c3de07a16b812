"""Comparing a shipped template with a reference format over a deterministic sample of conversations.

The sample: the plain conversations of :mod:`templatecheck.conversation`, a derandomized hypothesis draw of
:func:`templatecheck.strategies.conversations` (whitespace, look-alike control tokens, non-BMP text), and,
for templates that read tools or tool calls, a tool call with its result, with and without tool
definitions. A conversation that ends with the user or a tool result is rendered with and without the
generation prompt; one that ends with a reply, without.

A leading BOS is removed from both renderings before they are compared: whether BOS comes from the template
or from the tokenizer is the ``double_bos`` check's concern, and formats differ only in who writes it. The
reference follows the template's :class:`Policy` (its default system prompt, the wording the format leaves
free), so that what differs is the format.
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
class Policy:
    """What the template decides where the format leaves the choice to it, learnt from its own renderings.

    The reference follows it, so that the comparison sees the format and not the policy (the policy is the
    ``default_system_prompt`` and ``clock`` checks' to report).
    """

    #: The system message the template behaves as if it were given, in conversations that have none (a
    #: default system prompt): the reference renders those conversations with it.
    default_system: str | None = None
    #: What the template writes where a system message's text would go, for a conversation without one ("" for
    #: nothing): the default system prompt, when that is all it is; the classification looks for it.
    injected: str = ""
    #: Template variables of the run (``--tc-template-var``), which the reference receives too.
    variables: Mapping[str, Any] = field(default_factory=dict)
    #: The policy was learnt from the template: a format's own default system prompt (Qwen 2.5's) then gives
    #: way to the template's (``default_system``, or none).
    learnt: bool = False
    #: The wording the format leaves free, as the template writes it: ``variable -> value`` (see
    #: :class:`~templatecheck.formats.base.Free`).
    free: Mapping[str, str] = field(default_factory=dict)

    def renderer_variables(self) -> dict[str, Any]:
        """What the reference renderer receives: the run's variables, and the template's default system
        prompt (``default_system_prompt``, ``""`` for none) once learnt."""
        learnt = {"default_system_prompt": self.default_system or ""} if self.learnt else {}
        return {**learnt, **self.variables, **self.free}


@dataclass(frozen=True)
class Reference:
    """A format with everything it renders with: BOS/EOS, the template's policy, the free wording read."""

    fmt: Format
    special: Mapping[str, str]
    policy: Policy = field(default_factory=Policy)

    @property
    def bos(self) -> str:
        return self.special.get("bos_token", "")

    def messages(self, case: Case) -> list[dict[str, Any]]:
        """The case's messages as the reference renders them: with the template's default system prompt."""
        messages = [dict(m) for m in case.messages]
        default = self.policy.default_system
        if default is not None and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": default})
        return messages

    def render(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> str:
        """The reference text, leading BOS removed; raises :class:`Unsupported`."""
        text = self.fmt.render(
            [dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            tools=[dict(t) for t in tools] if tools else None,
            bos_token=self.bos,
            eos_token=self.special.get("eos_token", ""),
            now=PINNED_CLOCK,
            **self.policy.renderer_variables(),
        )
        return comparable(text, self.bos)


@dataclass(frozen=True)
class Difference:
    """One rendering on which the template and the reference differ (leading BOS removed from both)."""

    case: Case
    reference: str
    template: str
    #: The messages the reference rendered (the case's, aligned with the template's policy).
    messages: tuple[Message, ...] = ()

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
    #: How the reference followed the template's policy: what it did, and in how many renderings
    #: (``"default system prompt 'You are a helpful assistant.'" -> 98``).
    aligned: Counter[str] = field(default_factory=Counter)

    def skipped_summary(self) -> str:
        """Why conversations were not compared, most frequent first, with counts."""
        parts = [f"{why} ({n})" for why, n in self.unsupported.most_common(3)]
        rest = sum(self.unsupported.values()) - sum(n for _, n in self.unsupported.most_common(3))
        if rest:
            parts.append(f"other reasons ({rest})")
        if self.not_rendered:
            parts.append(f"the template does not render the conversation ({self.not_rendered})")
        return "; ".join(parts)

    def aligned_summary(self) -> str:
        """How the reference followed the template's policy, with the renderings each choice applied to."""
        return "; ".join(f"{what} (in {n} of {self.compared})" for what, n in self.aligned.most_common())


Render = Callable[[Case], str]


def compare(
    fmt: Format,
    render_template: Render,
    cases: Sequence[Case],
    special: Mapping[str, str],
    policy: Policy | None = None,
) -> Comparison:
    """Render every case with ``fmt`` and with the template; collect the differences (leading BOS removed).

    ``render_template`` raises :class:`~templatecheck.render.RenderError` for what the template refuses;
    ``special`` holds ``bos_token`` and ``eos_token``. The reference follows ``policy``: the template's default
    system prompt, and the wording the format leaves free as the template writes it.
    """
    reference = Reference(fmt, special, policy or Policy())
    result = Comparison()
    for case in cases:
        messages = reference.messages(case)
        try:
            expected = reference.render(
                messages, add_generation_prompt=case.add_generation_prompt, tools=case.tools
            )
        except Unsupported as why:
            result.unsupported[str(why)] += 1
            continue
        except Exception as exc:  # a bug in the format, not in the template under test
            result.broken = f"the {fmt.name} reference renderer raised {type(exc).__name__}: {exc}"
            return result
        try:
            actual = comparable(render_template(case), reference.bos)
        except RenderError:
            result.not_rendered += 1
            continue
        result.compared += 1
        if len(messages) > len(case.messages):
            result.aligned[f"default system prompt {reference.policy.default_system!r}"] += 1
        for slot in fmt.free:
            if slot.variable in reference.policy.free:
                result.aligned[f"{slot.what} {reference.policy.free[slot.variable]!r}"] += 1
        if actual != expected:
            result.differences.append(Difference(case, expected, actual, tuple(messages)))
    return result
