"""Template layer: what the Jinja template renders, over the plain conversations and hypothesis samples."""

from __future__ import annotations

import json
import re
from typing import Any

from templatecheck import conversation as conv
from templatecheck.capabilities import probe
from templatecheck.causes import defect
from templatecheck.checks import check
from templatecheck.model import Subject
from templatecheck.render import RenderError, template_variables
from templatecheck.report import diff, quote
from templatecheck.result import Finding, Layer, failed, skipped, warning
from templatecheck.sample import Problem, counterexamples, sample

SYNTAX = defect(
    "renders.syntax",
    "a template that does not parse renders nothing: every request through it fails",
)


def _refused_system(error: RenderError, conversation: conv.Conversation) -> bool:
    return error.kind == "refused" and any(m["role"] == "system" for m in conversation)


def _samples(subject: Subject, *, end_with_user: bool = True, share: int = 1) -> list[conv.Conversation]:
    """The hypothesis sample for this template's capabilities (``examples // share`` conversations)."""
    count = max(1, subject.options.examples // share)
    return sample(probe(subject).support, end_with_user=end_with_user, count=count)


@check(Layer.TEMPLATE, needs="nothing")
def renders(subject: Subject) -> list[Finding]:
    """Every valid conversation renders: the plain ones (user only; system + user + assistant), with and
    without the generation prompt, and a hypothesis sample of the conversations the template supports.

    Catches templates that crash on ordinary input (a missing variable, a type error, content that is a list
    of parts, an empty message). A deliberate ``raise_exception`` on the system role is a legal policy and
    only a warning.
    """
    from templatecheck.gates import parse_error

    unparsed = parse_error(subject)
    if unparsed is not None:
        return [SYNTAX(f"the template does not parse or compile: {unparsed}")]
    findings = []
    for name in ("user only", "system + user + assistant"):
        conversation = conv.PLAIN[name]
        for add_generation_prompt in (False, True):
            try:
                subject.render(conversation, add_generation_prompt=add_generation_prompt)
            except RenderError as error:
                where = f"{name}, add_generation_prompt={add_generation_prompt}"
                if _refused_system(error, conversation):
                    findings.append(warning(f"the template refuses a system message ({where}): {error}"))
                else:
                    findings.append(
                        failed(
                            f"the template does not render ({where}): {error}\n{conv.describe(conversation)}"
                        )
                    )
    if findings:
        return findings

    def judge(conversation: conv.Conversation) -> Problem | None:
        try:
            subject.render(conversation, add_generation_prompt=True)
        except RenderError as error:
            if error.kind == "refused":
                return Problem(str(error), warning(f"the template refuses a valid conversation: {error}"))
            return Problem(
                str(error).split("\n")[0], failed(f"a valid conversation does not render: {error}")
            )
        return None

    return counterexamples(_samples(subject), judge)


@check(Layer.TEMPLATE)
def generation_prompt(subject: Subject) -> list[Finding]:
    """``add_generation_prompt=True`` appends to the ``False`` rendering exactly the header that precedes an
    assistant reply in a rendered conversation; ``continue_final_message`` leaves the last reply open.

    Catches templates that ignore ``add_generation_prompt`` (the model then continues the user's turn), that
    rewrite the conversation when it is set, whose prompt header differs from the one written before stored
    replies (the model is prompted in a form it never saw in training), or that cannot continue a prefilled
    reply. A format without an assistant header (Mistral, Llama 2: the reply follows ``[/INST]``) passes with
    an empty prompt. A prompt that adds a forced prefix after the header (a thinking opener) or lacks
    whitespace the header has is a warning.
    """
    findings: list[Finding] = []
    tried = 0
    for name in ("user only", "system + user"):
        conversation = conv.PLAIN[name]
        try:
            finding = _generation_prompt_of(subject, conversation)
        except RenderError:
            continue  # reported by `renders`
        tried += 1
        if finding is not None:
            shown = f"conversation ({name}):\n{conv.describe(conversation)}"
            findings.append(type(finding)(finding.outcome, f"{finding.message}\n{shown}"))
    if not tried:
        return [skipped("no plain conversation renders (see `renders`)")]
    if findings:
        return findings

    def judge_prompt(conversation: conv.Conversation) -> Problem | None:
        try:
            finding = _generation_prompt_of(subject, conversation)
        except RenderError:
            return None
        return Problem(finding.message.split("\n")[0], finding) if finding else None

    findings = counterexamples(_samples(subject, share=2), judge_prompt, limit=1)
    return findings + counterexamples(
        _samples(subject, end_with_user=False, share=4), _continue_problem(subject)
    )


def _generation_prompt_of(subject: Subject, conversation: conv.Conversation) -> Finding | None:
    replied = [*conversation, conv.assistant(conv.ASSISTANT_TEXT)]
    without = subject.render(conversation, add_generation_prompt=False)
    with_prompt = subject.render(conversation, add_generation_prompt=True)
    full = subject.render(replied, add_generation_prompt=False)
    reads = "add_generation_prompt" in template_variables(subject.template.source)
    return _judge_generation_prompt(without, with_prompt, full, reads_flag=reads)


def _judge_generation_prompt(
    without: str, with_prompt: str, full: str, *, reads_flag: bool
) -> Finding | None:
    if not with_prompt.startswith(without):
        return failed(
            "add_generation_prompt=True changes the conversation instead of appending a header\n"
            + diff(without, with_prompt, labels=("add_generation_prompt=False", "True"))
        )
    header = with_prompt[len(without) :]
    at = full.find(conv.ASSISTANT_TEXT, len(without)) if full.startswith(without) else -1
    if at < 0:  # the reply is not where it should be: compare the prompt with the rendered turn directly
        if full.startswith(with_prompt) and header.strip():
            return None
        return failed(
            "a rendered assistant turn does not start with the generation prompt "
            f"{header!r}: the model is prompted differently from how its replies are written\n"
            + diff(with_prompt, full[: len(with_prompt) + 40], labels=("prompt", "rendered reply"))
        )
    turn = full[len(without) : at]
    if header == turn or (not header and not turn.strip()):
        return None
    if not header.strip() and reads_flag:
        return warning(
            f"add_generation_prompt=True adds {'nothing' if not header else repr(header)} here, but replies are "
            f"written after {turn!r}: the model must generate it itself"
        )
    if not header.strip():
        return failed(
            f"add_generation_prompt=True adds {'no' if not header else f'only {header!r} as'} assistant header, "
            f"but replies are written after {turn!r}: the model is asked to continue the user's turn\n"
            f"  rendering with add_generation_prompt=True:\n{quote(with_prompt)}\n"
            "  fix: end the template with {% if add_generation_prompt %}{{ "
            + json.dumps(turn)
            + " }}{% endif %}"
        )
    if turn.startswith(header):
        return warning(
            f"the generation prompt {header!r} lacks {turn[len(header) :]!r}, which precedes replies in rendered "
            f"turns ({turn!r}): the model must generate it itself (whitespace, or a block such as an empty "
            "thinking block)"
        )
    if header.startswith(turn):
        return warning(
            f"the generation prompt adds {header[len(turn) :]!r} after the turn header {turn!r}, which rendered "
            "replies do not have (a forced prefix such as a thinking opener): history and prompt differ"
        )
    return failed(
        f"a rendered assistant turn does not start with the generation-prompt header {header!r} but with "
        f"{turn!r}: the model is prompted differently from how its replies are written\n"
        + diff(without + header, without + turn, labels=("prompt + header", "rendered reply"))
    )


def _continue_problem(subject: Subject) -> Any:
    def judge(conversation: conv.Conversation) -> Problem | None:
        last = conversation[-1]
        if (
            last.get("role") != "assistant"
            or not isinstance(last.get("content"), str)
            or not last["content"].strip()
        ):
            return None
        try:
            full = subject.render(conversation)
        except RenderError:
            return None
        try:
            opened = subject.render(conversation, continue_final_message=True)
        except RenderError as error:
            return Problem("raises", failed(f"continue_final_message=True fails: {error}"))
        if not full.startswith(opened) or not opened.rstrip().endswith(last["content"].strip()):
            return Problem(
                "not open",
                failed(
                    "continue_final_message=True does not leave the last reply open: the prefilled reply is not "
                    "a prefix of the closed turn\n"
                    + diff(full[: len(opened)], opened, labels=("closed turn", "continued"))
                ),
            )
        return None

    return judge


# ------------------------------------------------------------------------------------------ prefix stability


def _assistant_ends(conversation: conv.Conversation) -> list[int]:
    """Indexes just past each final assistant reply (not a tool-calling turn)."""
    return [
        i + 1
        for i, m in enumerate(conversation)
        if m.get("role") == "assistant" and not m.get("tool_calls") and i + 1 < len(conversation)
    ]


def _prefix_break(
    subject: Subject, conversation: conv.Conversation, **kwargs: Any
) -> tuple[int, str, str] | None:
    """The first assistant boundary where the rendering of the first turns is not a prefix of the whole.

    Every rendering gets the tools of the whole conversation, as a client sends the same tools each turn.
    """
    kwargs.setdefault("tools", subject.client_tools(conversation))
    full = subject.render(conversation, **kwargs)
    for end in _assistant_ends(conversation):
        head = subject.render(conversation[:end], **kwargs)
        if not full.startswith(head):
            return end, head, full
    return None


@check(Layer.TEMPLATE)
def prefix_stability(subject: Subject) -> list[Finding]:
    """At every assistant boundary, the rendering of the first turns is a prefix of the rendering of all turns.

    Catches templates whose rendering of history changes as the conversation grows: KV-cache reuse,
    multi-turn evaluations and training masks all assume it does not. A deliberate rewrite (the system prompt
    moved into the last user turn, reasoning of earlier turns dropped) is a warning that names it.
    """
    findings = _reasoning_rewrite(subject)

    def judge(conversation: conv.Conversation) -> Problem | None:
        try:
            broken = _prefix_break(subject, conversation)
        except RenderError:
            return None
        if broken is None:
            return None
        end, head, full = broken
        if _REASONING_BLOCK.search(head) and _squeeze(full).startswith(_squeeze(head)):
            return Problem(
                "reasoning",
                warning(
                    "history rewrite: the reasoning block of an earlier assistant turn is dropped or changed once "
                    "later turns follow (deliberate in reasoning templates; prefix caches and training masks "
                    "must account for it)"
                ),
            )
        for what, variant, kwargs in (
            ("system message", [m for m in conversation if m.get("role") != "system"], {}),
            ("tool definitions", conversation, {"tools": None}),
        ):
            if variant == conversation and not kwargs:
                continue
            try:
                moved = _prefix_break(subject, variant, **kwargs) is None
            except RenderError:
                moved = False
            if moved:
                return Problem(
                    what,
                    warning(
                        f"history rewrite: where the template places the {what} changes as the conversation "
                        "grows (e.g. into the last user turn), so the rendering of earlier turns changes with "
                        "each new turn"
                    ),
                )
        return Problem(
            "prefix",
            failed(
                f"the rendering of the first {end} messages is not a prefix of the whole conversation's: "
                "earlier turns render differently once later turns follow\n"
                + diff(head, full[: len(head) + 40], labels=(f"first {end} messages", "whole conversation"))
            ),
        )

    return findings + counterexamples(_samples(subject, end_with_user=False, share=2), judge)


_REASONING_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>\s*", re.DOTALL)


def _squeeze(text: str) -> str:
    """``text`` without reasoning blocks and whitespace, to tell a reasoning rewrite from other changes."""
    return re.sub(r"\s+", "", _REASONING_BLOCK.sub("", text))


def _reasoning_rewrite(subject: Subject) -> list[Finding]:
    if not probe(subject).reasoning:
        return []
    turns = [
        conv.user("q1"),
        {**conv.assistant("a1"), "reasoning_content": "r1zq"},
        conv.user("q2"),
        {**conv.assistant("a2"), "reasoning_content": "r2zq"},
    ]
    try:
        head, full = subject.render(turns[:2]), subject.render(turns)
    except RenderError:
        return []
    if "r1zq" in head and "r1zq" not in full:
        return [
            warning(
                "history rewrite: the reasoning of an assistant turn is dropped once a later user turn follows "
                "(deliberate in reasoning templates; prefix caches and training masks must account for it)"
            )
        ]
    return []


# ------------------------------------------------------------------------------------------ content fidelity


def tag(conversation: conv.Conversation) -> conv.Conversation:
    """Make each message's text unique (``⟪i⟫`` after its leading whitespace), keeping its edges."""

    def mark(text: str, i: int) -> str:
        if not text:
            return text
        lead = len(text) - len(text.lstrip())
        return f"{text[:lead]}⟪{i}⟫{text[lead:]}"

    tagged = []
    for i, message in enumerate(conversation):
        content = message.get("content")
        if isinstance(content, str):
            message = {**message, "content": mark(content, i)}
        elif isinstance(content, list):
            parts = [
                {**p, "text": mark(p["text"], i)} if isinstance(p.get("text"), str) else p for p in content
            ]
            message = {**message, "content": parts}
        tagged.append(message)
    return tagged


def texts(message: conv.Message) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def fidelity_problem(rendered: str, conversation: conv.Conversation) -> Problem | None:
    """How ``rendered`` fails to show every text of the tagged ``conversation`` verbatim, once, in order."""
    position = 0
    first_turn_at: int | None = None
    system_at: list[tuple[int, int]] = []
    for i, message in enumerate(conversation):
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, (list, dict)) and repr(content) in rendered:
            return Problem(
                f"repr {role}",
                failed(f"the {role} message {i} content is rendered as a Python repr; use its text"),
            )
        for text in texts(message):
            marker = f"⟪{i}⟫"
            found = rendered.find(text)
            if found < 0:  # a template may write messages as JSON strings
                found = rendered.find(json.dumps(text, ensure_ascii=False)[1:-1])
            if not text:
                continue
            if found < 0:
                if marker not in rendered:
                    if message.get("tool_calls"):
                        return Problem(
                            "dropped content with calls",
                            failed(
                                f"the content of assistant message {i} is dropped because it has tool calls"
                            ),
                        )
                    return Problem(f"dropped {role}", failed(f"the {role} message {i} is silently dropped"))
                if text.strip() and text.strip() in rendered:
                    return Problem(
                        f"trimmed {role}",
                        failed(
                            f"the {role} message {i} is trimmed: {text!r} renders as {text.strip()!r} "
                            "(leading/trailing whitespace removed)"
                        ),
                    )
                start = rendered.find(marker)
                shown = rendered[max(0, start - 5) : start + len(text) + 5]
                return Problem(
                    f"altered {role}",
                    failed(f"the {role} message {i} is altered: {text!r} renders as …{shown!r}…"),
                )
            if rendered.count(text) > 1:
                return Problem(
                    f"repeated {role}", failed(f"the {role} message {i} is rendered more than once")
                )
            if role == "system":  # a format may place it elsewhere (Mistral: in the last user turn)
                system_at.append((i, found))
                continue
            if found < position:
                return Problem(
                    f"reordered {role}", failed(f"the {role} message {i} is rendered out of order")
                )
            first_turn_at = found if first_turn_at is None else first_turn_at
            position = found + len(text)
    for i, found in system_at:
        if first_turn_at is not None and found > first_turn_at:
            return Problem(
                "system moved", warning(f"the system message {i} is rendered after later messages, not first")
            )
    return None


