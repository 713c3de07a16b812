"""The agent-loop and closed-turn checks, each proven both ways: correct templates pass, broken ones fail with
their message, cause and a fix that works when applied."""

from __future__ import annotations

from functools import cache

import pytest

from templatecheck.checks import template
from templatecheck.checks.agent import agent_loop, closed_turns, markers
from templatecheck.corpus import corpus_model
from templatecheck.model import Model, Subject, Template, load_model
from templatecheck.result import CheckResult, Outcome
from tests.conftest import FIXTURES, SHARED, needs_shared, subject, subject_with_template

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INST = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' %} {{ m.content }}</s>{% endif %}{% endfor %}"
)


def tool_use() -> str:
    """The tiny Hermes fixture's ``tool_use`` template: ChatML with tool calls and tool results, correct."""
    return subject("hermes-3-tiny", "tool_use").template.source


def changed(old: str, new: str) -> str:
    source = tool_use()
    assert source.count(old) == 1, old
    return source.replace(old, new)


TOOL_CLOSE = "{{- '\\n</tool_response><|im_end|>\\n' }}"
CALLS_CLOSE = "{%- endfor %}\n{{- '<|im_end|>\\n' }}"
PROMPT = "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"


def failed(result: CheckResult) -> list[str]:
    return [f.cause for f in result.findings if f.outcome is Outcome.FAILED]


def notes(result: CheckResult) -> list[str]:
    return [f.cause for f in result.findings if f.outcome is Outcome.PASSED and f.cause]


def only(result: CheckResult, cause: str) -> str:
    found = [f for f in result.findings if f.cause == cause]
    assert len(found) == 1, result.findings
    return found[0].text


# ------------------------------------------------------------------------------------------------ agent loop


@pytest.mark.parametrize(("model", "name"), [("hermes-3-tiny", "default"), ("hermes-3-tiny", "tool_use")])
def test_agent_loop_passes_templates_whose_prompts_continue(model: str, name: str) -> None:
    result = agent_loop(subject(model, name))
    assert result.outcome is Outcome.PASSED
    runs = 3 if name == "tool_use" else 1
    assert result.findings[0].message.endswith(
        f"over {runs} runs: each prompt plus its reply starts the next"
    )


#: The tool turn closed without the newline before <|im_end|> when it is the last message (Hermes 3's bug).
TOOL_LAST_DIFFERS = changed(
    TOOL_CLOSE,
    "{{- '\\n</tool_response>' }}{% if not loop.last %}{{ '\\n' }}{% endif %}{{ '<|im_end|>\\n' }}",
)


def test_agent_loop_catches_a_tool_turn_closed_differently_when_last() -> None:
    result = agent_loop(subject_with_template("hermes-3-tiny", TOOL_LAST_DIFFERS))
    assert result.outcome is Outcome.FAILED
    assert failed(result) == ["agent_loop.tool_turn_differs"]
    text = only(result, "agent_loop.tool_turn_differs")
    assert text.startswith(
        "the tool turn ends with '</tool_response><|im_end|>' when it is the last message (the prompt an agent "
        "sends after a tool result) and with '</tool_response>\\n<|im_end|>' once the reply follows"
    )
    assert "  tool: 'sunny' {'tool_call_id': 'call00001', 'name': 'get_weather'}" in text
    assert text.endswith(
        "fix: end the tool turn with '</tool_response>\\n<|im_end|>' also when it is the last message (it writes "
        "'</tool_response><|im_end|>' there now): the turn then renders the same whatever follows"
    )


def test_the_printed_fix_of_a_tool_turn_makes_the_loop_pass() -> None:
    fixed = TOOL_LAST_DIFFERS.replace("{% if not loop.last %}{{ '\\n' }}{% endif %}", "{{ '\\n' }}")
    assert agent_loop(subject_with_template("hermes-3-tiny", fixed)).outcome is Outcome.PASSED


