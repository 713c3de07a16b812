"""Template layer, as an agent drives a template: the prompts of its loop, and the turns the template closes.

An agent posts a growing list of messages, each time with the generation prompt on, and appends the reply it
got: its text or its tool calls, then the tool results or the next user turn. :func:`agent_loop` checks that
each prompt plus the reply the model writes is where the next prompt starts; :func:`closed_turns` checks that
every turn the template opens is closed once, with the end-of-turn marker the template itself writes.

Boundaries another check already looks at keep their owner: a prompt after a user turn is
``generation_prompt``'s, history once a final reply is followed is ``prefix_stability``'s (one root cause
fails once); this module owns the steps after tool results and after tool-call replies.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from templatecheck import conversation as conv
from templatecheck.capabilities import CALL_IDS, Capabilities, probe
from templatecheck.causes import defect, policy
from templatecheck.checks import template as tpl
from templatecheck.checks.base import check
from templatecheck.model import Subject
from templatecheck.render import RenderError
from templatecheck.result import Finding, Layer, note, skipped
from templatecheck.text import diff

#: One piece of turn markup: a control token (``<|im_end|>``, ``[INST]``, ``</s>``) or a tag
#: (``<end_of_turn>``, ``<|turn>``, ``<turn|>``).
PIECE = re.compile(
    r"<\|[^|<>\s]{1,40}\|>|<｜[^｜<>]{1,40}｜>|\[/?[A-Z][A-Z_]{1,20}\]|<\|?/?[A-Za-z_][^<>\s]{0,40}>"  # noqa: RUF001
)


def pieces(text: str) -> list[str]:
    """The markup pieces of ``text``, in order."""
    return PIECE.findall(text)


def _call(call_id: str, city: str, caps: Capabilities) -> dict[str, Any]:
    arguments: Any = {"city": city} if caps.object_arguments else json.dumps({"city": city})
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def _calls(content: str, caps: Capabilities, *cities: str) -> conv.Message:
    """An assistant turn calling ``get_weather`` once per city (content as clients send it with calls)."""
    calls = [_call(CALL_IDS[i], city, caps) for i, city in enumerate(cities)]
    return {"role": "assistant", "content": content, "tool_calls": calls}


def _result(i: int, content: str) -> conv.Message:
    return {"role": "tool", "tool_call_id": CALL_IDS[i], "name": "get_weather", "content": content}


def _opening(caps: Capabilities) -> conv.Conversation:
    return [conv.system(conv.SYSTEM_TEXT)] if caps.system else []


# ------------------------------------------------------------------------------------------------ agent loop

TOOL_TURN_DIFFERS = defect(
    "agent_loop.tool_turn_differs",
    "an agent sends the prompt rendered with the tool result last, then the one with the reply after it: a tool "
    "turn closed differently in the two is a prefix-cache miss at every tool step, and the model sees a closing "
    "it was not trained on",
)
HEADER_AFTER_TOOL = defect(
    "agent_loop.header_after_tool",
    "after a tool result the model is prompted with a header that differs from the one its reply has once the "
    "conversation goes on; after a user turn they agree",
)
THINKING_REWRITTEN = policy(
    "agent_loop.thinking_rewritten",
    "reasoning formats open a thinking block in the prompt that history drops, or drop the analysis of earlier "
    "turns, as their models were trained; a prefix cache must re-render at every step",
)
CALL_TURN_CHANGED = defect(
    "agent_loop.call_turn_changed",
    "a tool-call reply that renders differently once its results follow is not the text the model wrote: the "
    "next prompt is not a continuation of the last one",
)


@dataclass(frozen=True)
class Step:
    """One reply of an agent run: the messages before it (the prompt posted), the reply, and the messages
    up to the next post (``None`` when the run ends with this reply)."""

    run: conv.Conversation
    reply: int
    following: int | None

    @property
    def after_tool(self) -> bool:
        return self.run[self.reply - 1].get("role") == "tool"


def agent_runs(caps: Capabilities) -> list[conv.Conversation]:
    """The conversations an agent builds: a chat, and where the template renders tool calls, a tool loop
    (a call, its result, a reply, a user turn, a call with text, its result, a reply) and parallel calls."""
    runs = [
        [
            *_opening(caps),
            conv.user(conv.USER_TEXT),
            conv.assistant(conv.ASSISTANT_TEXT),
            conv.user("And of Italy?"),
            conv.assistant("Rome."),
            conv.user("Thanks!"),
        ]
    ]
    if caps.tool_calls and caps.tool_role:
        runs.append(
            [
                *_opening(caps),
                conv.user("What is the weather in Paris?"),
                _calls("", caps, "Paris"),
                _result(0, "sunny"),
                conv.assistant(conv.ASSISTANT_TEXT),
                conv.user("And in Rome?"),
                _calls("Let me look it up.", caps, "Rome"),
                _result(0, "rainy"),
                conv.assistant(conv.ASSISTANT_TEXT),
            ]
        )
        if caps.parallel_tool_calls:
            runs.append(
                [
                    conv.user("Weather in Paris and Rome?"),
                    _calls("", caps, "Paris", "Rome"),
                    _result(0, "sunny"),
                    _result(1, "rainy"),
                    conv.assistant(conv.ASSISTANT_TEXT),
                ]
            )
    return runs


def steps(run: conv.Conversation) -> list[Step]:
    """Every reply of ``run`` that follows a post, with the index of the next post."""
    replies = [i for i, m in enumerate(run) if m.get("role") == "assistant" and i > 0]
    found = []
    for n, i in enumerate(replies):
        following: int | None = replies[n + 1] if n + 1 < len(replies) else len(run)
        if following == i + 1:
            following = None  # the run ends with this reply
        found.append(Step(run, i, following))
    return found


def _renders(subject: Subject, run: conv.Conversation) -> list[tuple[conv.Conversation, dict[str, Any]]]:
    """The renders :func:`_judge_step` asks for on ``run``: every post, every reply in history, and the history
    before each reply that follows a tool result."""
    tools: dict[str, Any] = {"tools": subject.client_tools(run)}
    wanted: list[tuple[conv.Conversation, dict[str, Any]]] = []
    for step in steps(run):
        wanted += [
            (run[: step.reply], {**tools, "add_generation_prompt": True}),
            (run[: step.reply + 1], tools),
        ]
        if step.after_tool:
            wanted.append((run[: step.reply], tools))
        if step.following is not None:
            wanted.append((run[: step.following], {**tools, "add_generation_prompt": True}))
    return wanted


def _reply_texts(message: conv.Message) -> list[str]:
    """The texts of a reply the rendering must show: its content, and each call's arguments."""
    found = [message["content"]] if isinstance(message.get("content"), str) and message["content"] else []
    for call in message.get("tool_calls") or []:
        arguments = call["function"]["arguments"]
        found.append(arguments["city"] if isinstance(arguments, dict) else json.loads(arguments)["city"])
    return found