@check(Layer.TEMPLATE)
def content_fidelity(subject: Subject) -> list[Finding]:
    """Every message's text appears in the rendering verbatim, once, in order.

    Catches templates that silently drop a message (often the system message), trim or strip its whitespace,
    alter it, repeat it, reorder turns, or print list content as a Python repr. Trimming is only a warning
    when the model's reference format strips text itself (Llama, Gemma): the template then matches training.
    """

    stripping = _stripping_format(subject)

    def judge(conversation: conv.Conversation) -> Problem | None:
        tagged = tag(conversation)
        try:
            rendered = subject.render(tagged)
        except RenderError:
            return None
        problem = fidelity_problem(rendered, tagged)
        if problem is not None and stripping and problem.key.startswith("trimmed"):
            return Problem(
                problem.key,
                warning(
                    f"{problem.finding.message}, as the {stripping} format does: the model never saw edge "
                    "whitespace in training, but the user's is lost"
                ),
            )
        return problem

    plain = [
        conv.SYSTEM_USER_ASSISTANT,
        [conv.system(" padded \n"), conv.user("\n question  "), conv.assistant("ok ")],
    ]
    return counterexamples([*plain, *_samples(subject, end_with_user=False, share=2)], judge)


def _stripping_format(subject: Subject) -> str | None:
    """The name of the model's reference format when that format strips message text (see ``strips_text``)."""
    from templatecheck.formats.detect import choose

    try:
        chosen = choose(subject.model, subject.options).format
    except Exception:  # an unknown --reference is reported by the reference check itself
        return None
    return chosen.name if chosen is not None and chosen.strips_text else None


