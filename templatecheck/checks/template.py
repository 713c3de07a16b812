"""Template layer: what the Jinja template renders, over the plain conversations and hypothesis samples.

Every finding names its root cause (see :mod:`templatecheck.causes`); a check reports each distinct cause it
sees once, with the smallest conversation that shows it (:func:`by_cause`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import lru_cache
from typing import Any

from templatecheck import conversation as conv
from templatecheck.capabilities import CALL_IDS, Failure, probe, switched
from templatecheck.causes import Cause, defect, policy
from templatecheck.checks.base import check
from templatecheck.formats.detect import choose
from templatecheck.gates import parse_error
from templatecheck.model import Subject
from templatecheck.render import RenderError, nodes_of, parse_template
from templatecheck.result import Finding, Layer, Outcome, skipped
from templatecheck.sample import minimize, sample
from templatecheck.text import diff, quote

Judge = Callable[[conv.Conversation], list[Finding]]

SYNTAX = defect(
    "renders.syntax",
    "a template that does not parse renders nothing: every request through it fails",
)
CRASH = defect(
    "renders.crash",
    "a valid conversation that makes the template raise an error of its own (not raise_exception) fails every "
    "request of that shape, with a message that does not say why",
)
EMPTY = defect("renders.empty", "a template that renders nothing gives the model no prompt at all")
SYSTEM_REFUSED = policy(
    "renders.system_refused",
    "refusing the system role with raise_exception is a documented policy of some formats (Gemma): the client "
    "gets a clear error and can merge the system prompt into the first user turn",
)
PLAIN_REFUSED = defect(
    "renders.plain_refused",
    "a template that refuses a plain conversation (a user message, or system + user + assistant, not because of "
    "the system role) cannot be used through the documented chat path at all",
)
#: The sandbox check's cause (:mod:`templatecheck.checks.sandbox`, which imports this module): an operation the
#: sandbox refuses, whichever conversation reaches it. Other checks that observe it note it.
SANDBOX_REFUSED = "sandbox.refused_operation"
#: The tools check's cause for a tool shape the template refuses (:mod:`templatecheck.checks.tools` imports this
#: module): a sampled conversation refused in the same words is noted as it.
TOOLS_REFUSED = "tools.refused"
REFUSED = policy(
    "renders.refused",
    "raise_exception on a conversation shape the format does not support is a deliberate, clear error, "
    "never a wrong prompt",
)


# ------------------------------------------------------------------------------------ one finding per cause


def distinct(findings: Iterable[Finding]) -> list[Finding]:
    """The first finding of each cause (findings without a cause, notes and skips, are all kept)."""
    seen: set[str] = set()
    kept = []
    for finding in findings:
        if finding.cause and finding.cause in seen:
            continue
        seen.add(finding.cause)
        kept.append(finding)
    return kept


def under_switches(
    subject: Subject, run: Callable[[Subject], list[Finding]], found: Iterable[Finding]
) -> list[Finding]:
    """What ``run`` finds with each of the template's switches set both ways (``enable_thinking=True``, see
    :func:`~templatecheck.capabilities.switched`) that it did not find without (``found``): each cause once,
    its message led by the switch. Servers pass switches as ``chat_template_kwargs``, so a branch behind one
    is a path real requests take."""
    bad = (Outcome.FAILED, Outcome.WARNING)
    seen = {f.cause for f in found if f.outcome in bad}
    extra = []
    for label, other in switched(subject):
        for finding in run(other):
            if finding.outcome in bad and finding.cause not in seen:
                seen.add(finding.cause)
                extra.append(
                    replace(finding, message=f"with {label} (chat_template_kwargs): {finding.message}")
                )
    return extra


def by_cause(
    conversations: Iterable[conv.Conversation], judge: Judge, *, owner: str, reported: Iterable[str] = ()
) -> list[Finding]:
    """One finding per cause that ``judge`` reports on any of ``conversations``, each shown with the smallest
    conversation found that has that cause; causes in ``reported`` are left out.

    Every distinct cause is kept, however many there are, so a second root cause is never hidden behind a
    first. Causes another check owns become notes of ``owner`` (see :mod:`templatecheck.checks`): they are not
    shrunk.
    """
    first: dict[str, tuple[conv.Conversation, Finding]] = {}
    skip = set(reported)
    for conversation in conversations:
        for finding in judge(conversation):
            if finding.cause and finding.cause not in skip:
                first.setdefault(finding.cause, (conversation, finding))
    found = []
    for cause, (conversation, finding) in first.items():
        small = conversation
        if cause.split(".", 1)[0] == owner:

            def key(candidate: conv.Conversation, cause: str = cause) -> str | None:
                return cause if any(f.cause == cause for f in judge(candidate)) else None

            small = minimize(conversation, key)
            finding = next((f for f in judge(small) if f.cause == cause), finding)
        found.append(replace(finding, message=f"{finding.message}\nconversation:\n{conv.describe(small)}"))
    return found


def _samples(
    subject: Subject, *, end_with_user: bool = True, share: int = 1, reasoning: bool = False
) -> list[conv.Conversation]:
    """The hypothesis sample for this template's capabilities (``examples // share`` conversations), with
    ``reasoning_content`` on replies when ``reasoning`` (see :attr:`Capabilities.reasoning_support`)."""
    count = max(1, subject.options.examples // share)
    caps = probe(subject)
    support = caps.reasoning_support if reasoning else caps.support
    return sample(support, end_with_user=end_with_user, count=count)


def blank(subject: Subject) -> list[Finding] | None:
    """A skip when every plain conversation renders to nothing (``renders`` reports it once), else ``None``."""
    key = ("renders blank", *subject.template.key)
    if key not in subject.model.cache:
        texts = []
        for conversation in (conv.USER_ONLY, conv.SYSTEM_USER_ASSISTANT):
            for add_generation_prompt in (False, True):
                try:
                    texts.append(subject.render(conversation, add_generation_prompt=add_generation_prompt))
                except RenderError:
                    continue
        subject.model.cache[key] = bool(texts) and not any(t.strip() for t in texts)
    if subject.model.cache[key]:
        return [skipped("the template renders nothing for a plain conversation (see `renders`)")]
    return None


# ---------------------------------------------------------------------------------------------------- renders


def _refused_system(subject: Subject, error: RenderError, conversation: conv.Conversation) -> bool:
    """The template refuses ``conversation`` because of its system message: it renders without it."""
    rest = [m for m in conversation if m["role"] != "system"]
    if error.kind != "refused" or len(rest) == len(conversation):
        return False
    try:
        subject.render(rest)
    except RenderError:
        return False
    return True


@check(Layer.TEMPLATE, needs="nothing")
def renders(subject: Subject) -> list[Finding]:
    """Every valid conversation renders: the plain ones (user only; system + user + assistant), with and
    without the generation prompt, and a hypothesis sample of the conversations the template supports.

    Catches templates that do not parse, that crash on ordinary input (a missing variable, a type error, an
    empty message) or that render nothing. A deliberate ``raise_exception`` (on the system role, or on a shape
    the format does not support) is a legal policy and only a warning. The plain conversations and the first
    sampled ones render again with each of the template's switches (``enable_thinking``: a variable it reads
    only as a condition) set both ways, as servers pass them in ``chat_template_kwargs``.
    """
    unparsed = parse_error(subject)
    if unparsed is not None:
        return [SYNTAX(f"the template does not parse or compile: {unparsed}")]
    failures: dict[str, list[tuple[str, RenderError, conv.Conversation]]] = {}
    texts = []
    plain = ("user only", "system + user + assistant")
    subject.prefetch_each(
        [(conv.PLAIN[n], {"add_generation_prompt": p}) for n in plain for p in (False, True)]
    )
    for name in plain:
        conversation = conv.PLAIN[name]
        for add_generation_prompt in (False, True):
            try:
                texts.append(subject.render(conversation, add_generation_prompt=add_generation_prompt))
            except RenderError as error:
                if _refused_system(subject, error, conversation):
                    key = SYSTEM_REFUSED.key
                elif error.kind == "security":  # the sandbox check owns it: one root cause, one failure
                    key = SANDBOX_REFUSED
                else:
                    key = PLAIN_REFUSED.key if error.kind == "refused" else CRASH.key
                where = f"{name}, add_generation_prompt={add_generation_prompt}"
                failures.setdefault(key, []).append((where, error, conversation))
    findings = [_plain_failure(key, cases) for key, cases in failures.items()]
    if texts and not any(t.strip() for t in texts):
        findings.append(EMPTY("the template renders nothing for the plain conversations: an empty prompt"))
    if {CRASH.key, PLAIN_REFUSED.key, SANDBOX_REFUSED} & set(failures) or any(
        f.cause == EMPTY.key for f in findings
    ):
        return findings  # the sample would only repeat it
    findings += probe_findings(subject, "renders", crash=CRASH, refused=REFUSED)

    sandbox_saw = any(f.kind == "security" for f in probe(subject).failures)
    tools_refused = _tools_refusals(subject)

    def judge(conversation: conv.Conversation) -> list[Finding]:
        try:
            subject.render(conversation, add_generation_prompt=True)
        except RenderError as error:
            if error.kind == "security" and sandbox_saw:  # the sandbox check reports it with its probe
                return [_foreign(SANDBOX_REFUSED, f"a valid conversation does not render: {error}")]
            if error.kind == "refused" and str(error) in tools_refused:  # a tool shape's constraint
                return [
                    _foreign(
                        TOOLS_REFUSED,
                        f"a valid conversation does not render ({TOOLS_REFUSED} names the shape): {error}",
                    )
                ]
            return [_not_rendered(error)]
        return []

    sampled = _samples(subject, reasoning=True)
    subject.prefetch(sampled, add_generation_prompt=True)
    findings += by_cause(sampled, judge, owner="renders", reported=[f.cause for f in findings])
    return findings + under_switches(
        subject, lambda other: _switched_renders(other, sampled, tools_refused), findings
    )


#: How many of the sampled conversations ``renders`` renders again under each switch.
SWITCHED_SAMPLES = 10


def _switched_renders(
    subject: Subject, sampled: list[conv.Conversation], tools_refused: frozenset[str]
) -> list[Finding]:
    """The plain conversations and the first sampled ones that do not render on ``subject`` (a switch set),
    but for the refusals of ``tools_refused`` (the tools check reports them)."""
    conversations = [*conv.PLAIN.values(), *sampled[:SWITCHED_SAMPLES]]
    found = []
    for conversation, rendered in zip(
        conversations, subject.render_each(conversations, add_generation_prompt=True), strict=True
    ):
        if (
            isinstance(rendered, RenderError)
            and rendered.kind != "security"
            and not (rendered.kind == "refused" and str(rendered) in tools_refused)
        ):
            finding = _not_rendered(rendered)
            found.append(
                replace(finding, message=f"{finding.message}\nconversation:\n{conv.describe(conversation)}")
            )
    return distinct(found)


def _tools_refusals(subject: Subject) -> frozenset[str]:
    """The refusals of the tool shapes of the capability probe, which the tools check reports. A sampled
    conversation refused in the same words meets the same stated constraint; a crash's text (a Python error)
    is no such statement, so crashes are not matched."""
    return frozenset(f.error for f in probe(subject).failures if f.owner == "tools" and f.kind == "refused")


def _not_rendered(error: RenderError) -> Finding:
    """A valid conversation that does not render: refused by the template (a warning) or a crash."""
    if _render_cause(error) is REFUSED:
        return REFUSED(f"the template refuses a valid conversation: {error}")
    return CRASH(f"a valid conversation does not render: {error}")


def probe_findings(subject: Subject, owner: str, *, crash: Cause, refused: Cause) -> list[Finding]:
    """The capability probes and wire shapes of ``owner`` that do not render, one finding per cause naming
    each shape: a crash on a shape clients send is ``crash`` (with the fix of its first shape), a
    ``raise_exception`` is ``refused`` (a warning naming the template's constraint), a refusal of the sandbox
    is the sandbox check's cause (a note here)."""
    by_kind: dict[str, list[Failure]] = {}
    for failure in probe(subject).failures:
        if failure.owner == owner:
            by_kind.setdefault("crash" if failure.kind == "raised" else failure.kind, []).append(failure)
    found = []
    for kind, failures in by_kind.items():
        first = failures[0]
        also = "".join(f"\n  also: {f.shape}: {f.error}" for f in failures[1:])
        shown = f"{also}\nconversation:\n{conv.describe(first.messages)}"
        if kind == "refused":
            text = f"the template refuses {first.shape} (a constraint of its own): {first.error}{shown}"
            found.append(refused(text))
        elif kind == "security":
            found.append(_foreign(SANDBOX_REFUSED, f"{first.shape} does not render: {first.error}"))
        else:
            text = f"{first.shape} does not render, though clients send it: {first.error}{shown}"
            found.append(crash(text, fix=_crash_fix(first)))
    return found


def _crash_fix(failure: Failure) -> str:
    """The fix for a crash: the shape's, unless the error names a better one (a generator given to
    ``tojson``: ``map`` and ``select`` return generators in Jinja, lists in some other engines)."""
    if "Object of type generator is not JSON serializable" in failure.error:
        return (
            "add | list before | tojson: map, select and reject return generators, which JSON cannot encode"
        )
    return failure.fix


def _render_cause(error: RenderError) -> Cause:
    return REFUSED if error.kind == "refused" else CRASH


def _plain_failure(key: str, cases: list[tuple[str, RenderError, conv.Conversation]]) -> Finding:
    where, error, conversation = cases[0]
    also = "".join(f"\n  also: {w}" for w, _, _ in cases[1:])
    if key == SYSTEM_REFUSED.key:
        return SYSTEM_REFUSED(f"the template refuses a system message ({where}): {error}{also}")
    if key == SANDBOX_REFUSED:
        return _foreign(SANDBOX_REFUSED, f"the template does not render ({where}): {error}{also}")
    rule = CRASH if key == CRASH.key else PLAIN_REFUSED
    return rule(f"the template does not render ({where}): {error}{also}\n{conv.describe(conversation)}")


# ------------------------------------------------------------------------------------------ generation prompt

ALWAYS_ADDED = defect(
    "generation_prompt.always_added",
    "a rendering without add_generation_prompt (a training example, a stored conversation, a prefix cache) "
    "ends with an open assistant turn; only add_generation_prompt=True should open one",
)
IGNORED = defect(
    "generation_prompt.ignored",
    "without the assistant header the model continues the user's turn instead of replying",
)
REWRITES = defect(
    "generation_prompt.rewrites",
    "the prompt then differs from the conversation the client sent before the point where the model starts",
)
HEADER_MISMATCH = defect(
    "generation_prompt.header_mismatch",
    "the model is prompted with a header that differs from the one before replies in rendered history",
)
HEADER_INCOMPLETE = policy(
    "generation_prompt.header_incomplete",
    "leaving the end of the header (a space, a newline, an empty thinking block) to the model is a choice some "
    "formats make deliberately; it works when the model was trained that way",
)
FORCED_PREFIX = policy(
    "generation_prompt.forced_prefix",
    "a forced opener after the header (a thinking block) is a deliberate choice of reasoning formats; history "
    "and prompt then differ by design",
)
CONTINUE_FAILS = defect(
    "generation_prompt.continue_fails",
    "continue_final_message is transformers' documented way to prefill the start of a reply",
)
CONTINUE_CLOSED = defect(
    "generation_prompt.continue_closed",
    "a prefilled reply that is closed (or changed) cannot be continued by the model",
)


@check(Layer.TEMPLATE)
def generation_prompt(subject: Subject) -> list[Finding]:
    """``add_generation_prompt=True`` appends to the ``False`` rendering exactly the header that precedes an
    assistant reply in a rendered conversation, and the ``False`` rendering does not already end with it;
    ``continue_final_message`` leaves the last reply open.

    Catches templates that ignore ``add_generation_prompt`` (the model then continues the user's turn), that
    write the assistant header whatever it says (the original Llama 3 template), that rewrite the conversation
    when it is set, whose prompt header differs from the one written before stored replies, or that cannot
    continue a prefilled reply. A format without an assistant header (Mistral, Llama 2: the reply follows
    ``[/INST]``) passes with an empty prompt. A prompt that adds a forced prefix after the header (a thinking
    opener) or leaves part of the header to the model is a warning.
    """
    skip = blank(subject)
    if skip is not None:
        return skip
    added = always_added(subject)
    findings = [] if added is None else [added.finding]
    tried = 0
    plain = [conv.PLAIN["user only"], conv.PLAIN["system + user"]]
    subject.prefetch_each(
        [(c, {"add_generation_prompt": flag}) for c in plain for flag in (False, True)]
        + [([*c, conv.assistant(conv.ASSISTANT_TEXT)], {}) for c in plain]
    )
    for name in ("user only", "system + user"):
        conversation = conv.PLAIN[name]
        try:
            found = generation_prompt_of(subject, conversation)
        except RenderError:
            continue  # reported by `renders`
        tried += 1
        shown = f"conversation ({name}):\n{conv.describe(conversation)}"
        findings += [replace(f, message=f"{f.message}\n{shown}") for f in found]
    if not tried:
        return [skipped("no plain conversation renders (see `renders`)")]
    findings = distinct(findings)

    def judge_prompt(conversation: conv.Conversation) -> list[Finding]:
        try:
            return generation_prompt_of(subject, conversation)
        except RenderError:
            return []

    sampled = _samples(subject, share=2)
    # one batch, in the order the judge asks for them, so that it judges each conversation while the worker
    # renders the next
    subject.prefetch_each(
        [
            render
            for c in sampled
            for render in (
                (c, {"add_generation_prompt": False}),
                (c, {"add_generation_prompt": True}),
                ([*c, conv.assistant(conv.ASSISTANT_TEXT)], {"add_generation_prompt": False}),
            )
        ]
    )
    findings += by_cause(
        sampled,
        judge_prompt,
        owner="generation_prompt",
        reported=[f.cause for f in findings],
    )
    replies = _samples(subject, end_with_user=False, share=4)
    open_ = [
        c
        for c in replies
        if c[-1].get("role") == "assistant"
        and isinstance(c[-1].get("content"), str)
        and c[-1]["content"].strip()
    ]
    try:  # in the order the judge asks for them
        subject.prefetch_each(
            [render for c in open_ for render in ((c, {}), (c, {"continue_final_message": True}))]
        )
    except ValueError:  # a template that never reads the content: the judge says so
        subject.prefetch(open_)
    return findings + by_cause(
        replies,
        _continue_judge(subject),
        owner="generation_prompt",
        reported=[f.cause for f in findings],
    )


def generation_prompt_of(subject: Subject, conversation: conv.Conversation) -> list[Finding]:
    """The causes by which the generation prompt of ``conversation`` is wrong (none when it is right)."""
    replied = [*conversation, conv.assistant(conv.ASSISTANT_TEXT)]
    without = subject.render(conversation, add_generation_prompt=False)
    with_prompt = subject.render(conversation, add_generation_prompt=True)
    full = subject.render(replied, add_generation_prompt=False)
    if with_prompt == without and always_added(subject) is not None:
        return []  # the flag is ignored and the header always written: `always_added` says so
    found: list[Finding] = []
    eos = _final_eos(subject, without, with_prompt, full)
    if eos:
        if with_prompt == without:
            with_prompt = with_prompt[: len(with_prompt) - len(eos)]
        without = without[: len(without) - len(eos)]
        found.append(
            FINAL_EOS(
                f"the rendering without add_generation_prompt ends with {eos!r}, which the generation prompt "
                "replaces: the end-of-sequence token closes only the final turn"
            )
        )
    verdict = judge_generation_prompt(without, with_prompt, full, reasoning_template(subject.template.source))
    if verdict is not None and verdict.cause in (REWRITES.key, HEADER_MISMATCH.key):
        verdict = _system_placement(subject, conversation, full) or verdict
    return found + ([verdict] if verdict is not None else [])


def _final_eos(subject: Subject, without: str, with_prompt: str, full: str) -> str:
    """The end-of-sequence text ending ``without`` that a reply or the generation prompt replaces, or ``""``:
    the convention of closing only the final turn with EOS (``prefix_stability.final_eos``)."""
    eos = subject.model.renderer.special_tokens.get("eos_token", "")
    stripped = without.rstrip()
    if not eos or not stripped.endswith(eos) or full.startswith(without):
        return ""
    kept = stripped[: len(stripped) - len(eos)]
    if not full.startswith(kept):
        return ""
    if with_prompt == without or (with_prompt.startswith(kept) and not with_prompt.startswith(without)):
        return without[len(kept) :]
    return ""


def _system_placement(subject: Subject, conversation: conv.Conversation, full: str) -> Finding | None:
    """When the mismatch goes away without the system message, the cause is where the system prompt goes."""
    system = [m for m in conversation if m.get("role") == "system"]
    rest = [m for m in conversation if m.get("role") != "system"]
    if not system or not rest:
        return None
    try:
        alone = generation_prompt_of(subject, rest)
    except RenderError:
        return None
    if any(f.cause in (REWRITES.key, HEADER_MISMATCH.key) for f in alone):
        return None
    text = system[0].get("content")
    if isinstance(text, str) and text.strip() and text.strip() not in full:
        return SYSTEM_DROPPED(
            "the system message is dropped once an assistant reply follows the last user turn"
        )
    return SYSTEM_MOVED(
        "the system message is placed differently once an assistant reply follows the last user turn"
    )


def judge_generation_prompt(without: str, with_prompt: str, full: str, reasoning: bool) -> Finding | None:
    """What is wrong with a generation prompt, from the rendering without it, with it, and with a reply stored
    (``reasoning``: the template handles reasoning, so a thinking opener is its convention); ``None``: right."""
    if not with_prompt.startswith(without):
        return REWRITES(
            "add_generation_prompt=True changes the conversation instead of appending a header\n"
            + diff(without, with_prompt, labels=("add_generation_prompt=False", "True"))
        )
    header = with_prompt[len(without) :]
    at = full.find(conv.ASSISTANT_TEXT, len(without)) if full.startswith(without) else -1
    if at < 0:  # the reply is not where it should be: compare the prompt with the rendered turn directly
        if full.startswith(with_prompt) and header.strip():
            return None
        return HEADER_MISMATCH(
            "a rendered assistant turn does not start with the generation prompt "
            f"{header!r}: the model is prompted differently from how its replies are written\n"
            + diff(with_prompt, full[: len(with_prompt) + 40], labels=("prompt", "rendered reply"))
        )
    turn = full[len(without) : at]
    if header == turn or (not header and not turn.strip()):
        return None
    if not header.strip():
        return IGNORED(
            f"add_generation_prompt=True adds {'no' if not header else f'only {header!r} as'} assistant header, "
            f"but replies are written after {turn!r}: the model is asked to continue the user's turn\n"
            f"  rendering with add_generation_prompt=True:\n{quote(with_prompt)}",
            fix="end the template with {% if add_generation_prompt %}{{ "
            + json.dumps(turn)
            + " }}{% endif %}",
        )
    if turn.startswith(header):
        return HEADER_INCOMPLETE(
            f"the generation prompt {header!r} lacks {turn[len(header) :]!r}, which precedes replies in rendered "
            f"turns ({turn!r}): the model must generate it itself (whitespace, or a block such as an empty "
            "thinking block)"
        )
    if header.startswith(turn):
        return FORCED_PREFIX(
            f"the generation prompt adds {header[len(turn) :]!r} after the turn header {turn!r}, which rendered "
            "replies do not have (a forced prefix such as a thinking opener): history and prompt differ"
        )
    if reasoning and _squeeze(header) == _squeeze(turn):
        return FORCED_PREFIX(
            f"the generation prompt {header!r} opens the thinking block differently from rendered replies "
            f"({turn!r}, the form history keeps once reasoning is dropped): history and prompt differ by design"
        )
    return HEADER_MISMATCH(
        f"a rendered assistant turn does not start with the generation-prompt header {header!r} but with "
        f"{turn!r}: the model is prompted differently from how its replies are written\n"
        + diff(without + header, without + turn, labels=("prompt + header", "rendered reply"))
    )


class AlwaysAdded:
    """The assistant header a template writes without ``add_generation_prompt``: ``tail`` ends every
    rendering, also one that ends with an assistant reply (``None`` when it follows user turns only)."""

    def __init__(self, tail: str | None, finding: Finding) -> None:
        self.tail = tail
        self.finding = finding


#: One piece of rendered markup: a special-token-like tag, a bracket tag, a word, a run of whitespace.
_PIECE = re.compile(r"<\|[^<>|]*\|>|<[/!]?[A-Za-z_][^<>\s]*>|\[/?[A-Z_]+\]|[^\W_]+|\s+|.", re.S)


def snap(text: str, at: int) -> int:
    """``at`` moved back to the start of the markup piece it falls in (``<|start_header_id|>``, a word)."""
    for match in _PIECE.finditer(text, max(0, at - 200)):
        if match.start() <= at < match.end():
            return match.start()
        if match.start() > at:
            break
    return at


def _tail_break(head: str, full: str) -> tuple[str, str]:
    """Where ``head`` stops being a prefix of ``full``: the rest of ``head`` and of ``full`` from the first
    differing markup piece on."""
    same = next(
        (i for i, (a, b) in enumerate(zip(head, full, strict=False)) if a != b), min(len(head), len(full))
    )
    at = snap(head, same)
    return head[at:], full[at:]


def always_added(subject: Subject) -> AlwaysAdded | None:
    """The assistant header the template writes after every conversation, with or without the flag.

    It is the tail that a rendering ending with an assistant reply has and the longer conversation does not,
    that also ends the rendering of a lone user turn, and that belongs to the text before a reply. A format
    whose reply directly follows the user turn (Mistral's ``[/INST]``) writes it after user turns only.
    """
    key = ("always added", *subject.template.key)
    if key not in subject.model.cache:
        subject.model.cache[key] = _find_always_added(subject)
    found = subject.model.cache[key]
    return found if isinstance(found, AlwaysAdded) else None


def _find_always_added(subject: Subject) -> AlwaysAdded | None:
    replied = [*conv.USER_ONLY, conv.assistant(conv.ASSISTANT_TEXT)]
    try:
        alone = subject.render(conv.USER_ONLY)
        prompted = subject.render(conv.USER_ONLY, add_generation_prompt=True)
        reply = subject.render(replied)
        longer = subject.render([*replied, conv.user("And of Italy?")])
    except RenderError:
        return None
    user_end = reply.find(conv.USER_TEXT) + len(conv.USER_TEXT)
    reply_at = reply.find(conv.ASSISTANT_TEXT, user_end)
    if reply_at < 0 or alone.rfind(conv.USER_TEXT) < 0:
        return None
    before_reply = reply[user_end:reply_at]
    after_user = alone[alone.rfind(conv.USER_TEXT) + len(conv.USER_TEXT) :]
    tail = _tail_after_reply(subject, alone, reply, longer, before_reply)
    if tail is not None:
        ends = after_user if reply.endswith(after_user) else tail
        where = (
            f"writes {ends!r} at the end of every conversation, after the last user message and after a final "
            "assistant reply"
        )
    elif (
        prompted == alone and after_user.startswith(before_reply) and after_user[len(before_reply) :].strip()
    ):
        where = f"writes {after_user!r} after the last user message (the header before replies, and more)"
    else:
        return None
    return AlwaysAdded(
        tail,
        ALWAYS_ADDED(
            "the rendering without add_generation_prompt already ends with the assistant header: the template "
            f"{where}, whatever add_generation_prompt says\n"
            f"  rendering of {conv.USER_TEXT!r} with add_generation_prompt=False:\n{quote(alone)}",
            fix="write the assistant header only inside {% if add_generation_prompt %}...{% endif %}",
        ),
    )


def _tail_after_reply(subject: Subject, alone: str, reply: str, longer: str, before_reply: str) -> str | None:
    """The header that ends a rendering whose last message is an assistant reply, and that a later turn
    replaces: it also ends the rendering of a lone user turn, and belongs to the text before a reply."""
    if longer.startswith(reply):
        return None
    tail, _ = _tail_break(reply, longer)
    first = next((m.group(0) for m in _PIECE.finditer(tail) if m.group(0).strip()), "")
    eos = subject.model.renderer.special_tokens.get("eos_token", "")
    if not first or not alone.endswith(tail) or first not in before_reply:
        return None
    if eos and tail.strip() == eos:
        return None  # an end-of-sequence token after every rendering, not a header: `final_eos`'s convention
    return tail


def _continue_judge(subject: Subject) -> Judge:
    def judge(conversation: conv.Conversation) -> list[Finding]:
        last = conversation[-1]
        if (
            last.get("role") != "assistant"
            or not isinstance(last.get("content"), str)
            or not last["content"].strip()
        ):
            return []
        try:
            full = subject.render(conversation)
        except RenderError:
            return []
        try:
            opened = subject.render(conversation, continue_final_message=True)
        except RenderError as error:
            return [CONTINUE_FAILS(f"continue_final_message=True fails: {error}")]
        # The reply's own trailing whitespace is the caller's: a template that trims the closed turn's text
        # (as a format) does not close the continued one for writing it.
        head = opened.rstrip()
        if not full.startswith(head) or not head.endswith(last["content"].strip()):
            return [
                CONTINUE_CLOSED(
                    "continue_final_message=True does not leave the last reply open: the prefilled reply is not "
                    "a prefix of the closed turn\n"
                    + diff(full[: len(opened)], opened, labels=("closed turn", "continued"))
                )
            ]
        return []

    return judge


# ------------------------------------------------------------------------------------------ prefix stability

HISTORY_CHANGED = defect(
    "prefix_stability.history_changed",
    "KV-cache reuse, multi-turn evaluation and training masks assume that earlier turns render the same once "
    "later turns follow",
)
SYSTEM_MOVED = policy(
    "prefix_stability.system_moved",
    "some formats place the system prompt by the last user turn by design (Mistral v0.3): the model sees the "
    "prompt it was trained on, but prefix caches must re-render",
)
TOOLS_MOVED = policy(
    "prefix_stability.tools_moved",
    "some formats place the tool definitions by the last user turn by design (Mistral's [AVAILABLE_TOOLS])",
)
REASONING_DROPPED = policy(
    "prefix_stability.reasoning_dropped",
    "reasoning formats drop the thinking of earlier turns by design, as their models were trained",
)
FINAL_EOS = policy(
    "prefix_stability.final_eos",
    "writing the end-of-sequence token only after the last message marks where a training example ends; a "
    "prefix cache must drop it before appending turns",
)
FINAL_CLOSER = policy(
    "prefix_stability.final_closer",
    "a format may close the final reply with its own token (gpt-oss: <|return|> for the last reply, <|end|> "
    "in history); harnesses replace it when the conversation grows",
)


def _assistant_ends(conversation: conv.Conversation) -> list[int]:
    """Indexes just past each final assistant reply (not a tool-calling turn)."""
    return [
        i + 1
        for i, m in enumerate(conversation)
        if m.get("role") == "assistant" and not m.get("tool_calls") and i + 1 < len(conversation)
    ]


def _prefetch_prefixes(subject: Subject, conversations: list[conv.Conversation]) -> None:
    """The renders :func:`_prefix_breaks` asks for, in batches."""
    renders = []
    for conversation in conversations:
        renders += _prefix_renders(subject, conversation, subject.client_tools(conversation))
    subject.prefetch_each(renders)


def _prefix_renders(
    subject: Subject, conversation: conv.Conversation, tools: Any
) -> list[tuple[conv.Conversation, dict[str, Any]]]:
    arguments = {"tools": tools}
    return [
        (c, arguments) for c in (conversation, *(conversation[:end] for end in _assistant_ends(conversation)))
    ]


def _prefetch_variants(subject: Subject, conversations: list[conv.Conversation]) -> None:
    """The renders :func:`unexplained_break` asks for, in one batch, for the conversations that break at a
    boundary no convention explains (their prefixes are rendered already)."""
    renders = []
    for conversation in conversations:
        try:
            breaks = _prefix_breaks(subject, conversation)
        except RenderError:
            continue
        if all(convention_of(subject, head, full) is not None for _, head, full in breaks):
            continue
        rest = [m for m in conversation if m.get("role") != "system"]
        renders += _prefix_renders(subject, rest, subject.client_tools(rest))
        renders += _prefix_renders(subject, conversation, None) + _prefix_renders(subject, rest, None)
    subject.prefetch_each(renders)


def _prefix_breaks(
    subject: Subject, conversation: conv.Conversation, **kwargs: Any
) -> list[tuple[int, str, str]]:
    """``(end, head, full)`` for each assistant boundary ``end`` where the rendering of the first ``end``
    messages (``head``) is not a prefix of the rendering of all of them (``full``).

    Every rendering gets the tools of the whole conversation, as a client sends the same tools each turn.
    """
    kwargs.setdefault("tools", subject.client_tools(conversation))
    full = subject.render(conversation, **kwargs)
    breaks = []
    for end in _assistant_ends(conversation):
        head = subject.render(conversation[:end], **kwargs)
        if not full.startswith(head):
            breaks.append((end, head, full))
    return breaks


_MARKUP = re.compile(r"\s*(<\|[^<>|]*\|>|<[/!]?[A-Za-z_][^<>\s]*>|\[/?[A-Z_]+\])\s*")
_REASONING_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>\s*", re.DOTALL)
_REASONING_TAG = re.compile(r"</?(think|thinking|reasoning)>")


def _squeeze(text: str) -> str:
    """``text`` without reasoning blocks, reasoning tags and whitespace, to tell a reasoning rewrite from
    other changes."""
    return re.sub(r"\s+", "", _REASONING_TAG.sub("", _REASONING_BLOCK.sub("", text)))


def reasoning_template(source: str) -> bool:
    """Whether the template handles reasoning (thinking) text."""
    return any(word in source for word in ("reasoning_content", "<think>", "</think>", "thinking"))


def convention_of(subject: Subject, head: str, full: str) -> Finding | None:
    """The deliberate convention that explains a break at the end of ``head``, if one does."""
    added = always_added(subject)
    tail = added.tail if added is not None else None
    if added is not None and tail and head.endswith(tail) and full.startswith(head[: len(head) - len(tail)]):
        return added.finding
    ending, instead = _tail_break(head, full)
    eos = subject.model.renderer.special_tokens.get("eos_token", "")
    if eos and ending.strip() == eos:
        return FINAL_EOS(
            f"history rewrite by convention: the template writes the end-of-sequence token {eos!r} only after "
            "the final message; once later turns follow it is gone"
        )
    theirs = _MARKUP.match(instead)
    if _MARKUP.fullmatch(ending) and theirs and theirs.group(1) != ending.strip():
        return FINAL_CLOSER(
            f"history rewrite by convention: the final reply is closed with {ending.strip()!r}, the same reply "
            f"in history with {theirs.group(1)!r}"
        )
    if reasoning_template(subject.template.source) and _squeeze(full).startswith(_squeeze(head)):
        return REASONING_DROPPED(
            "history rewrite: the reasoning block of an earlier assistant turn is dropped or changed once "
            "later turns follow (deliberate in reasoning templates; prefix caches and training masks must "
            "account for it)"
        )
    return None


@check(Layer.TEMPLATE)
def prefix_stability(subject: Subject) -> list[Finding]:
    """At every assistant boundary, the rendering of the first turns is a prefix of the rendering of all turns.

    Catches templates whose rendering of history changes as the conversation grows: KV-cache reuse,
    multi-turn evaluations and training masks all assume it does not. A deliberate convention of the format
    is a warning that names it: the end-of-sequence token after the final turn only, a final reply closed
    with its own token (gpt-oss), reasoning of earlier turns dropped, the system prompt or the tool
    definitions placed by the last user turn. An assistant header written after every conversation is
    ``generation_prompt``'s finding.
    """
    skip = blank(subject)
    if skip is not None:
        return skip
    findings = _reasoning_rewrite(subject)

    def judge(conversation: conv.Conversation) -> list[Finding]:
        try:
            breaks = _prefix_breaks(subject, conversation)
        except RenderError:
            return []
        found, pending = [], []
        for end, head, full in breaks:
            known = convention_of(subject, head, full)
            if known is not None:
                found.append(known)
            else:
                pending.append((end, head, full))
        if pending:
            found += unexplained_break(subject, conversation, *pending[0])
        return distinct(found)

    conversations = [*_MULTI_TURN, *_tool_turns(subject), *_samples(subject, end_with_user=False, share=2)]
    _prefetch_prefixes(subject, conversations)
    _prefetch_variants(subject, conversations)
    return findings + by_cause(
        conversations,
        judge,
        owner="prefix_stability",
        reported=[f.cause for f in findings],
    )


#: Plain multi-turn conversations judged before the sample, so that every template gets them.
_MULTI_TURN: list[conv.Conversation] = [
    [
        conv.system(conv.SYSTEM_TEXT),
        conv.user(conv.USER_TEXT),
        conv.assistant(conv.ASSISTANT_TEXT),
        conv.user("And of Italy?"),
        conv.assistant("Rome."),
    ],
    [conv.user(conv.USER_TEXT), conv.assistant(conv.ASSISTANT_TEXT), conv.user("And of Italy?")],
]


def _tool_turns(subject: Subject) -> list[conv.Conversation]:
    """A conversation with a tool exchange (a reply with text and a call, its result, a reply, a user turn),
    judged before the sample for a template that renders tool calls, so that every such template gets it."""
    caps = probe(subject)
    if not caps.tool_calls:
        return []
    arguments: Any = {"city": "Paris"} if caps.object_arguments else json.dumps({"city": "Paris"})
    call = {
        "id": CALL_IDS[0],
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    turns: conv.Conversation = [
        conv.user("What is the weather in Paris?"),
        {"role": "assistant", "content": "Let me look it up.", "tool_calls": [call]},
    ]
    if caps.tool_role:
        turns.append({"role": "tool", "tool_call_id": CALL_IDS[0], "name": "get_weather", "content": "sunny"})
    return [[*turns, conv.assistant("It is sunny."), conv.user("Thanks!")]]


def unexplained_break(
    subject: Subject, conversation: conv.Conversation, end: int, head: str, full: str
) -> list[Finding]:
    """A break no convention explains: the system prompt or the tools moving (or both), or a defect."""
    system = [m for m in conversation if m.get("role") != "system"]
    for moved, variant, kwargs in (
        ((SYSTEM_MOVED,), system, {}),
        ((TOOLS_MOVED,), conversation, {"tools": None}),
        ((SYSTEM_MOVED, TOOLS_MOVED), system, {"tools": None}),
    ):
        if variant == conversation and not kwargs:
            continue
        try:
            left = [
                end
                for end, head, full in _prefix_breaks(subject, variant, **kwargs)
                if convention_of(subject, head, full) is None
            ]
        except RenderError:
            continue
        if not left:
            return [
                cause(
                    f"history rewrite: where the template places the {MOVED_PARTS[cause.key]} changes as the "
                    "conversation grows (e.g. by the last user turn), so the rendering of earlier turns changes "
                    "with each new turn"
                )
                for cause in moved
            ]
    return [
        HISTORY_CHANGED(
            f"the rendering of the first {end} messages is not a prefix of the whole conversation's: earlier "
            "turns render differently once later turns follow\n"
            + diff(head, full[: len(head) + 40], labels=(f"first {end} messages", "whole conversation"))
        )
    ]


#: What each cause of a part placed differently across turns moves, as findings name it.
MOVED_PARTS = {SYSTEM_MOVED.key: "system message", TOOLS_MOVED.key: "tool definitions"}


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
            REASONING_DROPPED(
                "history rewrite: the reasoning of an assistant turn is dropped once a later user turn follows "
                "(deliberate in reasoning templates; prefix caches and training masks must account for it)"
            )
        ]
    return []


# ------------------------------------------------------------------------------------------ content fidelity

SYSTEM_DROPPED = defect(
    "content_fidelity.system_dropped",
    "the caller believes the model saw its system prompt; a template that cannot take one should refuse it",
)
DROPPED = defect("content_fidelity.dropped", "a message the caller sent never reaches the model")
TRIMMED = defect(
    "content_fidelity.trimmed",
    "whitespace at the edges of a message (indented code, a leading newline) is part of the text the caller "
    "sent; a template that trims the user's text and keeps the replies' follows no format",
)
TRIMMED_AS_FORMAT = policy(
    "content_fidelity.trimmed_as_format",
    "trimming every turn's text (Llama 3 and Gemma do), or only the template's own side (replies written back "
    "as history, the system prompt), is a format decision: whether it is the model's format is the reference "
    "check's to judge",
)
ALTERED = defect("content_fidelity.altered", "the model reads text the caller did not send")
REPEATED = defect("content_fidelity.repeated", "a message rendered twice is a different conversation")
REORDERED = defect("content_fidelity.reordered", "turns out of order are a different conversation")
LIST_REPR = defect(
    "content_fidelity.list_content_repr",
    "clients send OpenAI-style list content ([{'type': 'text', ...}]) and apply_chat_template passes it to the "
    "template unchanged: a Python repr of it silently reaches the model",
)
LIST_DROPPED = defect(
    "content_fidelity.list_content_dropped",
    "clients send OpenAI-style list content and apply_chat_template passes it unchanged: its text silently "
    "never reaches the model",
)
LIST_RAISES = policy(
    "content_fidelity.list_content_raises",
    "a template that accepts only string content and raises on list content gives the client an error, never "
    "a wrong prompt (vLLM flattens text parts for such a 'string' template); raise_exception makes it clear",
)

#: Causes that tool messages and tool-calling turns map to: the `tools` check owns them.
CONTENT_DROPPED_WITH_CALLS = "tools.content_dropped_with_calls"
RESULT_DROPPED = "tools.result_dropped"
DICT_RESULT_DROPPED = "tools.dict_result_dropped"
RESULT_REPR = "tools.result_repr"


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
        elif isinstance(content, dict):  # a tool result given as an object
            fields = {k: mark(v, i) if isinstance(v, str) else v for k, v in content.items()}
            message = {**message, "content": fields}
        tagged.append(message)
    return tagged


def texts(message: conv.Message) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def _foreign(cause: str, message: str) -> Finding:
    """A finding of a cause another check owns (it becomes a note of the check that observes it)."""
    return Finding(Outcome.FAILED, message, cause)


def _message_finding(rendered: str, i: int, message: conv.Message, text: str) -> Finding | None:
    """How ``rendered`` fails to show ``text`` of message ``i`` verbatim, once (order is checked apart)."""
    role = message.get("role")
    marker = f"⟪{i}⟫"
    if rendered.find(text) >= 0 or rendered.find(json.dumps(text, ensure_ascii=False)[1:-1]) >= 0:
        if rendered.count(text) > 1:
            return REPEATED(f"the {role} message {i} is rendered more than once")
        return None
    if marker not in rendered:
        if message.get("tool_calls"):
            return _foreign(
                CONTENT_DROPPED_WITH_CALLS,
                f"the content of assistant message {i} is dropped because it has tool calls",
            )
        if role == "tool":
            return _foreign(RESULT_DROPPED, f"the tool message {i} is dropped")
        rule = SYSTEM_DROPPED if role == "system" else DROPPED
        return rule(f"the {role} message {i} is silently dropped")
    if text.strip() and text.strip() in rendered:
        return TRIMMED(
            f"the {role} message {i} is trimmed: {text!r} renders as {text.strip()!r} "
            "(leading/trailing whitespace removed)"
        )
    start = rendered.find(marker)
    shown = rendered[max(0, start - 5) : start + len(text) + 5]
    return ALTERED(f"the {role} message {i} is altered: {text!r} renders as …{shown!r}…")


def _object_dropped(rendered: str, content: dict[str, Any]) -> bool:
    """None of the text values of an object (a tool result given as a dict) reaches the prompt, as text or
    JSON-escaped (Qwen3's ``<tool_response>\n\n</tool_response>``)."""
    values = [v for v in content.values() if isinstance(v, str) and v.strip()]
    escaped = [json.dumps(v, ensure_ascii=False)[1:-1] for v in values]
    return bool(values) and not any(v in rendered for v in [*values, *escaped])


def fidelity_findings(rendered: str, conversation: conv.Conversation) -> list[Finding]:
    """Every way ``rendered`` fails to show each text of the tagged ``conversation`` verbatim, once, in order:
    one finding per cause, in the order of the messages."""
    found: list[Finding] = []
    position = 0
    first_turn_at: int | None = None
    system_at: list[tuple[int, int]] = []
    for i, message in enumerate(conversation):
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, dict) and repr(content) in rendered:  # a tool result given as an object
            found.append(
                _foreign(RESULT_REPR, f"the tool message {i} (an object) is rendered as a Python repr")
            )
            continue
        if isinstance(content, list) and repr(content) in rendered:
            found.append(
                LIST_REPR(f"the {role} message {i} content is rendered as a Python repr; use its text")
            )
            continue
        if isinstance(content, dict) and _object_dropped(rendered, content):
            found.append(
                _foreign(
                    DICT_RESULT_DROPPED, f"the tool message {i} (a result given as an object) is dropped"
                )
            )
            continue
        for text in texts(message):
            if not text:
                continue
            problem = _message_finding(rendered, i, message, text)
            if problem is not None:
                found.append(problem)
                continue
            at = rendered.find(text)
            if at < 0:
                continue  # written as a JSON string: its place is not compared
            if role == "system":  # a format may place it elsewhere (Mistral: in the last user turn)
                system_at.append((i, at))
                continue
            if role == "tool":  # a format may write a result inside the calling turn (Gemma 4)
                continue
            if at < position:
                found.append(REORDERED(f"the {role} message {i} is rendered out of order"))
            first_turn_at = at if first_turn_at is None else first_turn_at
            position = max(position, at + len(text))
    for i, at in system_at:
        if first_turn_at is not None and at > first_turn_at:
            found.append(
                _foreign(
                    SYSTEM_MOVED.key, f"the system message {i} is rendered after later messages, not first"
                )
            )
    return distinct(found)