def reply_end(subject: Subject, rendered: str, start: int, message: conv.Message) -> int:
    """Where the model's reply ends in ``rendered`` (it starts at ``start``): just past the end-of-turn marker
    the template writes after the reply's last text, or past the first piece of markup there when the family
    has no marker of its own (Mistral's ``</s>``)."""
    at = start
    for text in _reply_texts(message):
        found = rendered.find(text, at)
        at = found + len(text) if found >= 0 else at
    learnt = markers(subject)
    if learnt is not None:
        end = rendered.find(learnt.end, at)
        return end + len(learnt.end) if end >= 0 else len(rendered)
    match = PIECE.search(rendered, at)
    return match.end() if match else len(rendered)


@check(Layer.TEMPLATE)
def agent_loop(subject: Subject) -> list[Finding]:
    """At every step of an agent loop, the prompt posted (with the generation prompt) plus the reply the model
    writes (as the template renders it, up to its end-of-turn marker) is a prefix of the next step's prompt,
    after tool results and after tool-call replies as after user turns.

    Catches templates that close a tool turn differently when it is the last message (Hermes 3's ``tool_use``:
    ``</tool_response><|im_end|>`` last, ``</tool_response>\\n<|im_end|>`` once a reply follows), that prompt
    differently after a tool result than the reply is written, or that rewrite a tool-call reply once its
    results follow: each a prefix-cache miss and an unseen format at every tool step. A break after a user
    turn, or of history after a final reply, is ``generation_prompt``'s or ``prefix_stability``'s (a note
    here), conventions such as reasoning dropped or a system prompt that moves included. The runs are judged
    again with each of the template's switches set both ways (see ``renders``).
    """
    findings = _agent_loop(subject)
    return findings + tpl.under_switches(subject, _agent_loop, findings)


