"""Reference layer: the shipped template against an independent reference of the model's format family.

The reference follows the template's own policy first (a default system prompt, a date the format leaves
free), so that what remains is the format. Each remaining difference is sorted into one group (see
:mod:`templatecheck.formats.classify`), and each group is one finding with its own cause: a new kind of
difference is a new cause key, never a changed count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from templatecheck import conversation as conv
from templatecheck.causes import Cause, defect, policy
from templatecheck.checks.base import check, owner_reports
from templatecheck.checks.roles import injected_system_text
from templatecheck.conversation import WEATHER_TOOL
from templatecheck.formats.base import Format
from templatecheck.formats.classify import (
    ALWAYS_ADDED,
    BY_NAME,
    FINAL_OPEN,
    GROUPS,
    HTML_ESCAPED,
    RESULT_REENCODED,
    SYSTEM_DROPPED,
    Hunk,
    final_open_alone,
    hunks,
)
from templatecheck.formats.compare import (
    TWO_TURNS,
    Case,
    Comparison,
    Difference,
    Policy,
    Reference,
    cases,
    comparable,
    compare,
)
from templatecheck.formats.detect import Choice, choose, evidence_of
from templatecheck.formats.diffing import opcodes
from templatecheck.formats.oracle import Oracle, OracleUnavailable, Rejected, load_oracle
from templatecheck.model import Subject
from templatecheck.render import RenderError
from templatecheck.result import Finding, Layer, Outcome, note, skipped
from templatecheck.text import diff, tokens
from templatecheck.tokens import encode

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# ------------------------------------------------------------------------------------------------- causes

REFERENCE: dict[str, Cause] = {
    g.name: (policy if g.policy else defect)(f"reference.{g.name}", g.why) for g in GROUPS
}
SAME_TOKENS = policy(
    "reference.same_tokens",
    "the text differs from the reference but tokenizes to the same ids, so the model sees no difference",
)
#: mistral-common's groups: the reference's (a Mistral format trims nothing), and token ids of the same text.
MISTRAL: dict[str, Cause] = {
    g.name: (policy if g.policy else defect)(f"mistral_common.{g.name}", g.why)
    for g in GROUPS
    if g.name not in ("trimming", FINAL_OPEN)  # a Mistral format trims nothing; an open final turn: its end
}
MISTRAL_TOKENS = defect(
    "mistral_common.tokenization",
    "the same text as mistral-common's, but other token ids: the model's tokenizer file splits it into other "
    "pieces than Mistral's tokenizer does, so every consumer that tokenizes the rendering feeds other ids",
)

#: What a difference another check owns says, as the first words of its finding.
FOREIGN = {
    ALWAYS_ADDED: (
        "the rendering without add_generation_prompt already ends with the generation prompt the reference "
        "writes only when asked"
    ),
    HTML_ESCAPED: "the template HTML-escapes tool JSON (&#34; for a quote), which the reference writes as it is",
    RESULT_REENCODED: "the template writes a string tool result JSON-encoded a second time, in quotes",
    SYSTEM_DROPPED: "the template leaves out the system prompt that the reference writes",
}

# ------------------------------------------------------------------------------------------------ sample


def _sample(subject: Subject) -> list[Case]:
    source = subject.template.source
    reads_tools = "tools" in source or "tool_calls" in source  # a template that never names them ignores them
    forced = subject.template.name == "tool_use"  # transformers renders it only with tools
    sample = cases(subject.options.examples, tool_calls=reads_tools)
    return [c.with_tools([WEATHER_TOOL]) if forced and not c.tools else c for c in sample]


def _arguments(case: Case) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tools = [dict(t) for t in case.tools] if case.tools else None
    return [dict(m) for m in case.messages], {
        "add_generation_prompt": case.add_generation_prompt,
        "tools": tools,
    }


def _render(subject: Subject, case: Case) -> str:
    """The shipped template's rendering of ``case``; raises :class:`RenderError`."""
    messages, arguments = _arguments(case)
    return subject.render(messages, **arguments)


