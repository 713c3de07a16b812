"""The verdicts of the generation checks on made-up evaluations: thresholds, the paired test, diagnoses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from templatecheck import evaluation as probe
from templatecheck.checks import generation
from templatecheck.checks.generation import (
    clean_start,
    probe_accuracy,
    stops,
    table,
    template_sensitivity,
    tool_call,
)
from templatecheck.model import Subject
from templatecheck.options import Options
from templatecheck.probeset import BUILTIN, BUILTIN_TOOLS, Call
from templatecheck.result import CheckResult, Outcome
from templatecheck.toolcalls import CallFormat
from templatecheck.variants import Variant
from tests.conftest import fixture_model

END_OF_TEXT, IM_START, IM_END = 1025, 1026, 1027
APPLE, USER = 1000, 1001  # ordinary tokens stand in for reply text


def variant(name: str, verdict: str = "the model was trained on something else") -> Variant:
    return Variant(name, f"about {name}", verdict, lambda p: "")


def reply(
    i: int,
    correct: bool = True,
    ids: tuple[int, ...] = (APPLE, IM_END),
    raw: str = "apple",
    stopped: bool | None = None,
) -> probe.Reply:
    stopped = ids[-1] == IM_END if stopped is None else stopped
    return probe.Reply(BUILTIN[i], ids, raw, raw, stopped, correct, -0.5 if correct else -3.0)


def scores(name: str, right: int, **kwargs: object) -> probe.Scores:
    replies = tuple(reply(i, correct=i < right, **kwargs) for i in range(24))  # type: ignore[arg-type]
    return probe.Scores(variant(name), replies)


def evaluation(
    *all_scores: probe.Scores, tools: probe.Scores | None = None, stop: tuple[int, ...] = (IM_END,)
) -> probe.Evaluation:
    fmt = (
        CallFormat("<tool_call>", "name", "arguments", '<tool_call>\n{"name": "get_weather"}')
        if tools
        else None
    )
    return probe.Evaluation(
        stop=stop,
        stop_source="generation_config.json eos_token_id",
        budget=16,
        scores=all_scores,
        tools=tools,
        call_format=fmt,
        seconds=0.25,
        generated=100,
        device="cpu",
        dtype="float32",
    )


@pytest.fixture
def verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[Callable[..., CheckResult], probe.Evaluation], CheckResult]:
    """Run a check on the hermes fixture (its tokenizer has the ChatML tokens) with a made-up evaluation."""

    def run(check: Callable[..., CheckResult], ev: probe.Evaluation) -> CheckResult:
        monkeypatch.setattr(generation, "evaluate", lambda subject: ev)
        model = fixture_model("hermes-3-tiny")
        return check(Subject(model, model.templates["default"], Options(generate=True)))

    return run


# --------------------------------------------------------------------------------------------- probe_accuracy


def test_probe_accuracy_needs_half_the_probes(verdict: Callable[..., CheckResult]) -> None:
    assert verdict(probe_accuracy, evaluation(scores("shipped", 12))).outcome is Outcome.PASSED
    result = verdict(probe_accuracy, evaluation(scores("shipped", 11), scores("chatml", 20)))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith(
        "11/24 probes answered correctly under the shipped template (at least 12 expected). "
        "Probe accuracy: 11/24 under the shipped template, 20/24 under chatml."
    )
    shown = [line for line in result.message.split("\n") if line.startswith("  ")]
    assert shown[0] == f"  {BUILTIN[11].name}: expected {BUILTIN[11].answer!r}, got 'apple'"
    assert len(shown) == 5  # of the 13 wrong replies


def test_probe_accuracy_says_when_no_variant_helps_and_when_replies_do_not_stop(
    verdict: Callable[..., CheckResult],
) -> None:
    runaway = scores("shipped", 0, ids=(APPLE,) * 16)
    result = verdict(probe_accuracy, evaluation(runaway, scores("llama-3", 0)))
    assert "no variant does better. Only 0/24 replies stopped: see stops." in result.message


def test_no_renderable_probe_skips_every_check(verdict: Callable[..., CheckResult]) -> None:
    empty = evaluation(probe.Scores(variant("shipped"), ()))
    for check in (stops, clean_start, probe_accuracy, template_sensitivity, tool_call):
        result = verdict(check, empty)
        assert result.outcome is Outcome.SKIPPED
        assert result.message == "no probe renders under the shipped template (see `renders`)"


# ------------------------------------------------------------------------------------------ template_sensitivity


def paired(name: str, wins: int, losses: int, base: int = 12) -> probe.Scores:
    """A variant right on the shipped template's first ``base`` probes but ``losses`` of them, plus ``wins``."""
    right = [i < base for i in range(24)]
    for i in range(losses):
        right[i] = False
    for i in range(base, base + wins):
        right[i] = True
    return probe.Scores(variant(name), tuple(reply(i, correct=r) for i, r in enumerate(right)))