@check(Layer.TEMPLATE)
def content_fidelity(subject: Subject) -> list[Finding]:
    """Every message's text appears in the rendering verbatim, once, in order; list content
    (``[{"type": "text", "text": ...}]``) is rendered as its text or refused, in user, system and assistant
    messages alike.

    Catches templates that silently drop a message (often the system message), trim or strip its whitespace,
    alter it, repeat it, reorder turns, print list content as a Python repr, or drop a tool result given as
    an object (noted here, the tools check's cause). Trimming is a warning when
    the template trims every message alike, or the model's reference format strips text itself (Llama,
    Gemma), or trims only its own side's text (replies written back as history, the system prompt): a
    format decision, official or community template alike, which the reference check compares with the
    family's format. Trimming the user's text while keeping the replies' edges is the defect.
    A template that raises on list content is a warning naming the content format it expects.
    """
    skip = blank(subject)
    if skip is not None:
        return skip
    stripping = _stripping_format(subject) or _trims_every_message(subject)
    keeps_replies = stripping is None and _keeps_replies(subject)

    def judge(conversation: conv.Conversation) -> list[Finding]:
        tagged = tag(conversation)
        try:
            rendered = subject.render(tagged)
        except RenderError:
            return []
        found = fidelity_findings(rendered, tagged)
        if stripping:
            found = [_as_format(f, stripping) for f in found]
        else:
            found = [_as_own_side(f) if not _users(f) or not keeps_replies else f for f in found]
        return distinct(found)

    plain = [conv.SYSTEM_USER_ASSISTANT, PADDED, *_tool_turns(subject)]
    findings = _list_content(subject)
    conversations = [*plain, *_samples(subject, end_with_user=False, share=2, reasoning=True)]
    subject.prefetch([tag(c) for c in conversations])
    return findings + by_cause(
        conversations,
        judge,
        owner="content_fidelity",
        reported=[f.cause for f in findings],
    )