def _agent_loop(subject: Subject) -> list[Finding]:
    skip = tpl.blank(subject)
    if skip is not None:
        return skip
    runs = agent_runs(probe(subject))
    subject.prefetch_each([r for run in runs for r in _renders(subject, run)])
    found: list[Finding] = []
    for run in runs:
        for step in steps(run):
            try:
                found += _judge_step(subject, step)
            except RenderError:
                continue  # `renders` reports what does not render
    findings = tpl.distinct(found)
    if not findings:
        count = sum(len(steps(run)) for run in runs)
        return [
            note(f"{count} agent steps over {len(runs)} runs: each prompt plus its reply starts the next")
        ]
    return findings


def _judge_step(subject: Subject, step: Step) -> list[Finding]:
    run, k = step.run, step.reply
    tools = {"tools": subject.client_tools(run)}
    posted = subject.render(run[:k], add_generation_prompt=True, **tools)
    history = subject.render(run[: k + 1], **tools)
    shown = f"\nagent run:\n{conv.describe(run)}"
    if not history.startswith(posted):
        return [_with(f, shown) for f in _prompt_break(subject, step, posted, history, tools)]
    if step.following is None:
        return []
    cut = reply_end(subject, history, len(posted), run[k])
    sent = history[:cut]
    following = subject.render(run[: step.following], add_generation_prompt=True, **tools)
    if following.startswith(sent):
        return []
    return [_with(f, shown) for f in _reply_break(subject, step, sent, tools)]


def _with(finding: Finding, shown: str) -> Finding:
    return replace(finding, message=finding.message + shown)


def _prompt_break(
    subject: Subject, step: Step, posted: str, history: str, tools: dict[str, Any]
) -> list[Finding]:
    """The prompt posted at ``step`` is not how the reply's turn starts in history."""
    run, k = step.run, step.reply
    before = subject.render(run[:k], **tools)
    if not step.after_tool:
        # after a user turn the prompt is `generation_prompt`'s: its causes are notes here
        found = tpl.generation_prompt_of(subject, run[:k])
        added = tpl.always_added(subject)
        if found or added is not None:
            return found or [added.finding]  # type: ignore[union-attr]
    if not history.startswith(before):
        closed = _closed_alike(subject, step, before, history)
        if isinstance(closed, Finding):
            return [closed]
        before = closed
    if not posted.startswith(before):
        return [_foreign_rewrite(posted, history)]
    reply_at = history.find(conv.ASSISTANT_TEXT, len(before))
    header = posted[len(before) :]
    turn = history[len(before) : reply_at] if reply_at >= 0 else ""
    if header == turn or reply_at < 0:
        return []
    verdict = tpl.judge_generation_prompt(
        before, posted, history, tpl.reasoning_template(subject.template.source)
    )
    if step.after_tool and verdict is not None and verdict.cause in _after_user_causes(subject):
        return [verdict]  # the same prompt header as after a user turn: `generation_prompt` reports it
    thinking = _without_thinking(header)
    if thinking != header and turn.startswith(thinking):
        after = "a tool result" if step.after_tool else "a user turn"
        return [
            THINKING_REWRITTEN(
                f"after {after} the prompt ends with {header!r}, a thinking block the reply in history does not "
                f"have (it follows {turn!r}): the family's reasoning convention; history is rewritten at every "
                "step"
            )
        ]
    if not step.after_tool:
        return [_foreign_rewrite(posted, history)]
    fix = (
        "write nothing after a tool turn when add_generation_prompt is set: the reply continues the open turn"
        if not turn
        else f"write {turn!r} as the generation prompt after a tool turn, as replies are written in history"
    )
    return [
        HEADER_AFTER_TOOL(
            f"after a tool result the generation prompt is {header!r}, but the reply is written after {turn!r} "
            "in history (after a user turn the two agree)\n"
            + diff(posted, history[: len(posted) + 40], labels=("prompt after the tool result", "history")),
            fix=fix,
        )
    ]


def _closed_alike(subject: Subject, step: Step, before: str, history: str) -> str | Finding:
    """Where the rendering with the last message last (``before``) and the one with the reply after it part:
    ``before`` up to the end-of-turn marker that closes the last message when both close it alike (what
    differs is a header written after it without the flag), else the finding that says why they part."""
    run, k = step.run, step.reply
    same = next((i for i, (a, b) in enumerate(zip(before, history, strict=False)) if a != b), len(before))
    learnt = markers(subject)
    text = run[k - 1].get("content")
    text_at = before.rfind(text) if isinstance(text, str) and text else -1
    if text_at >= 0 and same < text_at:
        return _earlier_rewrite(subject, step, before, history)
    close = before.find(learnt.end, text_at) if learnt is not None and text_at >= 0 else -1
    if learnt is not None and close >= 0 and close + len(learnt.end) <= same:
        return before[: close + len(learnt.end)]
    if not step.after_tool:
        return _foreign_rewrite(before, history)
    reply_at = history.find(conv.ASSISTANT_TEXT, text_at)
    if learnt is not None and close >= 0 and learnt.end not in history[text_at:reply_at]:
        return _foreign_unclosed(learnt.end)
    return _tool_turn_differs(before, history)