def _first_mismatch(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def template_policy(subject: Subject) -> Policy:
    """What the template decides that its format leaves open, learnt once per template from its renderings:
    the default system prompt (``default_system_prompt``'s finding), and the run's template variables."""
    variables = dict(subject.options.template_vars)
    key = (
        "reference policy",
        *subject.template.key,
        repr(sorted(variables.items())),
    )
    cache = subject.model.cache
    if key not in cache:
        injected = injected_system_text(subject) or ""
        cache[key] = Policy(_default_system(subject, injected), injected, variables, learnt=True)
    found: Policy = cache[key]
    return found


def _default_system(subject: Subject, text: str) -> str | None:
    """The system message the template renders a conversation without one as if it were given, if any.

    The text :func:`~templatecheck.checks.roles.injected_system_text` finds is a default only when the
    template renders ``[system(text), user]`` exactly as ``[user]``.
    """
    if not text or not text.strip():
        return None
    question = conv.user(conv.USER_TEXT)
    try:
        alone = subject.render([question], add_generation_prompt=True)
        for candidate in dict.fromkeys((text, text.strip())):
            if subject.render([conv.system(candidate), question], add_generation_prompt=True) == alone:
                return candidate
    except RenderError:
        return None
    return None


# ------------------------------------------------------------------------------------------------ reference


@check(Layer.REFERENCE)
def reference(subject: Subject) -> list[Finding]:
    """The template renders every conversation its reference format defines exactly as the reference does:
    the same text, hence the same token ids.

    Catches templates that are self-consistent but not the format the model was trained on, one finding per
    kind of difference: a header, a separator (a missing newline), an end-of-turn or BOS/EOS token, the
    system prompt's place, tool definitions, calls or results, escaping, the whitespace of message text, other
    text. The family is ``--tc-reference FAMILY`` or detected from the template (see
    :mod:`templatecheck.formats.detect`); a family without a reference is skipped. The reference follows the
    template's policy first: its default system prompt, the wording the format leaves free (Llama 3.1's
    date), the run's ``--tc-template-var`` values. Conversations the reference does not define are skipped; a
    leading BOS is left to ``double_bos``; a text difference with the same token ids is a warning. A template
    whose source layout (line breaks and indentation between tags) renders is one ``source_layout`` finding,
    and is compared without it.
    """
    choice = choose(subject.model, subject.options, subject.template)
    if choice.format is None:
        return [skipped(f"no reference format: {choice.how}")]
    special = subject.model.renderer.special_tokens
    rule = reference_policy(subject, choice.format)
    sample = _sample(subject)
    subject.prefetch_each([_arguments(case) for case in sample])
    result = compare(choice.format, partial(_render, subject), sample, special, rule)
    laid_out = _without_layout(subject, choice.format, special, rule, result)
    if laid_out is not None:
        finding, subject, result = laid_out
        return [finding, *_judge(subject, choice, Reference(choice.format, special, rule), result)]
    return _judge(subject, choice, Reference(choice.format, special, rule), result)


SOURCE_LAYOUT = defect(
    "reference.source_layout",
    "the line breaks and indentation between a template's tags, written to make its source readable, render "
    "as text: every prompt carries whitespace the format does not have, in places no reference names",
)
#: Template text outside tags, and the tags (``{% %}``, ``{{ }}``, ``{# #}``): the pieces :func:`strip_layout`
#: reads.
_TAGS = re.compile(r"(\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\})", re.S)


def strip_layout(source: str) -> str:
    """``source`` without its layout: text between tags that is whitespace with a line break in it."""
    return "".join(p for p in _TAGS.split(source) if not (p and not p.strip() and "\n" in p))


def _pieces(result: Comparison) -> int:
    """How many differing pieces the comparison's renderings have, together."""
    return sum(len(opcodes(d.reference, d.template)[0]) for d in result.differences)


def _without_layout(
    subject: Subject, fmt: Format, special: Mapping[str, str], rule: Policy, result: Comparison
) -> tuple[Finding, Subject, Comparison] | None:
    """When the template differs from the reference, and its source without layout whitespace (see
    :func:`strip_layout`) differs by fewer pieces (another defect may still touch every rendering): the one
    ``reference.source_layout`` finding, and the comparison of the template without its layout, whose
    differences are then the format's (one root cause, one finding, instead of a separator, a header and a
    BOS/EOS difference that are all the layout)."""
    stripped = strip_layout(subject.template.source)
    if not result.differences or stripped == subject.template.source:
        return None
    bare = replace(subject, template=replace(subject.template, source=stripped))
    sample = _sample(subject)
    bare.prefetch_each([_arguments(case) for case in sample])
    again = compare(fmt, partial(_render, bare), sample, special, rule)
    if again.compared < result.compared or _pieces(again) >= _pieces(result):
        return None
    first = min(result.differences, key=lambda d: d.size)
    finding = SOURCE_LAYOUT(
        f"the template writes its source layout into the prompt: line breaks and indentation between its tags "
        f"render as text ({len(result.differences)} of {result.compared} renderings differ from the {fmt.name} "
        f"reference; without that whitespace, {len(again.differences)} do, reported below)\n"
        f"conversation: {first.case.describe()}\n"
        + diff(first.reference, first.template, labels=(f"reference {fmt.name}", "template")),
        fix="control the whitespace between tags ({%- ... -%}, {{- ... }}) or remove it from the source",
    )
    return finding, bare, again


def reference_policy(subject: Subject, fmt: Format) -> Policy:
    """The template's policy for ``fmt``: the wording the format leaves free as the template writes it, and,
    of the default-system-prompt policies the reference can follow (the template's own default, none, the
    format's own: Qwen 2.5's), the first under which the reference renders a lone user turn as the template
    does (the template's when none does). A format's own default is its family's policy, not its format."""
    special = subject.model.renderer.special_tokens
    rule = replace(template_policy(subject), free=_free_wording(subject, fmt))
    case = Case("user only", (conv.user(conv.USER_TEXT),), True)
    try:
        alone = comparable(_render(subject, case), special.get("bos_token", ""))
    except RenderError:
        return rule
    for candidate in (rule, replace(rule, learnt=False)):
        reference = Reference(fmt, special, candidate)
        try:
            if reference.render(reference.messages(case), add_generation_prompt=True, tools=None) == alone:
                return candidate
        except Exception:  # Unsupported, or a broken format, which the comparison reports
            return rule
    return rule


#: The conversations the free wording is read from, most telling first.
_PROBES: tuple[Case, ...] = (
    Case("probe", TWO_TURNS, True),
    Case(
        "probe",
        (conv.user(conv.USER_TEXT), conv.assistant(conv.ASSISTANT_TEXT), conv.user("And of Italy?")),
        True,
    ),
    Case("probe", tuple(conv.SYSTEM_USER_ASSISTANT), False),
    Case("probe", (conv.user(conv.USER_TEXT), conv.assistant(conv.ASSISTANT_TEXT)), False),
    Case("probe", tuple(conv.SYSTEM_USER), True),
    Case("probe", tuple(conv.USER_ONLY), True),
)


def _free_wording(subject: Subject, fmt: Format) -> dict[str, str]:
    """Each of the format's free slots (:class:`~templatecheck.formats.base.Free`), read from the first
    probe conversation whose rendering shows it."""
    found: dict[str, str] = {}
    for probe in _PROBES if fmt.free else ():
        try:
            rendering = comparable(
                _render(subject, probe),
                subject.model.renderer.special_tokens.get("bos_token", ""),
            )
        except RenderError:
            continue
        for slot in fmt.free:
            value = slot.read(rendering, subject.model.renderer.special_tokens.get("eos_token", ""))
            if slot.variable not in found and value is not None:
                found[slot.variable] = value
    return found


def _judge(subject: Subject, choice: Choice, ref: Reference, result: Comparison) -> list[Finding]:
    if result.broken is not None:
        return [Finding(Outcome.ERROR, f"{result.broken}; fix the format's renderer")]
    skipped_note = f"; not compared: {result.skipped_summary()}" if result.skipped_summary() else ""
    aligned = (
        f"; the reference follows the template's policy: {result.aligned_summary()}" if result.aligned else ""
    )
    if not result.compared:
        return [skipped(f"reference {choice.describe()}: no conversation both sides define{skipped_note}")]
    if not result.differences:
        return [
            note(
                f"reference {choice.describe()}: the template matches it on {result.compared} renderings"
                + aligned
                + skipped_note
            )
        ]
    tokenizer = subject.model.tokenizer
    same: list[Difference] = []
    seen: list[Seen] = []
    for difference in result.differences:
        expected, actual = encode(tokenizer, difference.reference), encode(tokenizer, difference.template)
        if expected == actual:
            same.append(difference)
        else:
            seen.append(Seen(difference, hunks(difference, ref, partial(_render, subject)), expected, actual))
    context = Context(
        f"the {ref.fmt.name} reference",
        f"reference {choice.short()}",
        result.compared,
        f"reference {ref.fmt.name}",
        tokenizer,
    )
    findings = [
        note(
            f"reference {choice.describe()}: {result.compared - len(result.differences)} of {result.compared} "
            f"renderings match it" + aligned + skipped_note
        )
    ]
    findings += grouped(seen, context, REFERENCE)
    if same:
        first = min(same, key=lambda d: d.size)
        findings.append(
            SAME_TOKENS(
                f"the template's text differs from the {ref.fmt.name} reference in {len(same)} of "
                f"{result.compared} renderings, but tokenizes to the same ids (reference {choice.describe()})\n"
                f"conversation: {first.case.describe()}\n"
                + diff(first.reference, first.template, labels=(context.label, "template"))
            )
        )
    return findings


@dataclass(frozen=True)
class Seen:
    """One differing rendering: the difference, its pieces, and both sides' token ids."""

    difference: Difference
    pieces: list[Hunk]
    expected: list[int]
    actual: list[int]


@dataclass(frozen=True)
class Context:
    """What every finding of one comparison names: what it compared with, how many, the tokens' pieces."""

    #: ``the chatml reference``, ``mistral-common's encoding``: what the template differs from.
    against: str
    #: ``reference chatml (detected)``: the source, shown after the count.
    source: str
    compared: int
    #: The label of the reference side in diffs and token lines.
    label: str
    tokenizer: PreTrainedTokenizerBase
    #: The oracle's own ids -> pieces (mistral-common's), or ``None`` for the tokenizer's.
    pieces: Callable[[Sequence[int]], list[str]] | None = None
    unit: str = "renderings"


def grouped(seen: Sequence[Seen], context: Context, causes: Mapping[str, Cause]) -> list[Finding]:
    """One finding per group of differences, in :data:`GROUPS` order, each with its smallest example."""
    by_group: dict[str, list[tuple[Seen, Hunk, bool]]] = {}
    settled = final_open_alone([item.pieces for item in seen], convention=FINAL_OPEN in causes)
    for item, pieces in zip(seen, settled, strict=True):
        for i, piece in enumerate(pieces):
            first_of_its_group = all(p.group != piece.group for p in pieces[:i])
            if first_of_its_group:
                by_group.setdefault(piece.group, []).append((item, piece, pieces[0] is piece))
    order = [g.name for g in GROUPS] + sorted(FOREIGN)
    findings = []
    for group in sorted(by_group, key=lambda g: order.index(g) if g in order else len(order)):
        items = by_group[group]
        item, piece, _ = min(items, key=lambda x: (not x[2], x[0].difference.size))
        findings.append(_finding(group, len(items), item, piece, context, causes))
    return findings


def _finding(
    group: str, count: int, item: Seen, piece: Hunk, context: Context, causes: Mapping[str, Cause]
) -> Finding:
    difference = item.difference
    what = f"{BY_NAME[group].what} differs from {context.against}" if group in BY_NAME else FOREIGN[group]
    head = f"{what}, in {count} of {context.compared} {context.unit} ({context.source})"
    body = (
        f"\nconversation: {difference.case.describe()}\n"
        f"  here: {piece.describe(difference.reference)}\n"
        + diff(difference.reference, difference.template, labels=(context.label, "template"))
        + "\n"
        + _token_lines(context, item.expected, item.actual)
    )
    if group in causes:
        return causes[group](head + body, fix=BY_NAME[group].fix)
    return Finding(Outcome.FAILED, head + body, cause=group)


def _token_lines(context: Context, expected: list[int], actual: list[int]) -> str:
    at = _first_mismatch(expected, actual)
    ours = context.tokenizer.convert_ids_to_tokens
    theirs = context.pieces or ours
    return (
        f"  first differing token: #{at}\n"
        f"    {context.label}: {tokens(expected[at:], theirs(expected[at:]), limit=8) or '(end)'}\n"
        f"    template: {tokens(actual[at:], ours(actual[at:]), limit=8) or '(end)'}"
    )


# ------------------------------------------------------------------------------------------- mistral-common


@check(Layer.REFERENCE)
def mistral_common(subject: Subject) -> list[Finding]:
    """For Mistral models: the template and tokenizer give the token ids mistral-common's
    ``encode_chat_completion`` gives, for every conversation mistral-common accepts for a reply.

    mistral-common is Mistral's own encoder, so this is the token-level oracle: it catches what a text
    comparison cannot see, such as the space a SentencePiece tokenizer does (or does not) add after a control
    token, and a tokenizer file whose control tokens differ from Mistral's. Each difference is decoded and
    grouped as the ``reference`` check groups its differences (``mistral_common.<group>``); the same text
    with other ids is ``mistral_common.tokenization``. Needs the optional dependency
    (``pip install 'templatecheck[mistral]'``) and a tokenizer mistral-common can load.
    """
    choice = choose(subject.model, subject.options, subject.template)
    fmt = choice.format
    if fmt is None or not fmt.name.startswith("mistral-"):
        return [
            skipped(f"not a Mistral format (reference {choice.describe()}): mistral-common does not apply")
        ]
    tokenizer = subject.model.tokenizer
    try:
        oracle = load_oracle(
            subject.model.directory, fmt.name.split("-")[1], fmt.name.endswith("-tekken"), tokenizer
        )
    except OracleUnavailable as why:
        return [skipped(str(why))]
    tally = _against(oracle, subject, tokenizer)
    where = f"mistral-common {fmt.name} via {oracle.source}"
    left_out = f"{tally.rejected} rejected by mistral-common, {tally.control_text} with control-token text"
    if not tally.compared:
        return [skipped(f"{where}: no conversation to compare ({left_out})")]
    equal = tally.compared - len(tally.differences)
    summary = f"{where}: token ids equal on {equal} of {tally.compared} conversations ({left_out})"
    if not tally.differences:
        return [note(summary)]
    return [note(summary), *_mistral_groups(subject, fmt, oracle, tally)]


def _mistral_groups(subject: Subject, fmt: Format, oracle: Oracle, tally: _Tally) -> list[Finding]:
    """The oracle's differences, decoded to text and grouped as the reference's are."""
    tokenizer = subject.model.tokenizer
    special = subject.model.renderer.special_tokens
    ref = Reference(fmt, special, Policy(variables=dict(subject.options.template_vars)))
    decode = _decoder(subject, tokenizer)
    seen, same_text = [], []
    for case, theirs, ours in tally.differences:
        text_theirs, text_ours = decode(theirs), decode(ours)
        item = Difference(case, text_theirs, text_ours, tuple(ref.messages(case)))
        if text_theirs == text_ours:
            same_text.append(Seen(item, [], theirs, ours))
        else:
            seen.append(Seen(item, hunks(item, ref, partial(_render, subject)), theirs, ours))
    context = Context(
        "mistral-common's encoding",
        f"mistral-common {fmt.name} via {oracle.source}",
        tally.compared,
        "mistral-common",
        tokenizer,
        oracle.pieces,
        "conversations",
    )
    findings = [_deferred(subject, f) for f in grouped(seen, context, MISTRAL)]
    if same_text:
        first = min(same_text, key=lambda s: s.difference.size)
        findings.append(
            MISTRAL_TOKENS(
                f"the same text as mistral-common's encoding, but the tokenizer gives other token ids, in "
                f"{len(same_text)} of {tally.compared} conversations (mistral-common {fmt.name} via "
                f"{oracle.source})\nconversation: {first.difference.case.describe()}\n"
                + _token_lines(context, first.expected, first.actual)
                + f"\n  rendering: {_render(subject, first.difference.case)!r}",
                fix="the template's text is right; the tokenizer file is not: convert tokenizer.json from "
                "Mistral's tokenizer model again (or encode with mistral-common)",
            )
        )
    return findings


def _deferred(subject: Subject, finding: Finding) -> Finding:
    """A group of text differences the ``reference`` check reports on the template as well is one root cause:
    the oracle's finding becomes a note of the reference's cause (the reference reports it, with its fix)."""
    group = finding.cause.removeprefix("mistral_common.")
    theirs = REFERENCE.get(group)
    if theirs is None or not owner_reports(subject, theirs):
        return finding
    return replace(finding, cause=theirs.key)


def _decoder(subject: Subject, tokenizer: PreTrainedTokenizerBase) -> Callable[[Sequence[int]], str]:
    spm = evidence_of(subject.model, subject.template).tokenizer_kind == "sentencepiece"

    def decode(ids: Sequence[int]) -> str:
        if not spm:
            return str(
                tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
            )
        return _spm_text(tokenizer.convert_ids_to_tokens(list(ids)))

    return decode


def _spm_text(pieces: Sequence[str]) -> str:
    """SentencePiece pieces as text: ``▁`` is a space, ``<0xNN>`` pieces are bytes."""
    out, pending = [], bytearray()
    for piece in pieces:
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            pending.append(int(piece[3:5], 16))
            continue
        out.append(pending.decode("utf-8", errors="replace") + piece.replace("▁", " "))
        pending.clear()
    return "".join(out) + pending.decode("utf-8", errors="replace")


@dataclass
class _Tally:
    """Conversations compared with the oracle, those left out and why, and the differences."""

    compared: int = 0
    rejected: int = 0
    control_text: int = 0
    differences: list[tuple[Case, list[int], list[int]]] = field(default_factory=list)


def _against(oracle: Oracle, subject: Subject, tokenizer: PreTrainedTokenizerBase) -> _Tally:
    """Compare token ids, first BOS aside, on the sample's conversations that await a reply.

    A message whose text contains a control token's string is left out: mistral-common encodes it as text,
    a Hugging Face tokenizer as the control token (a property of the tokenizer, not of the template).
    """
    specials = [t for t in [*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()] if len(t) > 1]
    tally = _Tally()
    for case in _sample(subject):
        if case.messages[-1]["role"] == "assistant" or not case.add_generation_prompt:
            continue  # Mistral's formats have no generation prompt: one rendering per conversation is enough
        if any(s in str(m.get("content") or "") for m in case.messages for s in specials):
            tally.control_text += 1
            continue
        try:
            theirs = oracle.encode(case.messages, case.tools)
            ours = encode(tokenizer, _render(subject, case))
        except Rejected:
            tally.rejected += 1
            continue
        except RenderError:
            continue  # the template's own failure: the renders check reports it
        tally.compared += 1
        theirs, ours = _strip_bos(theirs, oracle.bos_id), _strip_bos(ours, oracle.bos_id)
        if theirs != ours:
            tally.differences.append((case, theirs, ours))
    return tally


def _strip_bos(ids: list[int], bos_id: int) -> list[int]:
    return ids[1:] if ids and ids[0] == bos_id else ids