#: One message of each role with whitespace at both edges (tabs: a template's own spaces and newlines after a
#: text cannot pass for the text's): a template that trims the turns' texts trims as a format.
PADDED: conv.Conversation = [
    conv.system(" padded \t\n"),
    conv.user("\n\t question \t"),
    conv.assistant("\t ok \t"),
]
#: What :func:`_trims_every_message` returns: not a format's name, the template's own decision.
EVERY_MESSAGE = "every message"


def _as_format(finding: Finding, stripping: str) -> Finding:
    if finding.cause != TRIMMED.key:
        return finding
    if stripping == EVERY_MESSAGE:
        return TRIMMED_AS_FORMAT(
            f"{finding.message}: the template trims every turn's text (the user's and the assistant's alike), "
            "a format decision: the model sees no edge whitespace, and the user's is lost"
        )
    return TRIMMED_AS_FORMAT(
        f"{finding.message}, as the {stripping} format does: the model never saw edge whitespace in training, "
        "but the user's is lost"
    )


def _users(finding: Finding) -> bool:
    """The finding is about a user message (``the user message 2 is trimmed: ...``)."""
    return finding.message.startswith("the user message ")


def _as_own_side(finding: Finding) -> Finding:
    if finding.cause != TRIMMED.key:
        return finding
    return TRIMMED_AS_FORMAT(
        f"{finding.message}: the template trims the text of its own side (replies written back as history, "
        "the system prompt), a format decision; the user's text is not trimmed with the replies kept"
    )


