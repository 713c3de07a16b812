"""Template layer: what the template does with unusual role orders, missing system messages and the clock."""

from __future__ import annotations

import difflib
import re
from datetime import datetime

from templatecheck import conversation as conv
from templatecheck.checks import check
from templatecheck.checks.template import fidelity_problem, tag
from templatecheck.model import Subject
from templatecheck.render import Renderer, RenderError, template_variables
from templatecheck.result import Finding, Layer, failed, skipped, warning

_U, _A, _S = conv.user, conv.assistant, conv.system

#: The role orders every template must either render faithfully or refuse with a clear error.
ROLE_MATRIX: dict[str, conv.Conversation] = {
    "no system": [_U("question one"), _A("answer one"), _U("question two")],
    "system first": [_S("be brief"), _U("question one"), _A("answer one"), _U("question two")],
    "system mid-conversation": [_U("question one"), _A("answer one"), _S("be brief"), _U("question two")],
    "consecutive users": [_U("question one"), _U("question two")],
    "consecutive assistants": [_U("question one"), _A("answer one"), _A("answer two"), _U("question three")],
    "assistant first": [_A("hello there"), _U("question one")],
    "tool first": [{"role": "tool", "content": "result one"}, _U("question one")],
    "empty content": [_U("question one"), _A(""), _U("question two")],
}


def role_matrix(subject: Subject) -> list[tuple[str, str, str]]:
    """(ordering, verdict, detail) for each row of :data:`ROLE_MATRIX`; verdicts: renders, refuses, crashes,
    drops."""
    rows = []
    for name, conversation in ROLE_MATRIX.items():
        tagged = tag(conversation)
        try:
            rendered = subject.render(tagged, add_generation_prompt=True)
        except RenderError as error:
            verdict = "refuses" if error.kind == "refused" else "crashes"
            rows.append((name, verdict, str(error)))
            continue
        problem = fidelity_problem(rendered, tagged)
        if problem is None or problem.key == "system moved":
            rows.append((name, "renders", "" if problem is None else problem.finding.message))
        else:
            rows.append((name, "drops", problem.finding.message))
    return rows


def _table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name:<{width}}  {verdict:<8} {detail}".rstrip() for name, verdict, detail in rows)


@check(Layer.TEMPLATE)
def role_policy(subject: Subject) -> list[Finding]:
    """Each unusual role order (no system, system mid-conversation, consecutive users or assistants, assistant
    or tool first, empty content) either renders faithfully or raises a clear error.

    Catches templates that silently drop or mangle a message they do not expect: the caller believes the
    model saw it. A template error that is not a deliberate ``raise_exception`` (a ``TypeError`` deep inside
    the template) is a warning: clients get no usable message.
    """
    rows = role_matrix(subject)
    table = "role policy:\n" + _table(rows)
    findings = []
    dropped = [r for r in rows if r[1] == "drops"]
    crashed = [r for r in rows if r[1] == "crashes"]
    if dropped:
        names = ", ".join(r[0] for r in dropped)
        findings.append(failed(f"the template silently drops or alters messages ({names})\n{table}"))
    if crashed:
        names = ", ".join(r[0] for r in crashed)
        findings.append(
            warning(
                f"the template crashes instead of refusing clearly with raise_exception ({names})\n{table}"
            )
        )
    return findings


# ------------------------------------------------------------------------------ default system prompt, clock


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
    matcher = difflib.SequenceMatcher(a=baseline, b=alone, autojunk=False)
    return "".join(alone[j1:j2] for op, _, _, j1, j2 in matcher.get_opcodes() if op in ("insert", "replace"))


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
        warning(f"without a system message the template injects a default system prompt: {extra.strip()!r}")
    ]


@check(Layer.TEMPLATE)
def clock(subject: Subject) -> list[Finding]:
    """Rendering is deterministic with the clock pinned, and depends on the date only through
    ``strftime_now``; a template that writes today's date is reported.

    Catches templates that render differently from run to run (the ``random`` filter), which no evaluation
    can reproduce, and reports date injection (a warning: the prompt changes every day unless the harness pins
    the clock or passes the documented date variable).
    """
    conversation = conv.SYSTEM_USER
    try:
        first = subject.render(conversation, add_generation_prompt=True)
        again = [subject.render(conversation, add_generation_prompt=True) for _ in range(3)]
    except RenderError as error:
        if error.kind == "refused":
            conversation = conv.USER_ONLY
            try:
                first = subject.render(conversation, add_generation_prompt=True)
                again = [subject.render(conversation, add_generation_prompt=True) for _ in range(3)]
            except RenderError:
                return [skipped("no plain conversation renders (see `renders`)")]
        else:
            return [skipped("no plain conversation renders (see `renders`)")]
    if any(r != first for r in again):
        return [
            failed(
                "the rendering differs between identical renders (e.g. the random filter): not reproducible"
            )
        ]
    base = subject.model.renderer
    other = Renderer(base.special_tokens, base.limits, clock=lambda: datetime(2031, 11, 3, 17, 45))
    try:
        later = other.render(
            subject.template.source, conversation, add_generation_prompt=True, tools=_tools_kwarg(subject)
        ).text
    except RenderError:
        return []
    if later == first:
        return []
    variables = sorted(v for v in template_variables(subject.template.source) if "date" in v.lower())
    documented = f"; the harness can pin it through the variable {', '.join(variables)}" if variables else ""
    start = _common_prefix(first, later)
    end = _common_prefix(first[::-1], later[::-1])
    shown = first[start : max(start, len(first) - end)]
    return [
        warning(
            f"the template writes the current date from strftime_now ({shown!r} under the pinned clock): the "
            f"prompt changes every day{documented}"
        )
    ]


def _common_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _tools_kwarg(subject: Subject) -> list[dict[str, object]] | None:
    return [conv.WEATHER_TOOL] if subject.template.name == "tool_use" else None