def _earlier_rewrite(subject: Subject, step: Step, before: str, history: str) -> Finding:
    """Earlier turns render differently once the reply follows: a convention (`prefix_stability`'s, or the
    text of a reasoning format's earlier turn dropped), else a defect of the agent loop."""
    known = tpl.convention_of(subject, before, history)
    if known is not None:
        return known
    same = next((i for i, (a, b) in enumerate(zip(before, history, strict=False)) if a != b), len(before))
    dropped = next((j for j in range(same, len(before)) if history[same:].startswith(before[j:])), None)
    if dropped is not None and tpl.reasoning_template(subject.template.source):
        return THINKING_REWRITTEN(
            f"history rewrite: {before[same:dropped]!r}, the text of an earlier turn, is dropped once a final "
            "reply follows (the family's reasoning convention: earlier analysis is not kept); history is "
            "rewritten at every step"
        )
    after = "a tool result" if step.after_tool else "a user turn"
    return CALL_TURN_CHANGED(
        f"earlier turns render differently once the reply after {after} follows: the prompt of that step is "
        "not a prefix of the next step's\n"
        + diff(before, history[: len(before) + 40], labels=("prompt", "next")),
        fix="render every earlier turn the same whatever follows",
    )


_THINKING_PIECE = re.compile(r"<[^<>]*think[^<>]*>\s*", re.IGNORECASE)


def _without_thinking(text: str) -> str:
    """``text`` without its thinking tags (``<think>``, ``<|START_THINKING|>``) and their whitespace."""
    return _THINKING_PIECE.sub("", text)


def _foreign_unclosed(end: str) -> Finding:
    return Finding(
        UNCLOSED.severity,
        f"the tool turn is closed with {end!r} when it is the last message, and left open once the reply "
        "follows",
        UNCLOSED.key,
    )


def _foreign_rewrite(posted: str, history: str) -> Finding:
    return Finding(
        tpl.HEADER_MISMATCH.severity,
        "the prompt after a user turn is not how the reply's turn starts in history\n"
        + diff(posted, history[: len(posted) + 40], labels=("prompt", "history")),
        tpl.HEADER_MISMATCH.key,
    )


def _after_user_causes(subject: Subject) -> set[str]:
    try:
        return {f.cause for f in tpl.generation_prompt_of(subject, conv.USER_ONLY)}
    except RenderError:
        return set()


def _tool_turn_differs(before: str, history: str) -> Finding:
    """The tool turn renders differently as the last message (``before``) than once a reply follows."""
    same = next((i for i, (a, b) in enumerate(zip(before, history, strict=False)) if a != b), len(before))
    at = tpl.snap(before, same)
    first = PIECE.search(before, at)
    last = before[at : first.end()] if first else before[at:]
    follows = history[at:]
    again = follows.find(first.group(0)) if first else -1
    closing = follows[: again + len(first.group(0))] if first and again >= 0 else follows[:20]
    anchors = list(PIECE.finditer(before, max(0, at - 200), at))
    context = before[anchors[-1].start() : at] if anchors else before[max(0, at - 20) : at]
    return TOOL_TURN_DIFFERS(
        f"the tool turn ends with {context + last!r} when it is the last message (the prompt an agent sends "
        f"after a tool result) and with {context + closing!r} once the reply follows: the prompt of that step "
        "is not a prefix of the next step's\n"
        + diff(before, history[: len(before) + 40], labels=("tool result last", "reply after it")),
        fix=f"end the tool turn with {context + closing!r} also when it is the last message (it writes "
        f"{context + last!r} there now): the turn then renders the same whatever follows",
    )