def _keeps_replies(subject: Subject) -> bool:
    """The template writes an assistant reply's edge whitespace as it is (:data:`PADDED`): a template that
    then trims the user's text loses the caller's whitespace where it keeps the model's, which no format
    prescribes (the defect); one that trims replies or the system prompt only normalises its own side."""
    tagged = tag(PADDED)
    try:
        rendered = subject.render(tagged)
    except RenderError:
        return True
    return _message_finding(rendered, 2, tagged[2], texts(tagged[2])[0]) is None


def _trims_every_message(subject: Subject) -> str | None:
    """:data:`EVERY_MESSAGE` when the template trims the text of every turn alike, the user's and the
    assistant's (:data:`PADDED`; a system prompt, often written apart, may keep its edges): trimming that is
    the template's format, as official Llama 3 templates and their community copies trim, not one turn's text
    lost and the other's kept. ``None`` when it keeps either, or does not render them."""
    tagged = tag(PADDED)
    try:
        rendered = subject.render(tagged)
    except RenderError:
        return None
    found = [
        _message_finding(rendered, i, message, texts(message)[0])
        for i, message in enumerate(tagged)
        if message["role"] != "system"
    ]
    return EVERY_MESSAGE if all(f is not None and f.cause == TRIMMED.key for f in found) else None