@pytest.mark.parametrize(("others", "outcome"), [(4, Outcome.FAILED), (6, Outcome.PASSED)])
def test_seven_clean_wins_are_significant_for_five_variants_not_for_seven(
    verdict: Callable[..., CheckResult], others: int, outcome: Outcome
) -> None:
    """p = 2^-7 = 0.0078: below 0.05/5, above 0.05/7."""
    fillers = [paired(f"filler-{i}", 0, 0) for i in range(others)]
    result = verdict(
        template_sensitivity, evaluation(scores("shipped", 12), paired("chatml", 7, 0), *fillers)
    )
    assert result.outcome is outcome
    if outcome is Outcome.FAILED:
        assert result.message.startswith(
            "chatml gets 19/24 probes right, the shipped template 12/24: the model was trained on something else."
        )
        assert (
            "7 probes right only under chatml, 0 only under the shipped template, p = 0.0078 < 0.05/5"
            in result.message
        )
    else:
        assert "+7 -0  p=0.0078" in result.message  # the table, as a note


def test_losses_count_against_a_variant(verdict: Callable[..., CheckResult]) -> None:
    result = verdict(template_sensitivity, evaluation(scores("shipped", 12), paired("chatml", 9, 3)))
    assert result.outcome is Outcome.PASSED  # 9 wins and 3 losses: p = 0.073


def test_the_best_winner_is_named_and_the_others_listed(verdict: Callable[..., CheckResult]) -> None:
    ev = evaluation(
        scores("shipped", 2, raw="no"), paired("chatml", 12, 0, base=2), paired("llama-3", 20, 0, base=2)
    )
    result = verdict(template_sensitivity, ev)
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("llama-3 gets 22/24 probes right, the shipped template 2/24")
    assert "  also significantly better: chatml (14/24)" in result.message
    assert "\n\n2/24" not in result.message and result.message.count("variant ") == 1  # one table


def test_the_table_lines_up_and_lists_identical_variants() -> None:
    shipped = probe.Scores(variant("shipped"), scores("shipped", 20).replies, ("chatml + system prompt",))
    text = table(evaluation(shipped, scores("llama-3 + system prompt", 3)))
    lines = text.split("\n")
    assert (
        lines[0]
        == "24 probes, greedy, 16 new tokens, stop at [1027], cpu float32, 0.2 s for 100 generated tokens"
    )
    assert lines[1].split() == [
        "variant",
        "correct",
        "log-lik/token",
        "stopped",
        "vs",
        "shipped",
        "(McNemar",
        "p)",
    ]
    assert lines[2].split() == ["shipped", "20/24", "-0.917", "24/24"]  # (20 x -0.5 + 4 x -3.0) / 24
    assert lines[3].split()[:4] == ["llama-3", "+", "system", "prompt"]
    assert lines[1].index("correct") == lines[2].index("20/24") == lines[3].index("3/24")
    assert lines[-1] == "  (same prompts as shipped: chatml + system prompt)"


# ------------------------------------------------------------------------------------------------------- stops


def test_stops_needs_half_the_replies_to_stop(verdict: Callable[..., CheckResult]) -> None:
    half = [reply(i, ids=(APPLE, IM_END) if i < 12 else (APPLE,) * 16) for i in range(24)]
    result = verdict(stops, evaluation(probe.Scores(variant("shipped"), tuple(half))))
    assert result.outcome is Outcome.PASSED
    assert result.message == (
        "12/24 replies ended with a stop token ('<|im_end|>' 1027, from generation_config.json eos_token_id) "
        "within 16 new tokens"
    )