def _reply_break(subject: Subject, step: Step, sent: str, tools: dict[str, Any]) -> list[Finding]:
    """The prompt plus the reply (``sent``) is not where the next step's prompt starts."""
    run, k = step.run, step.reply
    assert step.following is not None
    full = subject.render(run[: step.following], **tools)
    if full.startswith(sent):
        return []  # the next prompt's generation prompt rewrites: judged at the next step
    if not run[k].get("tool_calls"):
        # history after a final reply: `prefix_stability`'s boundary
        return _stability_causes(subject, run[: step.following], sent, full, k + 1, tools)
    known = tpl.convention_of(subject, sent, full)
    learnt = markers(subject)
    if known is not None and known.cause == tpl.FINAL_EOS.key and learnt is not None:
        known = None  # the reply was cut at the end-of-turn marker, which history keeps: not that convention
    if known is not None:
        return [known]
    moved = _moved(subject, step)
    if moved:
        return (
            moved  # the system prompt or the tools placed by the last turn: `prefix_stability`'s convention
        )
    return [
        CALL_TURN_CHANGED(
            f"the tool-call reply (message {k}) as the template writes it after the prompt is not how it is "
            "rendered once its results follow: the next prompt does not continue the last one\n"
            + diff(sent, full[: len(sent) + 40], labels=("prompt + reply", "next prompt")),
            fix="render a tool-call turn the same whether or not its results follow",
        )
    ]


def _continues(subject: Subject, step: Step, tools: dict[str, Any]) -> bool:
    """The prompt plus the reply of ``step`` starts the next prompt (rendered with ``tools``)."""
    run, k = step.run, step.reply
    assert step.following is not None
    posted = subject.render(run[:k], add_generation_prompt=True, **tools)
    history = subject.render(run[: k + 1], **tools)
    sent = history[: reply_end(subject, history, len(posted), run[k])]
    return subject.render(run[: step.following], add_generation_prompt=True, **tools).startswith(sent)


def _moved(subject: Subject, step: Step) -> list[Finding]:
    """The conventions that explain a break at ``step``: it goes away without the system message, without the
    tool definitions, or without both (the format places them by the last turn)."""
    system = 1 if step.run[0].get("role") == "system" else 0
    bare = Step(step.run[system:], step.reply - system, (step.following or 0) - system)
    tools = {"tools": subject.client_tools(step.run)}
    for moved, variant, kwargs in (
        ((tpl.SYSTEM_MOVED,), bare, tools),
        ((tpl.TOOLS_MOVED,), step, {"tools": None}),
        ((tpl.SYSTEM_MOVED, tpl.TOOLS_MOVED), bare, {"tools": None}),
    ):
        if (variant is step and kwargs == tools) or (variant is bare and not system):
            continue
        try:
            if _continues(subject, variant, kwargs):
                return [
                    cause(
                        f"history rewrite: where the template places the {tpl.MOVED_PARTS[cause.key]} changes as the "
                        "conversation grows (e.g. by the last user turn), so a tool-call reply renders "
                        "differently once its results follow"
                    )
                    for cause in moved
                ]
        except RenderError:
            continue
    return []


def _stability_causes(
    subject: Subject, conversation: conv.Conversation, head: str, full: str, end: int, tools: dict[str, Any]
) -> list[Finding]:
    known = tpl.convention_of(subject, head, full)
    return [known] if known is not None else tpl.unexplained_break(subject, conversation, end, head, full)


# ---------------------------------------------------------------------------------------------- closed turns

UNCLOSED = defect(
    "closed_turns.unclosed",
    "a turn left open when the next one starts puts two turns in one: the model reads a format it was never "
    "trained on, and a reply not closed in history teaches it not to stop",
)
CLOSED_TWICE = defect(
    "closed_turns.closed_twice",
    "an end-of-turn marker written twice closes a turn that is not open: the model reads a format it was never "
    "trained on",
)
EOS_CLOSER = defect(
    "closed_turns.eos_instead_of_end_of_turn",
    "a model stops on its end-of-turn marker; replies in history closed with the end-of-sequence token instead "
    "are a format it was not trained on, and training on them teaches it to end the whole sequence",
)


@dataclass(frozen=True)
class Markers:
    """What the template writes around turns, learnt from its own rendering: the end-of-turn marker that
    closes the user's turn before the assistant's opens, and the pieces that open a turn after it."""

    end: str
    openers: frozenset[str]


#: The sentinel text of message ``i`` of a shape.
def _sentinel(i: int) -> str:
    return f"turn{i}zq7"


def markers(subject: Subject) -> Markers | None:
    """The family's end-of-turn marker and turn openers, or ``None`` when the format has no marker that closes
    user turns before the assistant's header (Mistral's and Llama 2's ``[/INST]``, DeepSeek R1's
    full-width Assistant token: the reply follows the user's text directly)."""
    key = ("turn markers", *subject.template.key)
    if key not in subject.model.cache:
        subject.model.cache[key] = _learn_markers(subject)
    found = subject.model.cache[key]
    return found if isinstance(found, Markers) else None