def _stripping_format(subject: Subject) -> str | None:
    """The name of the model's reference format when that format strips message text (see ``strips_text``)."""
    try:
        chosen = choose(subject.model, subject.options).format
    except Exception:  # an unknown --tc-reference is reported by the reference check itself
        return None
    return chosen.name if chosen is not None and chosen.strips_text else None


@lru_cache(maxsize=256)
def content_format(source: str) -> str:
    """``"openai"`` when the template loops over a message's ``content`` (it reads list parts), else
    ``"string"``: the content format vLLM's chat-template detection reports, and the one it sends."""
    import jinja2.nodes

    try:
        tree = parse_template(source)
    except RenderError:
        return "string"

    def reads_content(node: jinja2.nodes.Node) -> bool:
        while isinstance(node, (jinja2.nodes.Filter, jinja2.nodes.Test)) and node.node is not None:
            node = node.node
        if isinstance(node, jinja2.nodes.Getattr):
            return node.attr == "content"
        if isinstance(node, jinja2.nodes.Getitem):
            return isinstance(node.arg, jinja2.nodes.Const) and node.arg.value == "content"
        return isinstance(node, jinja2.nodes.Name) and node.name in aliases

    aliases: set[str] = set()
    for assign in nodes_of(tree, jinja2.nodes.Assign):
        if isinstance(assign.target, jinja2.nodes.Name) and reads_content(assign.node):
            aliases.add(assign.target.name)
    loops = nodes_of(tree, jinja2.nodes.For)
    return "openai" if any(reads_content(loop.iter) for loop in loops) else "string"