# -------------------------------------------------------------------------------------------- assistant mask


@check(Layer.TEMPLATE)
def assistant_mask(subject: Subject) -> list[Finding]:
    """Where the template marks replies with ``{% generation %}``, the marked spans cover each assistant
    reply and its end-of-turn token, and nothing else.

    Catches training masks (``return_assistant_tokens_mask``) that leave out the end-of-turn token (the model
    never learns to stop), or that include headers or user text (the model learns to write them).
    """
    if "generation" not in subject.template.source or "endgeneration" not in subject.template.source:
        return [skipped("the template has no {% generation %} block")]
    conversation = tag(
        [
            conv.system(conv.SYSTEM_TEXT),
            conv.user("first question"),
            conv.assistant("first reply"),
            conv.user("second question"),
            conv.assistant("second reply"),
        ]
    )
    try:
        rendered = subject.render_full(conversation)
    except RenderError as error:
        return [skipped(f"the conversation does not render (see `renders`): {error}")]
    text, spans = rendered.text, rendered.generation_spans
    replies = [m["content"] for m in conversation if m["role"] == "assistant"]
    others = [m["content"] for m in conversation if m["role"] != "assistant"]
    control = _control_strings(subject)
    findings = []
    for reply in replies:
        at = text.find(reply)
        covering = [(a, b) for a, b in spans if a <= at and at + len(reply) <= b]
        if not covering:
            findings.append(failed(f"the reply {reply!r} is not inside any {{% generation %}} span"))
            continue
        a, b = covering[0]
        after = text[at + len(reply) :]
        eot = next((t for t in sorted(control, key=len, reverse=True) if after.lstrip().startswith(t)), None)
        if eot is not None and not text[a:b].rstrip().endswith(eot):
            findings.append(
                failed(
                    f"the span of reply {reply!r} leaves out the end-of-turn token {eot!r}: a model trained with "
                    f"this mask never learns to stop\n  span: {text[a:b]!r}"
                )
            )
        before = text[a:at]
        if before.strip():
            findings.append(
                failed(f"the span of reply {reply!r} includes {before!r} before the reply (a header)")
            )
    for a, b in spans:
        leaked = [o for o in others if o in text[a:b]]
        if leaked:
            findings.append(failed(f"a {{% generation %}} span includes non-assistant text {leaked[0]!r}"))
    return findings


def _control_strings(subject: Subject) -> list[str]:
    tokenizer = subject.model.tokenizer
    return [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