def _learning(caps: Capabilities) -> conv.Conversation:
    shape = [*_opening(caps), conv.user(""), conv.assistant(""), conv.user("")]
    return [{**m, "content": _sentinel(i)} for i, m in enumerate(shape)]


def _learn_markers(subject: Subject) -> Markers | None:
    shape = _learning(probe(subject))
    subject.prefetch_each([(shape, {}), (shape[:-2], {}), (shape[:-2], {"add_generation_prompt": True})])
    try:
        rendered = subject.render(shape)
        without = subject.render(shape[:-2])
        prompted = subject.render(shape[:-2], add_generation_prompt=True)
    except RenderError:
        return None
    segments = _segments(rendered, shape)
    if None in segments[:-1] or not prompted.startswith(without):
        return None
    header = prompted[len(without) :]
    *earlier, after_user, after_reply, _ = segments
    assert after_user is not None and after_reply is not None
    found = pieces(after_user)
    # a template that writes the assistant header whatever the flag says (`generation_prompt.always_added`)
    # still closes the user's turn before it
    headless = not header.strip() and tpl.always_added(subject) is None
    if len(found) < 2 or headless:
        return None
    # the marker closes the user's turn and another's (inner tags such as <|END_TEXT|> close one role's text)
    others = [pieces(segment or "") for segment in [*earlier, after_reply]]
    shared = [p for p in found if p not in header and any(p in other for other in others)]
    eos = subject.model.renderer.special_tokens.get("eos_token", "")
    reply_closer = pieces(after_reply)[:1]
    if shared:
        end = shared[0]
    elif eos and reply_closer == [eos] and found[0] not in header:
        end = found[0]  # replies closed with the end-of-sequence token instead (`closed_turns` reports it)
    else:
        return None
    openers = {_opener_after(s or "", end) for s in segments}
    return Markers(end, frozenset(o for o in openers if o))


def _opener_after(segment: str, end: str) -> str:
    """The first piece after the last ``end`` in ``segment`` (``""`` when none)."""
    at = segment.rfind(end)
    if at < 0:
        return ""
    after = pieces(segment[at + len(end) :])
    return after[0] if after else ""


def _spans(rendered: str, shape: conv.Conversation) -> list[tuple[int, int] | None]:
    """Where each message of ``shape`` is in ``rendered``: from its first sentinel to the end of its last;
    ``None`` where a sentinel is missing or out of order."""
    spans: list[tuple[int, int] | None] = []
    position = 0
    for i, message in enumerate(shape):
        texts = _message_sentinels(i, message)
        first = rendered.find(texts[0], position) if texts else -1
        last = rendered.find(texts[-1], first) if first >= 0 else -1
        if first < 0 or last < 0:
            spans.append(None)
            continue
        spans.append((first, last + len(texts[-1])))
        position = last + len(texts[-1])
    return spans


def _segments(rendered: str, shape: conv.Conversation) -> list[str | None]:
    """For each message of ``shape``, the text from its end to the next message's start (to the end for the
    last message); ``None`` where either is not found."""
    spans = _spans(rendered, shape)
    found: list[str | None] = []
    for i, span in enumerate(spans):
        after = spans[i + 1] if i + 1 < len(spans) else (len(rendered), len(rendered))
        found.append(None if span is None or after is None else rendered[span[1] : after[0]])
    return found


def _message_sentinels(i: int, message: conv.Message) -> list[str]:
    found = [message["content"]] if isinstance(message.get("content"), str) and message["content"] else []
    return found + _reply_texts({"tool_calls": message.get("tool_calls")})


def turn_shapes(caps: Capabilities) -> list[conv.Conversation]:
    """Conversations with one turn of each shape the template renders, every text a sentinel: system, user
    and assistant turns, and where supported a call without text, a call with text, parallel calls, tool
    results followed by a reply or by a user turn."""
    shapes: list[conv.Conversation] = [
        [*_opening(caps), conv.user(""), conv.assistant(""), conv.user(""), conv.assistant("")]
    ]
    if caps.tool_calls and caps.tool_role:
        opening = _opening(caps)
        shapes += [
            [
                *opening,
                conv.user(""),
                _calls("", caps, "c1"),
                _result(0, ""),
                conv.assistant(""),
                conv.user(""),
            ],
            [conv.user(""), _calls("", caps, "c1"), _result(0, ""), conv.user("")],
            [conv.user(""), _calls("text", caps, "c1"), _result(0, ""), conv.assistant("")],
        ]
        if caps.parallel_tool_calls:
            shapes.append(
                [
                    conv.user(""),
                    _calls("", caps, "c1", "c2"),
                    _result(0, ""),
                    _result(1, ""),
                    conv.assistant(""),
                ]
            )
    return [_tagged(shape) for shape in shapes]