def test_agent_loop_catches_a_different_header_after_a_tool_result() -> None:
    source = changed(
        PROMPT,
        "{%- if add_generation_prompt %}{% if messages[-1].role == 'tool' %}{{ '<|im_start|>assistant tool\\n' }}"
        "{% else %}{{ '<|im_start|>assistant\\n' }}{% endif %}{% endif %}",
    )
    result = agent_loop(subject_with_template("hermes-3-tiny", source))
    assert failed(result) == ["agent_loop.header_after_tool"]
    text = only(result, "agent_loop.header_after_tool")
    assert text.startswith(
        "after a tool result the generation prompt is '<|im_start|>assistant tool\\n', but the reply is written "
        "after '<|im_start|>assistant\\n' in history (after a user turn the two agree)"
    )
    assert text.endswith(
        "fix: write '<|im_start|>assistant\\n' as the generation prompt after a tool turn, as replies are written "
        "in history"
    )


def test_agent_loop_warns_on_a_thinking_block_opened_after_tool_results() -> None:
    source = changed(
        PROMPT,
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% if messages[-1].role == 'tool' %}"
        "{{ '<think>\\n\\n</think>\\n' }}{% endif %}{% endif %}",
    )
    result = agent_loop(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert [f.cause for f in result.findings if f.outcome is Outcome.WARNING] == [
        "agent_loop.thinking_rewritten"
    ]
    assert only(result, "agent_loop.thinking_rewritten").startswith(
        "after a tool result the prompt ends with '<|im_start|>assistant\\n<think>\\n\\n</think>\\n', a thinking "
        "block the reply in history does not have (it follows '<|im_start|>assistant\\n'): the family's reasoning "
        "convention"
    )


def test_agent_loop_catches_a_call_turn_rewritten_once_its_results_follow() -> None:
    source = changed(
        CALLS_CLOSE,
        "{%- endfor %}\n{% if loop.last %}{{- '<|im_end|>\\n' }}{% else %}{{- ' <|im_end|>\\n' }}{% endif %}",
    )
    result = agent_loop(subject_with_template("hermes-3-tiny", source))
    assert failed(result) == ["agent_loop.call_turn_changed"]
    text = only(result, "agent_loop.call_turn_changed")
    assert text.startswith(
        "the tool-call reply (message 2) as the template writes it after the prompt is not how it is rendered "
        "once its results follow"
    )
    assert "-</tool_call><|im_end|>\n" in text and "+</tool_call> <|im_end|>␤\n" in text
    assert text.endswith("fix: render a tool-call turn the same whether or not its results follow")


def test_agent_loop_leaves_history_after_a_final_reply_to_prefix_stability() -> None:
    source = CHATML.replace(
        "\n{{ m.content }}",
        "\n{% if loop.last and m.role == 'assistant' %}[latest] {% endif %}{{ m.content }}",
    )
    target = subject_with_template("hermes-3-tiny", source)
    result = agent_loop(target)
    assert result.outcome is Outcome.PASSED
    assert notes(result) == ["prefix_stability.history_changed"]
    assert result.findings[0].message.startswith(
        "also observed prefix_stability.history_changed (reported by `prefix_stability`)"
    )
    assert template.prefix_stability(target).outcome is Outcome.FAILED  # the owner reports it, once


def test_agent_loop_names_a_convention_as_its_owners_warning() -> None:
    source = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% if loop.last and m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = agent_loop(subject_with_template("llama-3-tiny", source))
    assert result.outcome is Outcome.PASSED  # the reply ends at <|im_end|>, the model stops there
    assert failed(result) == []


# ---------------------------------------------------------------------------------------------- closed turns


@pytest.mark.parametrize(
    ("source", "end"), [(CHATML, "<|im_end|>"), (None, "<|im_end|>")], ids=["chatml", "tool_use"]
)
def test_closed_turns_passes_turns_closed_once(source: str | None, end: str) -> None:
    target = subject_with_template("hermes-3-tiny", source or tool_use())
    result = closed_turns(target)
    assert result.outcome is Outcome.PASSED
    assert result.findings[0].message.endswith(f"shapes is closed once with {end!r}")


@pytest.mark.parametrize(
    ("family", "end"),
    [("chatml", "<|im_end|>"), ("llama3.1", "<|eot_id|>"), ("gemma", "<end_of_turn>"), ("phi3", "<|end|>")],
)
def test_the_end_of_turn_marker_is_learnt_from_the_rendering(family: str, end: str) -> None:
    target = subject(f"families/{family}")
    learnt = markers(target)
    assert learnt is not None and learnt.end == end
    assert closed_turns(target).outcome is Outcome.PASSED


def test_a_format_without_a_marker_before_the_reply_is_skipped() -> None:
    result = closed_turns(subject_with_template("hermes-3-tiny", INST))
    assert result.outcome is Outcome.SKIPPED
    assert (
        result.message
        == "the format has no end-of-turn marker between a user turn and the assistant's header"
    )


def test_closed_turns_catches_a_turn_left_open_after_a_tool_round_trip() -> None:
    source = changed(
        TOOL_CLOSE,
        "{{- '\\n</tool_response>' }}{% if loop.nextitem is defined and loop.nextitem.role == 'user' %}"
        "{{ '\\n' }}{% else %}{{ '<|im_end|>\\n' }}{% endif %}",
    )
    result = closed_turns(subject_with_template("hermes-3-tiny", source))
    assert failed(result) == ["closed_turns.unclosed"]
    text = only(result, "closed_turns.unclosed")
    assert text.startswith(
        "the turn open at the tool message 2 is not closed with '<|im_end|>' before the user turn opens\n"
        "  between the turns: '\\n</tool_response>\\n<|im_start|>'\n"
    )
    assert text.endswith(
        "fix: write '<|im_end|>' to close the open turn before the next turn's opener in this shape"
    )


def test_closed_turns_catches_replies_closed_with_the_eos_token() -> None:
    source = CHATML.replace(
        "{{ m.content }}<|im_end|>",
        "{{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% else %}<|im_end|>{% endif %}",
    )
    result = closed_turns(subject_with_template("llama-3-tiny", source))
    assert failed(result) == ["closed_turns.eos_instead_of_end_of_turn"]
    text = only(result, "closed_turns.eos_instead_of_end_of_turn")
    assert text.startswith(
        "the assistant turn (message 2) is closed with the end-of-sequence token '<|eot_id|>', not with "
        "'<|im_end|>', the end-of-turn marker of the other turns"
    )
    assert text.endswith(
        "fix: close assistant turns with '<|im_end|>' like the others (the model stops on it)"
    )


def test_closed_turns_catches_a_marker_written_twice() -> None:
    source = CHATML.replace(
        "{{ m.content }}<|im_end|>",
        "{{ m.content }}<|im_end|>{% if m.role == 'assistant' %}\n<|im_end|>{% endif %}",
    )
    result = closed_turns(subject_with_template("hermes-3-tiny", source))
    assert failed(result) == ["closed_turns.closed_twice"]
    text = only(result, "closed_turns.closed_twice")
    assert text.startswith(
        "the assistant turn (message 2) is closed twice with '<|im_end|>'\n  between the turns: "
    )
    assert text.endswith(
        "fix: write '<|im_end|>' once at the end of each turn, and open every turn with its header"
    )


def test_an_end_of_sequence_token_after_the_last_reply_is_not_a_second_close() -> None:
    # the tiny fixture's end-of-sequence token is <|im_end|>: written once more after the final reply, it is
    # `prefix_stability.final_eos`'s convention
    source = (
        CHATML
        + "{% if not add_generation_prompt and messages[-1].role == 'assistant' %}{{ eos_token }}{% endif %}"
    )
    assert closed_turns(subject_with_template("hermes-3-tiny", source)).outcome is Outcome.PASSED


def test_a_final_reply_left_open_is_unclosed() -> None:
    source = CHATML.replace(
        "{{ m.content }}<|im_end|>\n", "{{ m.content }}{% if not loop.last %}<|im_end|>\n{% endif %}"
    )
    result = closed_turns(subject_with_template("hermes-3-tiny", source))
    assert failed(result) == ["closed_turns.unclosed"]
    assert only(result, "closed_turns.unclosed").startswith(
        "the turn open at the assistant message 4 is not closed with '<|im_end|>' before the conversation ends"
    )


# ------------------------------------------------------------------------------------------- real templates


@cache
def real(name: str) -> Model:
    return load_model(str(SHARED / "models" / name))


@needs_shared
def test_hermes3_tool_use_reports_the_tool_turn_once_with_a_fix_that_works() -> None:
    model = real("hermes-3-llama-3.1-8b")
    source = model.templates["tool_use"].source
    result = agent_loop(Subject(model, model.templates["tool_use"]))
    assert failed(result) == ["agent_loop.tool_turn_differs"]
    text = only(result, "agent_loop.tool_turn_differs")
    assert text.startswith(
        "the tool turn ends with '</tool_response><|im_end|>' when it is the last message (the prompt an agent "
        "sends after a tool result) and with '</tool_response>\\n<|im_end|>' once the reply follows"
    )
    assert (
        "fix: end the tool turn with '</tool_response>\\n<|im_end|>' also when it is the last message" in text
    )
    for other in (template.prefix_stability, template.generation_prompt, closed_turns):
        assert "agent_loop.tool_turn_differs" not in [
            f.cause for f in other(Subject(model, model.templates["tool_use"])).findings
        ]
    last = "{%- else %}\n            {{- '\n</tool_response>' }}"
    assert source.count(last) == 1
    fixed = Template(
        "tool_use", source.replace(last, "{%- else %}\n            {{- '\n</tool_response>\n' }}"), "<test>"
    )
    assert agent_loop(Subject(model, fixed)).outcome is Outcome.PASSED


@needs_shared
def test_a_gemma4_revision_leaves_the_model_turn_open_after_a_tool_round_trip() -> None:
    model = corpus_model(SHARED / "corpus" / "templates", FIXTURES / "hermes-3-tiny")
    newer = closed_turns(Subject(model, model.templates["google__gemma-4-31B-it@llamacpp-2#default"]))
    assert failed(newer) == ["closed_turns.unclosed", "closed_turns.closed_twice"]
    assert only(newer, "closed_turns.unclosed").startswith(
        "the turn open at the tool message 2 is not closed with '<turn|>' before the user turn opens\n"
        "  between the turns: '<|\"|>}<tool_response|><|turn>'\n"
    )
    # a call with text: the text closes the model turn, and the reply after the results is in no turn
    assert only(newer, "closed_turns.closed_twice").startswith(
        "the assistant message 3 is written after the turn before it was closed, in no turn (no opener), and "
        "closed again with '<turn|>'\n  between the turns: '<|\"|>}<tool_response|>turn1zq7<turn|>\\nturn3zq7<turn|>'"
    )
    older = closed_turns(Subject(model, model.templates["google__gemma-4-31B-it@llamacpp-hist-2#default"]))
    assert older.outcome is Outcome.PASSED


@needs_shared
def test_the_corpus_hermes3_tool_use_template_gets_tools_and_reports_the_tool_turn_once() -> None:
    model = corpus_model(SHARED / "corpus" / "templates", FIXTURES / "hermes-3-tiny")
    result = agent_loop(
        Subject(model, model.templates["NousResearch__Hermes-3-Llama-3.1-8B@llamacpp#tool_use"])
    )
    assert failed(result) == ["agent_loop.tool_turn_differs"]


# ------------------------------------------------------------------------------------ behind a template switch


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% if enable_thinking %}<think>{% endif %}{{ messages[0].content }}", ("enable_thinking",)),
        (
            "{% if enable_thinking is defined and enable_thinking is false %}x{% endif %}",
            ("enable_thinking",),
        ),
        (
            "{% if not add_vision_id %}{% endif %}{{ 'y' if thinking == true else 'n' }}",
            ("add_vision_id", "thinking"),
        ),
        # a default for a caller's switch
        ("{% if x is not defined %}{% set x = true %}{% endif %}{% if x %}y{% endif %}", ("x",)),
        # a flag of the template's own, and a variable that is written: no switch
        ("{% for m in messages %}{% set flag = m.role == 'user' %}{% if flag %}u{% endif %}{% endfor %}", ()),
        ("{% if enable_thinking %}{{ enable_thinking }}{% endif %}", ()),
        ("{% if add_generation_prompt %}a{% endif %}{% if tools %}t{% endif %}", ()),
    ],
)
def test_switches_are_the_variables_a_template_reads_only_as_conditions(
    source: str, expected: tuple[str, ...]
) -> None:
    from templatecheck.capabilities import switches

    assert switches(subject_with_template("hermes-3-tiny", source)) == expected


