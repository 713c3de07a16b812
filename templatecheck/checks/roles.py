"""Template layer: what the template does with unusual role orders, missing system messages and the clock."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from templatecheck import conversation as conv
from templatecheck.capabilities import Capabilities, probe
from templatecheck.causes import Cause, defect, policy
from templatecheck.checks.base import check
from templatecheck.checks.template import (
    CRASH,
    DROPPED,
    SYSTEM_DROPPED,
    SYSTEM_MOVED,
    blank,
    fidelity_findings,
    tag,
)
from templatecheck.model import Subject
from templatecheck.render import RenderError, template_variables
from templatecheck.result import Finding, Layer, Outcome, skipped
from templatecheck.text import common_prefix

_U, _A, _S = conv.user, conv.assistant, conv.system


@dataclass(frozen=True)
class Order:
    """One role order of the matrix: its conversation, and the causes of a drop and of a crash on it."""

    name: str
    conversation: conv.Conversation
    dropped: Cause | None = None
    crashed: Cause | None = None
    #: Only for templates that render a system message (one without drops it everywhere: content_fidelity).
    needs_system: bool = False


def _unusual(key: str, name: str, conversation: conv.Conversation, *, needs_system: bool = False) -> Order:
    dropped = defect(
        f"role_policy.{key}_dropped",
        f"a valid conversation ({name}) whose message is silently dropped or altered: the caller believes the "
        "model saw it",
    )
    crashed = policy(
        f"role_policy.{key}_crash",
        f"an order the template does not support ({name}) is refused either way: the client gets an error, never "
        "a wrong prompt; raise_exception would say why",
    )
    return Order(name, conversation, dropped, crashed, needs_system)


#: The role orders every template must either render faithfully or refuse with a clear error: all valid in
#: the chat API (a tool message only ever answers a tool call, so no order starts with one). The plain
#: orders' causes are those of `content_fidelity` and `renders`.
ROLE_MATRIX: tuple[Order, ...] = (
    Order("no system", [_U("question one"), _A("answer one"), _U("question two")]),
    Order("system first", [_S("be brief"), _U("question one"), _A("answer one"), _U("question two")]),
    _unusual(
        "system_mid",
        "system mid-conversation",
        [_U("question one"), _A("answer one"), _S("be brief"), _U("question two")],
        needs_system=True,
    ),
    _unusual("consecutive_users", "consecutive users", [_U("question one"), _U("question two")]),
    _unusual(
        "consecutive_assistants",
        "consecutive assistants",
        [_U("question one"), _A("answer one"), _A("answer two"), _U("question three")],
    ),
    _unusual("assistant_first", "assistant first", [_A("hello there"), _U("question one")]),
    _unusual("empty_content", "empty content", [_U("question one"), _A(""), _U("question two")]),
)


def role_matrix(subject: Subject) -> list[tuple[str, str, str]]:
    """(ordering, verdict, detail) for each row of :data:`ROLE_MATRIX`; verdicts: renders, refuses, crashes,
    drops."""
    return [(order.name, verdict, detail) for order, verdict, detail, _ in _judged(subject)]


def _judged(subject: Subject) -> list[tuple[Order, str, str, list[Finding]]]:
    rows: list[tuple[Order, str, str, list[Finding]]] = []
    subject.prefetch([tag(order.conversation) for order in ROLE_MATRIX], add_generation_prompt=True)
    for order in ROLE_MATRIX:
        tagged = tag(order.conversation)
        try:
            rendered = subject.render(tagged, add_generation_prompt=True)
        except RenderError as error:
            verdict = "refuses" if error.kind == "refused" else "crashes"
            rows.append((order, verdict, str(error), []))
            continue
        problems = [f for f in fidelity_findings(rendered, tagged) if f.cause != SYSTEM_MOVED.key]
        problems = problems or _empty_dropped(subject, tagged, rendered)
        detail = problems[0].message if problems else ""
        rows.append((order, "drops" if problems else "renders", detail, problems))
    return rows


def _empty_dropped(subject: Subject, conversation: conv.Conversation, rendered: str) -> list[Finding]:
    """A message with empty content that leaves no trace: the rendering is the one without that message."""
    for i, message in enumerate(conversation):
        if message.get("content") != "":
            continue
        try:
            without = subject.render([*conversation[:i], *conversation[i + 1 :]], add_generation_prompt=True)
        except RenderError:
            continue
        if without == rendered:
            return [DROPPED(f"the {message.get('role')} message {i} with empty content is silently dropped")]
    return []


def _table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name:<{width}}  {verdict:<8} {detail}".rstrip() for name, verdict, detail in rows)


@check(Layer.TEMPLATE)
def role_policy(subject: Subject) -> list[Finding]:
    """Each valid role order (no system, system first or mid-conversation, consecutive users or assistants,
    assistant first, empty content) either renders faithfully or raises a clear error.

    Catches templates that silently drop or mangle a message they do not expect: the caller believes the
    model saw it. A template error that is not a deliberate ``raise_exception`` (a ``TypeError`` deep inside
    the template) is a warning: the order is refused either way, only the message is unclear. Each order is
    its own cause; a drop of the plain orders is `content_fidelity`'s, and a system message dropped in the
    middle by a template that shows none is the same root cause.
    """
    skip = blank(subject)
    if skip is not None:
        return skip
    judged = _judged(subject)
    table = "role policy:\n" + _table([(o.name, v, d) for o, v, d, _ in judged])
    shows_system = probe(subject).system
    findings = []
    for order, verdict, detail, problems in judged:
        if verdict == "drops":
            if order.dropped is None:  # a plain order: content_fidelity's causes
                findings += problems
            elif order.needs_system and not shows_system:  # no system message shows anywhere
                findings.append(SYSTEM_DROPPED(f"{detail} ({order.name})"))
            else:
                findings.append(
                    order.dropped(
                        f"the template silently drops or alters messages ({order.name}): {detail}\n{table}"
                    )
                )
        elif verdict == "crashes":
            if order.crashed is None:
                findings.append(
                    CRASH(f"the template crashes on a plain conversation ({order.name}): {detail}")
                )
                continue
            findings.append(
                order.crashed(
                    f"the template crashes instead of refusing clearly with raise_exception ({order.name}): "
                    f"{detail}\n{table}"
                )
            )
    return findings


# ------------------------------------------------------------------------------ default system prompt, clock

INJECTED = policy(
    "default_system_prompt.injected",
    "a default system prompt is the publisher's deliberate choice; evaluations and clients that send none "
    "still get it, so the model card should say so",
)
NONDETERMINISTIC = defect(
    "clock.nondeterministic",
    "a rendering that differs between identical calls cannot be reproduced by an evaluation or a cache",
)
DATE_INJECTED = policy(
    "clock.date_injected",
    "writing today's date into the prompt is a deliberate policy; the prompt changes every day unless the "
    "harness pins the date",
)
DATE_FIXED = policy(
    "clock.date_fixed",
    "a date written from a template variable's default is deliberate; the prompt claims that date until the "
    "harness passes its own",
)


def _words(text: str) -> str:
    return " ".join(re.findall(r"[A-Za-z][A-Za-z'’]+(?:[ ,.:;!?-]+[A-Za-z0-9][A-Za-z0-9'’]*)*", text))  # noqa: RUF001


def injected_system_text(subject: Subject) -> str | None:
    """The text the template writes, for a conversation without a system message, where a system message's
    text would go (``""`` when none); ``None`` when that cannot be told (no user turn renders, or a system
    message leaves no trace). The ``reference`` check renders its reference with it."""
    question = conv.user(conv.USER_TEXT)
    marker = "zq7 system text"
    try:
        alone = subject.render([question], add_generation_prompt=True)
        with_system = subject.render([conv.system(marker), question], add_generation_prompt=True)
    except RenderError:
        return None
    if marker not in with_system:
        return None
    baseline = with_system.replace(marker, "")
    # what the two share at either end is kept: only the middle is matched (a full match is quadratic)
    start = common_prefix(baseline, alone)
    end = common_prefix(baseline[start:][::-1], alone[start:][::-1])
    before, after = baseline[start : len(baseline) - end], alone[start : len(alone) - end]
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    return "".join(after[j1:j2] for op, _, _, j1, j2 in matcher.get_opcodes() if op in ("insert", "replace"))


@check(Layer.TEMPLATE)
def default_system_prompt(subject: Subject) -> list[Finding]:
    """Reports the text the template injects when the conversation has no system message.

    A default system prompt is legal but risky (a warning): evaluations and clients that send no system
    message still get one, and publishers must say so on the model card.
    """
    extra = injected_system_text(subject)
    if extra is None:
        return [
            skipped("the template does not render and show a user turn with and without a system message")
        ]
    words = _words(extra)
    if len(words) < 12:
        return []
    return [
        INJECTED(
            f"without a system message the template injects a default system prompt: {extra.strip()!r}",
            fix="keep it if the model was trained with it and say so on the model card; otherwise remove it",
        )
    ]


#: Identical renders compared by ``clock``: a random choice among k options repeats by chance with
#: probability k ** -(_REPEATS - 1) (two options: 1 in 512), so a random template cannot pass by luck.
_REPEATS = 10


@check(Layer.TEMPLATE)
def clock(subject: Subject) -> list[Finding]:
    """Rendering is deterministic with the clock pinned, and depends on the date only through
    ``strftime_now`` or a documented variable; a template that writes a date is reported.

    Catches templates that render differently from run to run (the ``random`` filter), which no evaluation
    can reproduce, and reports a date in the prompt (a warning): today's date from ``strftime_now`` (the
    prompt changes every day), or a fixed default of a date variable such as ``date_string``; both are
    pinned with ``--tc-template-var date_string=...``.
    """
    conversation = conv.SYSTEM_USER
    try:
        first = subject.render(conversation, add_generation_prompt=True)
    except RenderError:
        conversation = conv.USER_ONLY
        try:
            first = subject.render(conversation, add_generation_prompt=True)
        except RenderError:
            return [skipped("no plain conversation renders (see `renders`)")]
    again = subject.render_each([conversation] * (_REPEATS - 1), fresh=True, add_generation_prompt=True)
    if any(isinstance(r, RenderError) for r in again):
        return [skipped("no plain conversation renders (see `renders`)")]
    if any(r != first for r in again):
        return [
            NONDETERMINISTIC(
                "the rendering differs between identical renders (e.g. the random filter): not reproducible"
            )
        ]
    variables = sorted(v for v in template_variables(subject.template.source) if "date" in v.lower())
    pinned = [v for v in variables if v in subject.options.template_vars]
    dated = _clock_date(subject, conversation, first, variables, pinned)
    return dated or _fixed_dates(subject, conversation, first, [v for v in variables if v not in pinned])


def _pin_hint(variables: list[str]) -> str:
    if not variables:
        return ""
    flags = " ".join(f"--tc-template-var {v}=..." for v in variables)
    return f"; pin it with {flags} (apply_chat_template(..., {variables[0]}=...))"


def _clock_date(
    subject: Subject, conversation: conv.Conversation, first: str, variables: list[str], pinned: list[str]
) -> list[Finding]:
    base = subject.model.renderer
    other = base.with_clock(datetime(2031, 11, 3, 17, 45))
    try:
        later = other.render(
            subject.template.source,
            conversation,
            add_generation_prompt=True,
            tools=subject.client_tools(conversation),
            **subject.options.template_vars,
        ).text
    except RenderError:
        return []
    if later == first:
        return []
    shown = _changed(first, later)
    return [
        DATE_INJECTED(
            f"the template writes the current date from strftime_now ({shown!r} under the pinned clock): the "
            f"prompt changes every day{_pin_hint([v for v in variables if v not in pinned])}"
        )
    ]


def _fixed_dates(
    subject: Subject, conversation: conv.Conversation, first: str, variables: list[str]
) -> list[Finding]:
    """A date written from a variable's default (Llama 3.1's ``date_string = "26 Jul 2024"``)."""
    for variable in variables:
        try:
            given = subject.render(conversation, add_generation_prompt=True, **{variable: "zq7 date"})
        except RenderError:
            continue
        if "zq7 date" not in given or given == first:
            continue
        shown = _changed(first, given)
        if not re.search(r"\d", shown):
            continue
        return [
            DATE_FIXED(
                f"the template writes a fixed date, {shown!r}, from the default of the variable {variable}: "
                f"the prompt claims that date{_pin_hint([variable])}"
            )
        ]
    return []


def _changed(a: str, b: str) -> str:
    """The part of ``a`` that differs from ``b``."""
    start = common_prefix(a, b)
    end = common_prefix(a[::-1], b[::-1])
    return a[start : max(start, len(a) - end)]


def survey(subject: Subject) -> Capabilities:
    """:func:`~templatecheck.capabilities.probe`, plus what the ``default_system_prompt`` and ``clock`` checks
    report (their warnings), for the reports' capabilities table; the checks themselves decide, so the table
    and the checks agree."""

    def warns(run: Callable[[Subject], list[Finding]]) -> bool:
        return any(f.outcome is Outcome.WARNING for f in run(subject))

    return replace(
        probe(subject),
        default_system_prompt=warns(default_system_prompt.run),
        date_injection=warns(clock.run),
    )