def _tagged(shape: conv.Conversation) -> conv.Conversation:
    """``shape`` with each text replaced by its sentinel (call arguments included)."""
    tagged = []
    for i, message in enumerate(shape):
        message = dict(message)
        if message.get("content") or message["role"] != "assistant" or not message.get("tool_calls"):
            message["content"] = _sentinel(i)
        calls = []
        for n, call in enumerate(message.get("tool_calls") or []):
            arguments = call["function"]["arguments"]
            city = f"arg{i}q{n}zq7"  # not containing the content's sentinel
            arguments = {"city": city} if isinstance(arguments, dict) else json.dumps({"city": city})
            calls.append({**call, "function": {**call["function"], "arguments": arguments}})
        if calls:
            message["tool_calls"] = calls
        tagged.append(message)
    return tagged


@check(Layer.TEMPLATE)
def closed_turns(subject: Subject) -> list[Finding]:
    """Every turn the template opens is closed exactly once, with the family's end-of-turn marker, in every
    shape: system, user and assistant turns, tool calls, tool results, a reply or a user turn after a tool
    round-trip. The marker and the turn openers are learnt from the template's own rendering (what follows
    the user's text before the assistant's header), not from a list.

    Catches a turn left open when the next one starts (a model turn not closed when a user turn follows its
    tool results), a marker written twice, and replies closed with the end-of-sequence token where every
    other turn ends with the end-of-turn marker. A format whose reply follows the user's text directly
    (``[/INST]``) has no such marker: nothing to check. The shapes are judged again with each of the
    template's switches set both ways (see ``renders``).
    """
    findings = _closed_turns(subject)
    return findings + tpl.under_switches(subject, _closed_turns, findings)


def _closed_turns(subject: Subject) -> list[Finding]:
    skip = tpl.blank(subject)
    if skip is not None:
        return skip
    learnt = markers(subject)
    if learnt is None:
        return [
            skipped("the format has no end-of-turn marker between a user turn and the assistant's header")
        ]
    shapes = turn_shapes(probe(subject))
    subject.prefetch(shapes)
    eos = subject.model.renderer.special_tokens.get("eos_token", "")
    found: list[Finding] = []
    for shape in shapes:
        try:
            rendered = subject.render(shape)
        except RenderError:
            continue  # `renders` reports what does not render
        found += [
            replace(f, message=f"{f.message}\nconversation:\n{conv.describe(shape)}")
            for f in _walk(
                rendered, shape, learnt, eos, subject.model.renderer.special_tokens.get("bos_token", "")
            )
        ]
    findings = tpl.distinct(found)
    if not findings:
        return [note(f"every turn of {len(shapes)} shapes is closed once with {learnt.end!r}")]
    return findings


def _opened_unlearnt(since: list[str], learnt: Markers, ignored: set[str]) -> bool:
    """Some piece other than the sequence tokens follows the last end-of-turn marker: a turn header."""
    after = since[len(since) - since[::-1].index(learnt.end) :] if learnt.end in since else since
    return any(p not in ignored for p in after)