THINKING_CHATML = CHATML.replace(
    "<|im_start|>assistant\n{% endif %}",
    "<|im_start|>assistant\n{% if enable_thinking %}<think>\n{% endif %}{% endif %}",
)


def test_a_crash_behind_a_switch_is_a_finding_of_renders_naming_it() -> None:
    assert template.renders(subject_with_template("hermes-3-tiny", THINKING_CHATML)).outcome is Outcome.PASSED
    broken = THINKING_CHATML.replace("<think>\n", "<think>{{ messages[-1].reasoning.strip() }}\n")
    result = template.renders(subject_with_template("hermes-3-tiny", broken))
    assert failed(result) == ["renders.crash"]
    assert only(result, "renders.crash").startswith(
        "with enable_thinking=True (chat_template_kwargs): a valid conversation does not render: template raised "
        "UndefinedError: 'dict object' has no attribute 'reasoning'\nconversation:\n  user: "
    )


def test_a_turn_left_open_behind_a_switch_is_a_finding_of_closed_turns_naming_it() -> None:
    source = CHATML.replace(
        "{{ m.content }}<|im_end|>",
        "{{ m.content }}{% if not (enable_thinking is false and m.role == 'assistant') %}<|im_end|>{% endif %}",
    )
    plain = closed_turns(subject_with_template("hermes-3-tiny", CHATML))
    assert plain.outcome is Outcome.PASSED
    result = closed_turns(subject_with_template("hermes-3-tiny", source))
    assert failed(result) == ["closed_turns.unclosed"]
    assert only(result, "closed_turns.unclosed").startswith(
        "with enable_thinking=False (chat_template_kwargs): the turn open at the assistant message 2 is not "
        "closed with '<|im_end|>' before the user turn opens"
    )


