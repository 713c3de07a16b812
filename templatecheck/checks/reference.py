"""Reference layer: the shipped template against an independent reference of the model's format family."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from templatecheck.checks import check
from templatecheck.conversation import WEATHER_TOOL
from templatecheck.formats.compare import Case, Comparison, Difference, cases, compare
from templatecheck.formats.detect import Choice, choose
from templatecheck.formats.oracle import Oracle, OracleUnavailable, Rejected, load_oracle
from templatecheck.model import Subject
from templatecheck.render import RenderError
from templatecheck.report import diff, tokens
from templatecheck.result import Finding, Layer, Outcome, failed, skipped, warning

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _sample(subject: Subject) -> list[Case]:
    source = subject.template.source
    reads_tools = "tools" in source or "tool_calls" in source  # a template that never names them ignores them
    forced = subject.template.name == "tool_use"  # transformers renders it only with tools
    sample = cases(subject.options.examples, tool_calls=reads_tools)
    return [c.with_tools([WEATHER_TOOL]) if forced and not c.tools else c for c in sample]


def _render(subject: Subject, case: Case) -> str:
    """The shipped template's rendering of ``case``; raises :class:`RenderError`."""
    tools = [dict(t) for t in case.tools] if case.tools else None
    messages = [dict(m) for m in case.messages]
    return subject.render(messages, add_generation_prompt=case.add_generation_prompt, tools=tools)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _first_mismatch(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _token_lines(
    tokenizer: PreTrainedTokenizerBase, expected: list[int], actual: list[int], label: str
) -> str:
    at = _first_mismatch(expected, actual)
    pieces = tokenizer.convert_ids_to_tokens
    return (
        f"  first differing token: #{at}\n"
        f"    {label}: {tokens(expected[at:], pieces(expected[at:]), limit=8) or '(end)'}\n"
        f"    template: {tokens(actual[at:], pieces(actual[at:]), limit=8) or '(end)'}"
    )


@check(Layer.REFERENCE)
def reference(subject: Subject) -> list[Finding]:
    """The template renders every conversation its reference format defines exactly as the reference does:
    the same text, hence the same token ids.

    Catches templates that are self-consistent but not the format the model was trained on: a space after a
    header, a missing newline or end-of-turn token, a system prompt in the wrong place, untrimmed (or
    wrongly trimmed) content, a stale date in the system preamble. The family is ``--reference FAMILY`` or
    detected (see :mod:`templatecheck.formats.detect`); conversations the reference does not define (a role
    it has no place for, tools) are skipped. A leading BOS is left to ``double_bos``. A text difference that
    tokenizes to the same ids is a warning.
    """
    choice = choose(subject.model, subject.options)
    if choice.format is None:
        return [skipped(f"no reference format: {choice.how}")]
    special = subject.model.renderer.special_tokens
    result = compare(choice.format, partial(_render, subject), _sample(subject), special)
    return _judge(subject, choice, result)


def _judge(subject: Subject, choice: Choice, result: Comparison) -> list[Finding]:
    assert choice.format is not None
    name = choice.format.name
    if result.broken is not None:
        return [Finding(Outcome.ERROR, f"{result.broken}; fix the format's renderer")]
    skipped_note = f"; not compared: {result.skipped_summary()}" if result.skipped_summary() else ""
    if not result.compared:
        return [skipped(f"reference {choice.describe()}: no conversation both sides define{skipped_note}")]
    if not result.differences:
        return [
            Finding(
                Outcome.PASSED,
                f"reference {choice.describe()}: the template matches it on {result.compared} renderings"
                + skipped_note,
            )
        ]
    tokenizer = subject.model.tokenizer
    real: list[tuple[Difference, list[int], list[int]]] = []
    for difference in result.differences:
        expected, actual = _ids(tokenizer, difference.reference), _ids(tokenizer, difference.template)
        if expected != actual:
            real.append((difference, expected, actual))
    label = f"reference {name}"
    if not real:
        first = min(result.differences, key=lambda d: d.size)
        return [
            warning(
                f"the template's text differs from the {name} reference in {len(result.differences)} of "
                f"{result.compared} renderings, but tokenizes to the same ids (reference {choice.describe()})\n"
                f"conversation: {first.case.describe()}\n"
                + diff(first.reference, first.template, labels=(label, "template"))
            )
        ]
    first, expected, actual = min(real, key=lambda r: r[0].size)
    return [
        failed(
            f"the template differs from the {name} reference in {len(real)} of {result.compared} renderings "
            f"(reference {choice.describe()})\n"
            f"conversation: {first.case.describe()}\n"
            + diff(first.reference, first.template, labels=(label, "template"))
            + "\n"
            + _token_lines(tokenizer, expected, actual, label)
        )
    ]


@check(Layer.REFERENCE)
def mistral_common(subject: Subject) -> list[Finding]:
    """For Mistral models: the template and tokenizer give the token ids mistral-common's
    ``encode_chat_completion`` gives, for every conversation mistral-common accepts for a reply.

    mistral-common is Mistral's own encoder, so this is the token-level oracle: it catches what a text
    comparison cannot see, such as the space a SentencePiece tokenizer does (or does not) add after a control
    token, and a tokenizer file whose control tokens differ from Mistral's. Needs the optional dependency
    (``pip install 'templatecheck[mistral]'``) and a tokenizer mistral-common can load.
    """
    choice = choose(subject.model, subject.options)
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
    note = f"mistral-common {fmt.name} via {oracle.source}"
    left_out = f"{tally.rejected} rejected by mistral-common, {tally.control_text} with control-token text"
    if not tally.compared:
        return [skipped(f"{note}: no conversation to compare ({left_out})")]
    if not tally.differences:
        return [
            Finding(Outcome.PASSED, f"{note}: token ids equal on {tally.compared} conversations ({left_out})")
        ]
    case, theirs, ours = min(
        tally.differences, key=lambda d: (d[0].name.startswith("drawn"), len(d[0].messages))
    )
    at = _first_mismatch(theirs, ours)
    return [
        failed(
            f"template + tokenizer give other token ids than mistral-common in {len(tally.differences)} of "
            f"{tally.compared} conversations ({note})\nconversation: {case.describe()}\n"
            f"  first differing token: #{at}\n"
            f"    mistral-common: {tokens(theirs[at:], oracle.pieces(theirs[at:]), limit=8) or '(end)'}\n"
            f"    template: {tokens(ours[at:], tokenizer.convert_ids_to_tokens(ours[at:]), limit=8) or '(end)'}\n"
            f"  rendering: {_render(subject, case)!r}"
        )
    ]


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
            ours = _ids(tokenizer, _render(subject, case))
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