def test_stops_names_the_turn_end_the_stop_set_lacks(verdict: Callable[..., CheckResult]) -> None:
    runaway = (APPLE, IM_END, USER, IM_START, USER, *(USER,) * 11)
    replies = tuple(reply(i, correct=False, ids=runaway, raw="apple<|im_end|>user") for i in range(24))
    result = verdict(stops, evaluation(probe.Scores(variant("shipped"), replies), stop=(END_OF_TEXT,)))
    # <|im_end|> closes the template's turns: the root cause is end_of_turn's, noted here with the cost
    assert result.outcome is Outcome.PASSED
    (note,) = result.findings
    assert note.cause == "end_of_turn.not_stop_token"
    prefix = "also observed end_of_turn.not_stop_token (reported by `end_of_turn`): "
    assert note.message.startswith(prefix)
    lines = note.message.removeprefix(prefix).split("\n")
    assert lines[0] == (
        "0/24 replies ended with a stop token ('<|end_of_text|>' 1025, from generation_config.json "
        "eos_token_id) within 16 new tokens."
    )
    assert lines[1].startswith(
        "The model ends its turns with '<|im_end|>' (1027): 24/24 replies wrote it and went on past it. "
        "Stopping there too, "
    )
    assert (
        lines[2]
        == "  fix: add 1027 ('<|im_end|>') to eos_token_id in generation_config.json: \"eos_token_id\": [1025, 1027]"
    )
    assert lines[3] == "  word-apple: 'apple<|im_end|>user'"


def test_a_turn_end_in_under_half_the_runaway_replies_is_no_diagnosis(
    verdict: Callable[..., CheckResult],
) -> None:
    replies = tuple(
        reply(i, correct=False, ids=(APPLE, IM_END, *(USER,) * 14) if i < 11 else (USER,) * 16)
        for i in range(24)
    )
    result = verdict(stops, evaluation(probe.Scores(variant("shipped"), replies), stop=(END_OF_TEXT,)))
    assert result.outcome is Outcome.FAILED
    assert "ends its turns with" not in result.message
    assert "Probe accuracy: 0/24 under the shipped template" in result.message


def test_stops_falls_back_to_the_accuracy_without_a_common_turn_end(
    verdict: Callable[..., CheckResult],
) -> None:
    replies = tuple(reply(i, correct=False, ids=(APPLE,) * 16, raw="apple " * 16) for i in range(24))
    result = verdict(stops, evaluation(probe.Scores(variant("shipped"), replies), scores("chatml", 20)))
    assert result.outcome is Outcome.FAILED
    assert result.message.split("\n")[1] == (
        "Probe accuracy: 0/24 under the shipped template, 20/24 under chatml. Only 0/24 replies stopped: see stops."
    )


# ------------------------------------------------------------------------------------------------- clean_start


def with_markup(count: int, leading: bool) -> probe.Scores:
    marked = (IM_START, APPLE, IM_END) if leading else (APPLE, IM_START, IM_END)
    replies = tuple(reply(i, ids=marked if i < count else (APPLE, IM_END)) for i in range(24))
    return probe.Scores(variant("shipped"), replies)


@pytest.mark.parametrize(
    ("count", "leading", "outcome"),
    [
        (0, False, Outcome.PASSED),
        (1, False, Outcome.WARNING),
        (5, False, Outcome.WARNING),
        (6, False, Outcome.FAILED),
        (1, True, Outcome.FAILED),
    ],
)
def test_clean_start_fails_on_leading_or_frequent_markup(
    verdict: Callable[..., CheckResult], count: int, leading: bool, outcome: Outcome
) -> None:
    result = verdict(clean_start, evaluation(with_markup(count, leading)))
    assert result.outcome is outcome
    assert result.message.startswith(f"{count}/24 replies hold template markup")
    if count:
        assert f"({count if leading else 0} begin with it)" in result.message


# --------------------------------------------------------------------------------------------------- tool_call


def tool_scores(parsed: int) -> probe.Scores:
    call = Call("get_weather", {"city": "Paris"})
    replies = tuple(
        probe.Reply(
            p, (APPLE, IM_END), "", "<tool_call>{...}", True, i == 0, None, call if i < parsed else None
        )
        for i, p in enumerate(BUILTIN_TOOLS)
    )
    return probe.Scores(variant("shipped"), replies)


def test_tool_call_needs_half_the_replies_to_hold_a_call(verdict: Callable[..., CheckResult]) -> None:
    result = verdict(tool_call, evaluation(scores("shipped", 20), tools=tool_scores(2)))
    assert result.outcome is Outcome.PASSED
    assert result.message == (
        "2/4 tool replies hold a call in the template's format (after '<tool_call>', JSON with 'name' and "
        "'arguments'); 1/4 call the right function with the right arguments"
    )
    failed = verdict(tool_call, evaluation(scores("shipped", 20), tools=tool_scores(1)))
    assert failed.outcome is Outcome.FAILED
    assert '  the template writes a call as: \'<tool_call>␤\\n{"name": "get_weather"}\'' in failed.message
    assert failed.message.count("  tool-") == 3  # the replies without a call