def test_a_tool_turn_closed_differently_behind_a_switch_is_a_finding_of_the_agent_loop_naming_it() -> None:
    source = changed(
        TOOL_CLOSE,
        "{{- '\\n</tool_response>' }}{% if not loop.last or not enable_thinking %}{{ '\\n' }}{% endif %}"
        "{{ '<|im_end|>\\n' }}",
    )
    assert agent_loop(subject_with_template("hermes-3-tiny", tool_use())).outcome is Outcome.PASSED
    result = agent_loop(subject_with_template("hermes-3-tiny", source))
    assert failed(result) == ["agent_loop.tool_turn_differs"]
    assert only(result, "agent_loop.tool_turn_differs").startswith(
        "with enable_thinking=True (chat_template_kwargs): the tool turn ends with '</tool_response><|im_end|>' "
        "when it is the last message"
    )


def test_a_template_that_loops_behind_a_switch_still_renders_without_it() -> None:
    """A bound exceeded behind a switch is that switch's finding; the template without it is judged as usual."""
    source = CHATML.replace(
        "<|im_start|>assistant\n{% endif %}",
        "<|im_start|>assistant\n{% if enable_thinking %}{% for a in range(100000) %}{% for b in range(100000) %}"
        "{% endfor %}{% endfor %}{% endif %}{% endif %}",
    )
    s = subject_with_template("hermes-3-tiny", source)
    result = template.renders(s)
    assert failed(result) == ["renders.crash"]
    assert only(result, "renders.crash").startswith(
        "with enable_thinking=True (chat_template_kwargs): a valid conversation does not render: render exceeded"
    )
    assert closed_turns(s).outcome is Outcome.PASSED
    assert template.prefix_stability(s).outcome is Outcome.PASSED