def _list_content(subject: Subject) -> list[Finding]:
    """How the template takes a user message whose content is a list of text parts, and the system and
    assistant messages' parts where they fare otherwise than the user's (one finding per cause)."""
    text = "listzq7 part text"
    parts = [{"type": "text", "text": text}]
    form = content_format(subject.template.source)
    expects = f"the template expects {form!r} content (the format vLLM's chat-template detection reads)"
    probes = _list_probes(text)
    subject.prefetch([c for pair in probes.values() for c in pair], add_generation_prompt=True)
    user = _list_verdict(subject, *probes["user"], text)
    findings = []
    if isinstance(user, RenderError):
        how = "refuses it clearly" if user.kind == "refused" else "crashes"
        findings.append(
            LIST_RAISES(
                f"list content ({parts!r}) is not accepted: the template {how}: {user}; {expects}",
                fix="render the text parts ({% for p in m.content %}{{ p.text }}{% endfor %}) when content is "
                "not a string, or refuse it with raise_exception('...')",
            )
        )
    elif user is LIST_REPR:
        rendered = subject.render(probes["user"][0], add_generation_prompt=True)
        findings.append(
            LIST_REPR(
                f"list content ({parts!r}) is rendered as a Python repr, not as its text: {expects}\n"
                f"  rendering:\n{quote(rendered)}",
                fix=_PARTS_FIX,
            )
        )
    elif user is LIST_DROPPED:
        findings.append(
            LIST_DROPPED(
                f"list content ({parts!r}) is silently dropped: its text is not in the prompt; {expects}"
            )
        )
    return findings + _other_roles(subject, probes, user, form)