def _walk(rendered: str, shape: conv.Conversation, learnt: Markers, eos: str, bos: str = "") -> list[Finding]:
    """Read ``rendered`` from start to end, opening a turn at each opener and closing it at each end-of-turn
    marker: what is closed twice, or left open when the next turn opens (or the conversation ends after a
    reply), with a message of ``shape`` in it."""
    spans = _spans(rendered, shape)
    ignored = {t for t in (bos, eos) if t}
    events: list[tuple[int, str | int]] = [(m.start(), m.group(0)) for m in PIECE.finditer(rendered)]
    events += [(span[0], i) for i, span in enumerate(spans) if span is not None]
    events.sort(key=lambda event: event[0])
    is_open = False
    inside: int | None = None  # the last message in the open turn
    closed: int | None = None  # the message whose turn the last marker closed (until the next turn opens)
    stray: int | None = None  # a message written while no turn is open
    since: list[str] = []  # the pieces after the last message
    found: list[Finding] = []
    for at, event in events:
        if isinstance(event, int):
            if not is_open and _opened_unlearnt(since, learnt, ignored):
                is_open = True  # a header the learning conversation does not have (Phi-3's <|system|>)
            inside = event if is_open else None
            stray = event if not is_open and closed is not None else None
            since = []
            continue
        since.append(event)
        if event == learnt.end:
            final_eos = (
                event == eos and not rendered[at + len(event) :].strip()
            )  # `prefix_stability.final_eos`
            if not is_open and (stray is not None or closed is not None) and not final_eos:
                first = closed if closed is not None else stray
                assert first is not None
                found.append(
                    _shown(_twice(shape, closed, stray, learnt), rendered, spans[first], at + len(event))
                )
            closed = inside if is_open else closed
            is_open, inside, stray = False, None, None
            continue
        if event not in learnt.openers:
            continue
        if is_open and inside is not None:
            ahead = f"the {_next_role(shape, inside)} turn opens"
            problem = _unclosed(shape, inside, since[:-1], learnt, eos, ahead)
            if problem is not None:
                found.append(_shown(problem, rendered, spans[inside], at + len(event)))
        is_open, inside, since, closed = True, None, [], None
    last = shape[inside] if inside is not None else {}
    if is_open and inside is not None and last["role"] == "assistant" and not last.get("tool_calls"):
        problem = _unclosed(shape, inside, since, learnt, eos, "the conversation ends", final=True)
        if problem is not None:
            found.append(_shown(problem, rendered, spans[inside], len(rendered)))
    return found


def _next_role(shape: conv.Conversation, i: int) -> str:
    return _shape_role(shape[i + 1]) if i + 1 < len(shape) else "next"


def _shown(problem: Finding, rendered: str, span: tuple[int, int] | None, at: int) -> Finding:
    """``problem`` with the rendering from the end of its message to ``at``."""
    start = span[1] if span is not None else max(0, at - 40)
    return replace(problem, message=f"{problem.message}\n  between the turns: {rendered[start:at]!r}")


def _twice(shape: conv.Conversation, closed: int | None, stray: int | None, learnt: Markers) -> Finding:
    fix = f"write {learnt.end!r} once at the end of each turn, and open every turn with its header"
    if stray is not None:
        return CLOSED_TWICE(
            f"the {_shape_role(shape[stray])} message {stray} is written after the turn before it was closed, "
            f"in no turn (no opener), and closed again with {learnt.end!r}",
            fix=fix,
        )
    assert closed is not None
    return CLOSED_TWICE(
        f"the {_shape_role(shape[closed])} turn (message {closed}) is closed twice with {learnt.end!r}",
        fix=fix,
    )


def _unclosed(
    shape: conv.Conversation,
    i: int,
    since: list[str],
    learnt: Markers,
    eos: str,
    ahead: str,
    *,
    final: bool = False,
) -> Finding | None:
    """Why the turn holding message ``i`` is not closed before ``ahead`` (``since``: the pieces after the
    message), or ``None`` when it ends with a closer of its own (gpt-oss's ``<|call|>``, Llama's
    ``<|eom_id|>`` after a call, or any closing piece of a final reply)."""
    role = _shape_role(shape[i])
    if eos and eos != learnt.end and eos in since and shape[i]["role"] == "assistant":
        return EOS_CLOSER(
            f"the {role} turn (message {i}) is closed with the end-of-sequence token {eos!r}, not with "
            f"{learnt.end!r}, the end-of-turn marker of the other turns",
            fix=f"close assistant turns with {learnt.end!r} like the others (the model stops on it)",
        )
    if since and (final or _own_closer(since[-1])):
        return None
    return UNCLOSED(
        f"the turn open at the {role} message {i} is not closed with {learnt.end!r} before {ahead}",
        fix=f"write {learnt.end!r} to close the open turn before the next turn's opener in this shape",
    )


def _own_closer(piece: str) -> bool:
    """A control token that ends a turn of one kind by itself (``<|call|>``, ``<|eom_id|>``), not the closing
    half of a block (``</tool_response>``, ``<tool_response|>``) nor an opening one."""
    name = piece.strip("<>|｜").lower()  # noqa: RUF001
    return bool(re.fullmatch(r"<\|[^/|]+\|>|<｜[^｜]+｜>", piece)) and not any(  # noqa: RUF001
        word in name for word in ("start", "begin", "open")
    )


def _shape_role(message: conv.Message) -> str:
    if message.get("tool_calls"):
        return "assistant (tool calls)"
    return str(message.get("role"))


__all__ = ["Markers", "agent_loop", "agent_runs", "closed_turns", "markers", "pieces", "steps", "turn_shapes"]
