"""Generation layer: what the weights say about the template, from short greedy generations and likelihoods.

The static layers say whether a template is consistent; only the model can say whether it is the format the
model was trained on. These checks run only with ``--tc-generate`` (they load the weights and need torch) and all
read one evaluation per template (``templatecheck/probe.py``): the probe set (``templatecheck/probeset.py``)
under the shipped template and under prompt variants (``templatecheck/variants.py``).
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from templatecheck import conversation as conv
from templatecheck.causes import defect, policy
from templatecheck.checks.base import check
from templatecheck.checks.tokenizer import NOT_STOP_TOKEN, closings
from templatecheck.errors import TemplatecheckError
from templatecheck.model import Subject
from templatecheck.options import Options
from templatecheck.render import RenderError
from templatecheck.result import Finding, Layer, Outcome, skipped
from templatecheck.stats import ALPHA, McNemar
from templatecheck.text import visible

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from templatecheck.evaluation import Evaluation, Reply

SKIP = "run with --tc-generate"
INSTALL = (
    "--tc-generate needs torch, which is not installed: pip install 'templatecheck[generate]' "
    "(or pip install torch; CPU only: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
)
#: The share of the probes that must pass under the shipped template: correct answers (``probe_accuracy``),
#: replies that stop (``stops``), replies that hold a call (``tool_call``).
MIN_SHARE = 0.5
#: From this share of replies with template markup, ``clean_start`` fails (any at all is a warning).
MARKUP_SHARE = 0.25
_SHOWN = 5

_MEASURED = "measured on the weights: the shipped files make the model fail where it need not"
RUNS_ON = defect("stops.runs_on", _MEASURED)
MARKUP = defect("clean_start.markup", _MEASURED)
SOME_MARKUP = policy(
    "clean_start.some_markup",
    "a few replies with markup is a weak signal: a client may show it, the format is not shown wrong",
)
LOW_ACCURACY = defect("probe_accuracy.low", _MEASURED)
VARIANT_BETTER = defect(
    "template_sensitivity.variant_better",
    "a prompt variant the publisher can ship scores significantly better than the shipped template",
)
NO_CALLS = defect("tool_call.unparsed", _MEASURED)


def require_torch() -> None:
    """Raise the install command when torch is not importable."""
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise TemplatecheckError(INSTALL)


def prepare(options: Options) -> None:
    """What ``--tc-generate`` needs, checked before any test runs: torch, a budget, a device, the probe file."""
    require_torch()
    if options.max_new_tokens < 1:
        raise TemplatecheckError(f"--tc-max-new-tokens must be at least 1, got {options.max_new_tokens}")
    from templatecheck.probe import pick_device
    from templatecheck.probeset import read_probe_file

    pick_device(options.device)
    if options.probe_file:
        read_probe_file(Path(options.probe_file))


def evaluate(subject: Subject) -> Evaluation:
    """The evaluation of ``subject``: generations and likelihoods of the model (needs torch)."""
    require_torch()
    from templatecheck.probe import evaluate as run

    return run(subject)


def _evaluation(subject: Subject) -> Evaluation | Finding:
    if not subject.options.generate:
        return skipped(SKIP)
    if subject.model.gguf is not None:
        return skipped(
            "a GGUF file's weights are not loaded (llama.cpp's formats); run --tc-generate on the original model"
        )
    evaluation = evaluate(subject)
    if not evaluation.shipped.replies:
        return skipped("no probe renders under the shipped template (see `renders`)")
    return evaluation


# ---------------------------------------------------------------------------------------------------- checks


@check(Layer.GENERATION, named=True)
def stops(subject: Subject) -> list[Finding]:
    """From the shipped template's prompts, greedy generation ends with a token of the stop set (the
    ``eos_token_id`` of ``generation_config.json``, an int or a list; the tokenizer's EOS without one) within
    the token budget, for at least half the probes.

    Catches a stop set that lacks the model's end-of-turn token (the reply runs on into an invented next turn
    until the client's limit), and a prompt format the model does not recognise well enough to end its turn.
    """
    ev = _evaluation(subject)
    if isinstance(ev, Finding):
        return [ev]
    tokenizer, shipped = subject.model.tokenizer, ev.shipped
    n = len(shipped.replies)
    line = (
        f"{shipped.stopped}/{n} replies ended with a stop token ({_names(tokenizer, ev.stop) or 'none'}, from "
        f"{ev.stop_source}) within {ev.budget} new tokens"
    )
    if shipped.stopped >= MIN_SHARE * n:
        return [Finding(Outcome.PASSED, line)]
    lines = [line + "."]
    runaway = [r for r in shipped.replies if not r.stopped]
    ender = _missing_stop(tokenizer, runaway, ev.stop)
    if ender is not None:
        token, count = ender
        name = tokenizer.convert_ids_to_tokens(token)
        right = sum(_correct_if_stopped_at(tokenizer, r, {token, *ev.stop}) for r in shipped.replies)
        lines.append(
            f"The model ends its turns with {name!r} ({token}): {count}/{n} replies wrote it and went on past it. "
            f"Stopping there too, {right}/{n} replies are correct; with the shipped stop set, {shipped.correct}/{n}."
        )
        lines.append(
            f'  fix: add {token} ({name!r}) to eos_token_id in generation_config.json: "eos_token_id": '
            f"{sorted({*ev.stop, token})}"
        )
    else:
        lines.append(_versus(ev))
    lines += [f"  {r.probe.name}: {_show(r.raw)}" for r in runaway[:_SHOWN]]
    return [_runs_on(subject, ender, "\n".join(lines))]


def _runs_on(subject: Subject, ender: tuple[int, int] | None, message: str) -> Finding:
    """``stops``' finding: the ``end_of_turn`` cause when the token the model ends its turns with is one the
    template itself writes to close a turn (that check owns the root cause; this one adds the measured
    cost as a note), else a finding of its own."""
    if ender is not None and ender[0] in {c.token for c in closings(subject)}:
        return NOT_STOP_TOKEN(message)
    return RUNS_ON(message)


@check(Layer.GENERATION, named=True)
def clean_start(subject: Subject) -> list[Finding]:
    """The shipped template's replies neither begin with nor contain template markup: control tokens (the
    tokenizer's special added tokens) or the header the template writes before an assistant reply.

    Catches a prompt that does not end with the assistant header (the model writes the header itself and the
    client shows it), and a format the model does not recognise (it writes turns of its own format).
    """
    ev = _evaluation(subject)
    if isinstance(ev, Finding):
        return [ev]
    tokenizer, shipped = subject.model.tokenizer, ev.shipped
    control = _control_ids(tokenizer)
    header = _assistant_header(subject)
    # a reply is the model's own turn: it ends at a stop token, or at the turn end the stop set lacks
    ender = _missing_stop(tokenizer, [r for r in shipped.replies if not r.stopped], ev.stop)
    ends = {*ev.stop, *(ender[:1] if ender else ())}
    turns = [_own_turn(tokenizer, r, ends) for r in shipped.replies]
    marked = [
        (r, body) for r, body in zip(shipped.replies, turns, strict=True) if _markup(body, control, header)
    ]
    n = len(shipped.replies)
    if not marked:
        return [Finding(Outcome.PASSED, f"0/{n} replies hold template markup")]
    leading = sum(_markup(body, control, header, leading=True) for _, body in marked)
    lines = [
        f"{len(marked)}/{n} replies hold template markup ({leading} begin with it): the model writes turn markup "
        "itself, which a chat client shows; the prompt does not end the way the model was trained to answer "
        f"(see generation_prompt and template_sensitivity). {_versus(ev)}",
        *(f"  {r.probe.name}: {_show(raw)}" for r, (_, raw) in marked[:_SHOWN]),
    ]
    severe = len(marked) >= MARKUP_SHARE * n or leading > 0
    return [MARKUP("\n".join(lines)) if severe else SOME_MARKUP("\n".join(lines))]


@check(Layer.GENERATION, named=True)
def probe_accuracy(subject: Subject) -> list[Finding]:
    """Under the shipped template, greedy replies answer at least half of the probe set correctly: short
    tasks that any instruction-tuned model solves when prompted in its own format.

    Catches a format the model was not trained on, a missing system prompt it depends on, a stop set that
    lets replies run on: whatever makes it fail easy tasks. ``template_sensitivity`` says which variant helps.
    """
    ev = _evaluation(subject)
    if isinstance(ev, Finding):
        return [ev]
    shipped = ev.shipped
    n = len(shipped.replies)
    line = f"{shipped.correct}/{n} probes answered correctly under the shipped template"
    if shipped.correct >= MIN_SHARE * n:
        return [Finding(Outcome.PASSED, line)]
    wrong = [r for r in shipped.replies if not r.correct]
    lines = [
        f"{line} (at least {math.ceil(MIN_SHARE * n)} expected). {_versus(ev)}",
        *(f"  {r.probe.name}: expected {r.probe.answer!r}, got {_show(r.raw)}" for r in wrong[:_SHOWN]),
    ]
    if ev.unrendered:
        lines.append(f"  left out, the template cannot render them: {', '.join(ev.unrendered)}")
    return [LOW_ACCURACY("\n".join(lines))]


@check(Layer.GENERATION, named=True)
def template_sensitivity(subject: Subject) -> list[Finding]:
    """No prompt variant gets significantly more probes right than the shipped template: the formats of other
    families (ChatML, Llama-3 headers), a default system prompt, BOS removed, doubled or added.

    Paired comparison on the same probes: the exact one-sided McNemar test at 0.05, Bonferroni-corrected over
    the variants compared. Catches a template in a format the model was not trained on, a missing default
    system prompt, a BOS the model was not trained with. The result carries the table of every variant:
    accuracy, mean log-likelihood per token of the expected answers, stop rate.
    """
    ev = _evaluation(subject)
    if isinstance(ev, Finding):
        return [ev]
    shipped, others = ev.shipped, ev.scores[1:]
    tests = {s.name: McNemar.of(shipped.outcomes, s.outcomes) for s in others}
    winners = sorted(
        (s for s in others if tests[s.name].significant(len(others))),
        key=lambda s: (-s.correct, tests[s.name].p),
    )
    shown = table(ev, tests)
    if not winners:
        return [Finding(Outcome.PASSED, shown)]
    best, n = winners[0], len(shipped.replies)
    test = tests[best.name]
    lines = [
        f"{best.name} gets {best.correct}/{n} probes right, the shipped template {shipped.correct}/{n}: "
        f"{best.variant.verdict}.",
        f"  {best.name}: {best.variant.about}",
        f"  exact one-sided McNemar test on paired outcomes: {test.only_b} probes right only under {best.name}, "
        f"{test.only_a} only under the shipped template, p = {test.p:.2g} < {ALPHA}/{len(others)} "
        "(Bonferroni over the variants compared)",
    ]
    if len(winners) > 1:
        lines.append(
            "  also significantly better: " + ", ".join(f"{s.name} ({s.correct}/{n})" for s in winners[1:])
        )
    return [VARIANT_BETTER("\n".join(lines) + "\n\n" + shown)]


@check(Layer.GENERATION, named=True)
def tool_call(subject: Subject) -> list[Finding]:
    """With tools offered, the reply to a request that needs a tool holds a parseable call in the template's
    own format (the text it writes before a call and the keys of the call's JSON), for at least half the
    tool probes.

    Catches a tool format the model was not trained on, and tool definitions the model does not recognise.
    Skipped when the template renders no tool definitions or no tool calls.
    """
    ev = _evaluation(subject)
    if isinstance(ev, Finding):
        return [ev]
    if ev.tools is None or ev.call_format is None:
        return [
            skipped("the template renders no tool definitions or no tool calls (tried tools=[get_weather])")
        ]
    fmt, replies = ev.call_format, ev.tools.replies
    n = len(replies)
    parsed = sum(r.call is not None for r in replies)
    where = f"after {fmt.opener!r}, " if fmt.opener else ""
    line = (
        f"{parsed}/{n} tool replies hold a call in the template's format ({where}JSON with {fmt.name_key!r} and "
        f"{fmt.arguments_key!r}); {ev.tools.correct}/{n} call the right function with the right arguments"
    )
    if parsed >= MIN_SHARE * n:
        return [Finding(Outcome.PASSED, line)]
    lines = [
        line,
        f"  the template writes a call as: {_show(fmt.example)}",
        *(f"  {r.probe.name}: {_show(r.raw)}" for r in [r for r in replies if r.call is None][:_SHOWN]),
    ]
    return [NO_CALLS("\n".join(lines))]


# ---------------------------------------------------------------------------------------------------- table


def table(ev: Evaluation, tests: dict[str, McNemar] | None = None) -> str:
    """Variant x (correct, mean answer log-likelihood per token, stopped), with each variant's paired test."""
    n = len(ev.shipped.replies)
    stop = ", ".join(str(i) for i in ev.stop)
    rows = [("variant", "correct", "log-lik/token", "stopped", "vs shipped (McNemar p)")]
    for scores in ev.scores:
        test = (tests or {}).get(scores.name)
        versus = f"+{test.only_b} -{test.only_a}  p={test.p:.2g}" if test is not None else ""
        rows.append(
            (scores.name, f"{scores.correct}/{n}", f"{scores.loglik:.3f}", f"{scores.stopped}/{n}", versus)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"{n} probes, greedy, {ev.budget} new tokens, stop at [{stop}], {ev.device} {ev.dtype}, "
        f"{ev.seconds:.1f} s for {ev.generated} generated tokens",
        *(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ),
    ]
    for scores in ev.scores:
        if scores.same_as:
            lines.append(f"  (same prompts as {scores.name}: {', '.join(scores.same_as)})")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- helpers


def _versus(ev: Evaluation) -> str:
    """The measured accuracy of the shipped template beside the best variant's."""
    n = len(ev.shipped.replies)
    best = max(ev.scores, key=lambda s: s.correct)
    if best is ev.shipped or best.correct == ev.shipped.correct:
        line = f"Probe accuracy: {ev.shipped.correct}/{n} under the shipped template, no variant does better."
    else:
        line = (
            f"Probe accuracy: {ev.shipped.correct}/{n} under the shipped template, {best.correct}/{n} under "
            f"{best.name}."
        )
    if ev.shipped.stopped < MIN_SHARE * n:
        line += f" Only {ev.shipped.stopped}/{n} replies stopped: see stops."
    return line


def _show(text: str, limit: int = 80) -> str:
    if not text:
        return "(empty)"
    shown = visible(text)
    return repr(shown[:limit] + ("…" if len(shown) > limit else ""))


def _names(tokenizer: PreTrainedTokenizerBase, ids: tuple[int, ...]) -> str:
    return ", ".join(f"{tokenizer.convert_ids_to_tokens(i)!r} {i}" for i in ids)


def _control_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The special added tokens (turn markers and the like), BOS aside."""
    special = {int(i) for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return special - {tokenizer.bos_token_id}


def _assistant_header(subject: Subject) -> str:
    """The text the template writes before an assistant reply ("" when it cannot be told)."""
    try:
        without = subject.render(conv.USER_ONLY, add_generation_prompt=False)
        full = subject.render(
            [*conv.USER_ONLY, conv.assistant(conv.ASSISTANT_TEXT)], add_generation_prompt=False
        )
    except RenderError:
        return ""
    at = full.find(conv.ASSISTANT_TEXT, len(without))
    return full[len(without) : at].strip() if full.startswith(without) and at >= 0 else ""


def _own_turn(tokenizer: PreTrainedTokenizerBase, reply: Reply, ends: set[int]) -> tuple[list[int], str]:
    """The reply's tokens before its first turn-ending token, and their text with special tokens kept."""
    body = list(reply.ids)
    cut = next((i for i, t in enumerate(body) if t in ends), len(body))
    return body[:cut], str(tokenizer.decode(body[:cut], skip_special_tokens=False))


def _markup(turn: tuple[list[int], str], control: set[int], header: str, leading: bool = False) -> bool:
    ids, raw = turn
    if leading:
        return bool(ids) and (ids[0] in control or (bool(header) and raw.lstrip().startswith(header)))
    return any(t in control for t in ids) or (bool(header) and header in raw)


def _missing_stop(
    tokenizer: PreTrainedTokenizerBase, runaway: list[Reply], stop: tuple[int, ...]
) -> tuple[int, int] | None:
    """The control token most replies wrote and went on past, if at least half of the runaway replies did."""
    control = _control_ids(tokenizer) - set(stop)
    firsts = Counter(next((t for t in r.ids if t in control), None) for r in runaway)
    firsts.pop(None, None)
    if not firsts:
        return None
    token, count = firsts.most_common(1)[0]
    return (token, count) if token is not None and count * 2 >= len(runaway) else None


def _correct_if_stopped_at(tokenizer: PreTrainedTokenizerBase, reply: Reply, stop: set[int]) -> bool:
    end = next((i for i, t in enumerate(reply.ids) if t in stop), len(reply.ids))
    return reply.probe.is_correct(
        str(tokenizer.decode(list(reply.ids[:end]), skip_special_tokens=True)).strip()
    )


__all__ = ["clean_start", "probe_accuracy", "stops", "table", "template_sensitivity", "tool_call"]