#: The fix of list content printed as a repr or dropped, for any role.
_PARTS_FIX = (
    "render the text parts when content is not a string: {% if m.content is string %}"
    "{{ m.content }}{% else %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}"
)


def _list_probes(text: str) -> dict[str, tuple[conv.Conversation, conv.Conversation]]:
    """Per role, the smallest conversation that holds one message of it with ``text`` as list parts, and the
    same conversation with ``text`` as a string."""
    parts = [{"type": "text", "text": text}]
    question, again = conv.user("listzq7 question"), conv.user("listzq7 again")
    return {
        "user": ([conv.user(parts)], [conv.user(text)]),
        "system": ([conv.system(parts), question], [conv.system(text), question]),
        "assistant": ([question, conv.assistant(parts), again], [question, conv.assistant(text), again]),
    }


#: List parts written as JSON (``content|tojson`` for content that is not a string): the text is there, in a
#: form of the template's choosing, so no finding of the user's; the other roles are then not compared with it.
_AS_JSON = "as JSON"


def _list_verdict(
    subject: Subject, listed: conv.Conversation, plain: conv.Conversation, text: str
) -> Cause | RenderError | str | None:
    """How the template renders ``listed`` (list parts), judged against ``plain`` (the same text as a string):
    the error it raises, ``LIST_REPR``, ``LIST_DROPPED``, :data:`_AS_JSON`, or ``None`` when the text is there
    (or the plain form does not show it either: a message dropped whatever its content is another finding)."""
    try:
        rendered = subject.render(listed, add_generation_prompt=True)
    except RenderError as error:
        return error
    if "{'type'" in rendered and text in rendered:
        return LIST_REPR
    if '{"type"' in rendered and text in rendered:
        return _AS_JSON
    if text in rendered:
        return None
    try:
        shown = text in subject.render(plain, add_generation_prompt=True)
    except RenderError:
        shown = False
    return LIST_DROPPED if shown else None


def _other_roles(
    subject: Subject,
    probes: dict[str, tuple[conv.Conversation, conv.Conversation]],
    user: Cause | RenderError | str | None,
    form: str,
) -> list[Finding]:
    """For a template that renders the user's list parts as their text, the system and assistant messages
    whose parts it does not: one finding per cause, naming the roles. (A template that takes no parts in the
    user's message either takes string content only, one root cause, which the user's finding reports.) A
    template that loops over a message's content is read by vLLM as taking 'openai' content, and vLLM then
    sends every message's text as parts."""
    if user is not None:
        return []
    text = "listzq7 part text"
    by_cause: dict[Cause, list[str]] = {}
    for role in ("system", "assistant"):
        verdict = _list_verdict(subject, *probes[role], text)
        if isinstance(verdict, RenderError):
            verdict = LIST_RAISES
        if isinstance(verdict, Cause):
            by_cause.setdefault(verdict, []).append(role)
    how = {
        LIST_REPR: "is rendered as a Python repr, not as its text",
        LIST_DROPPED: "is silently dropped: its text is not in the prompt",
        LIST_RAISES: "is not accepted: the template raises on it",
    }
    server = (
        "; the template loops over a message's content, which vLLM's chat-template detection reads as 'openai' "
        "content: vLLM then sends every message's text as parts, so this happens to every request that has such a "
        "message"
        if form == "openai"
        else ""
    )
    findings = []
    for cause, roles in by_cause.items():
        named = " and ".join(f"the {r} message" for r in roles)
        findings.append(
            cause(
                f"list content ({[{'type': 'text', 'text': text}]!r}) of {named} {how[cause]}, though the user's "
                f"is rendered as its text{server}",
                fix=_PARTS_FIX,
            )
        )
    return findings


# -------------------------------------------------------------------------------------------- assistant mask

MASK_MISSES_REPLY = defect(
    "assistant_mask.reply_outside",
    "a reply outside every {% generation %} span is never trained on",
)
MASK_MISSES_END = defect(
    "assistant_mask.end_of_turn_outside",
    "a model trained with a mask that leaves out the end-of-turn token never learns to stop",
)
MASK_HAS_HEADER = defect(
    "assistant_mask.header_inside",
    "a model trained on its own header learns to write it",
)
MASK_HAS_OTHER = defect(
    "assistant_mask.other_text_inside",
    "a model trained on user or system text learns to write it",
)


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
            findings.append(
                MASK_MISSES_REPLY(f"the reply {reply!r} is not inside any {{% generation %}} span")
            )
            continue
        a, b = covering[0]
        after = text[at + len(reply) :]
        eot = next((t for t in sorted(control, key=len, reverse=True) if after.lstrip().startswith(t)), None)
        if eot is not None and not text[a:b].rstrip().endswith(eot):
            findings.append(
                MASK_MISSES_END(
                    f"the span of reply {reply!r} leaves out the end-of-turn token {eot!r}: a model trained with "
                    f"this mask never learns to stop\n  span: {text[a:b]!r}"
                )
            )
        before = text[a:at]
        if before.strip():
            findings.append(
                MASK_HAS_HEADER(
                    f"the span of reply {reply!r} includes {before!r} before the reply (a header)"
                )
            )
    for a, b in spans:
        leaked = [o for o in others if o in text[a:b]]
        if leaked:
            findings.append(
                MASK_HAS_OTHER(f"a {{% generation %}} span includes non-assistant text {leaked[0]!r}")
            )
    return distinct(findings)


def _control_strings(subject: Subject) -> list[str]:
    tokenizer = subject.model.tokenizer
    return [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
