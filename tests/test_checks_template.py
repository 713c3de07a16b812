"""Template-layer checks, each proven both ways: a correct fixture passes, a broken one fails with its message
and its cause."""

from __future__ import annotations

import pytest

from templatecheck.checks import REGISTRY
from templatecheck.checks.template import (
    assistant_mask,
    by_cause,
    content_fidelity,
    content_format,
    fidelity_findings,
    generation_prompt,
    prefix_stability,
    renders,
    tag,
)
from templatecheck.result import CheckResult, Finding, Layer, Outcome
from tests.conftest import subject, subject_with_template

CORRECT = [("hermes-3-tiny", "default"), ("hermes-3-tiny", "tool_use"), ("llama-3-tiny", "default")]
#: Checks that cannot apply to the plain fixtures, or that flag what every model has (see their own tests).
EXPECTED = {
    "assistant_mask": Outcome.SKIPPED,  # no {% generation %} blocks
    "control_token_injection": Outcome.WARNING,  # every tokenizer turns control-token text into tokens
    "mistral_common": Outcome.SKIPPED,  # not a Mistral format
    "content_fidelity": Outcome.WARNING,  # string content only: list content raises (see its own test)
}


@pytest.mark.parametrize(("model", "template"), CORRECT)
@pytest.mark.parametrize(
    "name", [n for n, c in REGISTRY.items() if c.layer not in (Layer.GENERATION, Layer.ENGINE)]
)  # the engine layer's own tests (tests/test_engines*.py) run it on these fixtures
def test_correct_fixtures_pass_every_check(model: str, template: str, name: str) -> None:
    result = REGISTRY[name](subject(model, template))
    expected = EXPECTED.get(name, Outcome.PASSED)
    if name == "tools" and template == "default":
        expected = Outcome.SKIPPED  # plain ChatML and Llama 3 templates have no tool support
    if name == "reference" and template == "tool_use":
        expected = Outcome.SKIPPED  # the Hermes tool prompt's wording is not fixed by the reference
    if name == "content_fidelity" and model == "llama-3-tiny":
        expected = Outcome.FAILED  # list content printed as a repr, as Meta's Llama 3 template does
    assert result.outcome is expected, result.message


def causes(result: CheckResult, outcome: Outcome | None = None) -> list[str]:
    """The cause keys of a result's findings (of one outcome, if given)."""
    return [f.cause for f in result.findings if f.cause and (outcome is None or f.outcome is outcome)]


def finding(result: CheckResult, cause: str) -> Finding:
    found = [f for f in result.findings if f.cause == cause]
    assert len(found) == 1, (cause, [(f.cause, f.message) for f in result.findings])
    return found[0]


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_WITH_PROMPT = CHATML.replace("<|im_start|>assistant\n{% endif %}", "PROMPT{% endif %}")
INST = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' %} {{ m.content }}</s>{% endif %}{% endfor %}"
)
#: The original Llama 3 8B Instruct template: the assistant header after every conversation.
LLAMA3_ORIGINAL = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)


# ----------------------------------------------------------------------------------------- one finding per cause


def test_by_cause_reports_every_distinct_cause_past_any_limit() -> None:
    """Five causes on five conversations: all five come back, each shrunk, none cut off by a limit."""
    from templatecheck.causes import Cause

    rules = [Cause(f"renders.test_cause_{i}", Outcome.FAILED, "a test cause") for i in range(5)]

    def judge(conversation: list[dict[str, object]]) -> list[Finding]:
        return [rules[i](f"cause {i}") for i in range(5) if f"w{i}" in str(conversation[0]["content"])]

    conversations = [[{"role": "user", "content": f"w{i} padding words"}] for i in range(5)]
    found = by_cause([*conversations, *conversations], judge, owner="renders")
    assert [f.cause for f in found] == [r.key for r in rules]
    assert all("conversation:\n  user: 'w" in f.message for f in found)
    assert all(len(f.message.split("user: ")[1]) < len("'w0 padding words'") for f in found)  # shrunk


def test_a_second_cause_is_reported_next_to_the_first() -> None:
    """A template that drops the system message and repeats user messages: two causes, two findings."""
    source = (
        "{% for m in messages %}{% if m.role == 'user' %}<u>{{ m.content }}{{ m.content }}"
        "{% elif m.role == 'assistant' %}<a>{{ m.content }}{% endif %}{% endfor %}"
    )
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert {"content_fidelity.system_dropped", "content_fidelity.repeated"} <= set(
        causes(result, Outcome.FAILED)
    )


# ---------------------------------------------------------------------------------------------------- renders


def test_renders_reports_a_template_that_does_not_parse_once() -> None:
    result = renders(subject_with_template("hermes-3-tiny", "{% for m in messages %}{{ m.content }}"))
    assert [(f.cause, f.outcome) for f in result.findings] == [("renders.syntax", Outcome.FAILED)]
    assert result.message.startswith("the template does not parse or compile: template does not parse")
    other = generation_prompt(
        subject_with_template("hermes-3-tiny", "{% for m in messages %}{{ m.content }}")
    )
    assert other.outcome is Outcome.SKIPPED and "does not parse (see `renders`)" in other.message


def test_renders_catches_a_template_that_raises_as_one_finding() -> None:
    result = renders(subject("broken/template-raises"))
    assert result.outcome is Outcome.FAILED
    assert [f.cause for f in result.findings] == ["renders.crash"]
    assert result.message.startswith(
        "the template does not render (user only, add_generation_prompt=False): template raised"
    )
    assert "also: system + user + assistant, add_generation_prompt=True" in result.message
    assert "strip_all" in result.message
    assert "user: 'What is the capital of France?'" in result.message


def test_renders_catches_a_template_that_renders_nothing() -> None:
    target = subject_with_template("hermes-3-tiny", "{% for m in messages %}{% endfor %}")
    result = renders(target)
    assert [(f.cause, f.outcome) for f in result.findings] == [("renders.empty", Outcome.FAILED)]
    assert result.message == "the template renders nothing for the plain conversations: an empty prompt"
    for other in (generation_prompt, content_fidelity, prefix_stability):
        assert other(target).outcome is Outcome.SKIPPED  # one root cause, one finding


def test_renders_warns_on_a_deliberate_system_refusal() -> None:
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    result = renders(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == ["renders.system_refused"]
    assert result.message.startswith(
        "the template refuses a system message (system + user + assistant, add_generation_prompt=False): "
        "template refused: System role not supported"
    )


def test_renders_fails_a_template_that_refuses_a_plain_user_message() -> None:
    source = CHATML.replace(
        "{% for m in messages %}", "{{ raise_exception('Pass functions=...') }}{% for m in messages %}"
    )
    result = renders(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["renders.plain_refused"]
    assert result.message.startswith(
        "the template does not render (user only, add_generation_prompt=False): template refused: Pass functions=..."
    )


def test_renders_warns_on_a_deliberate_refusal_of_other_input() -> None:
    source = CHATML.replace(
        "{% for m in messages %}",
        "{% for m in messages %}{% if '\\n' in m.content %}{{ raise_exception('No newlines, please') }}{% endif %}",
    )
    result = renders(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == ["renders.refused"]
    assert result.message.startswith(
        "the template refuses a valid conversation: template refused: No newlines, please"
    )


def test_renders_finds_and_shrinks_a_crash_on_generated_conversations() -> None:
    """A template that crashes only on text with a newline: hypothesis finds it, the shrinker shortens it."""
    source = (
        "{% for m in messages %}{% if '\\n' in m.content %}{{ m.content.nope() }}{% endif %}"
        "<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    result = renders(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["renders.crash"]
    assert result.message.startswith("a valid conversation does not render: template raised UndefinedError")
    conversation = result.message.split("conversation:\n", 1)[1].splitlines()
    assert len(conversation) <= 2  # shrunk to the message with the newline (and the user turn it needs)
    assert any("\\n" in line for line in conversation)
    assert all(len(line) < 40 for line in conversation)


# ------------------------------------------------------------------------------------------ generation prompt


def test_generation_prompt_catches_an_ignored_add_generation_prompt() -> None:
    result = generation_prompt(subject("broken/ignores-add-generation-prompt"))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["generation_prompt.ignored"]
    assert result.message.startswith(
        "add_generation_prompt=True adds no assistant header, but replies are written after "
        "'<|im_start|>assistant\\n': the model is asked to continue the user's turn"
    )
    fix = (
        'fix: end the template with {% if add_generation_prompt %}{{ "<|im_start|>assistant\\n" }}{% endif %}'
    )
    assert fix in result.message
    assert "<|im_start|>user␤\n" in result.message  # the rendering is shown with visible newlines


def test_generation_prompt_catches_a_header_written_without_add_generation_prompt() -> None:
    """The original Llama 3 template ends every rendering with the assistant header."""
    target = subject_with_template("llama-3-tiny", LLAMA3_ORIGINAL)
    result = generation_prompt(target)
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["generation_prompt.always_added"]
    assert result.message.startswith(
        "the rendering without add_generation_prompt already ends with the assistant header: the template "
        "writes '<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n' at the end of every conversation"
    )
    assert "fix: write the assistant header only inside {% if add_generation_prompt %}" in result.message
    # the break of history it causes is the same root cause: a note of prefix_stability, not a second failure
    stability = prefix_stability(target)
    assert stability.outcome is Outcome.PASSED, stability.message
    assert causes(stability) == ["generation_prompt.always_added"]
    assert stability.findings[0].message.startswith(
        "also observed generation_prompt.always_added (reported by `generation_prompt`)"
    )


def test_a_header_and_forced_prefix_written_after_the_last_user_turn_is_always_added() -> None:
    """Apriel 1.6 (an older revision): the header and a reasoning opener follow the last user turn, flag or not."""
    source = CHATML.replace(
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "{% if loop.last and m.role == 'user' %}<|im_start|>assistant\nHere are my reasoning steps:\n{% endif %}"
        "{% endfor %}",
    )
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert causes(result) == ["generation_prompt.always_added"]
    assert result.message.startswith(
        "the rendering without add_generation_prompt already ends with the assistant header: the template writes "
        "'<|im_end|>\\n<|im_start|>assistant\\nHere are my reasoning steps:\\n' after the last user message (the "
        "header before replies, and more), whatever add_generation_prompt says"
    )


@pytest.mark.parametrize("source", [INST, subject("llama-3-tiny").template.source])
def test_a_header_under_add_generation_prompt_or_no_header_is_not_always_added(source: str) -> None:
    """Mistral and Llama 2 put the reply straight after [/INST]: an empty generation prompt is right."""
    target = subject_with_template("llama-3-tiny", source)
    assert generation_prompt(target).outcome is Outcome.PASSED, generation_prompt(target).message
    assert prefix_stability(target).outcome is Outcome.PASSED


def test_generation_prompt_catches_a_header_that_differs_from_assistant_turns() -> None:
    result = generation_prompt(subject("broken/header-mismatch"))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["generation_prompt.header_mismatch"]
    assert (
        "a rendered assistant turn does not start with the generation-prompt header '<|im_start|>assistant ' but "
        "with '<|im_start|>assistant\\n'" in result.message
    )
    assert "-<|im_start|>assistant␠" in result.message  # the diff makes the trailing space visible
    assert "+<|im_start|>assistant␤" in result.message


def test_generation_prompt_catches_a_prompt_that_rewrites_the_conversation() -> None:
    source = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% if not add_generation_prompt %}</end>{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["generation_prompt.rewrites"]
    assert (
        "add_generation_prompt=True changes the conversation instead of appending a header" in result.message
    )
    assert "first difference at character" in result.message


def test_an_eos_that_only_ends_the_rendering_is_the_final_eos_convention() -> None:
    """Phi-3: EOS when there is no generation prompt; the prompt replaces it. A convention, not a rewrite."""
    source = CHATML.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n{% else %}{{ eos_token }}{% endif %}"
    )
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.PASSED, result.message
    assert causes(result) == ["prefix_stability.final_eos"]


def test_generation_prompt_accepts_a_format_without_assistant_header() -> None:
    result = generation_prompt(subject_with_template("hermes-3-tiny", INST))
    assert result.outcome is Outcome.PASSED, result.message


def test_generation_prompt_warns_on_a_forced_prefix() -> None:
    source = CHATML_WITH_PROMPT.replace("PROMPT", "<|im_start|>assistant\n<think>\n")
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == ["generation_prompt.forced_prefix"]
    assert result.message.startswith(
        "the generation prompt adds '<think>\\n' after the turn header '<|im_start|>assistant\\n', which "
        "rendered replies do not have"
    )


def test_generation_prompt_warns_on_a_thinking_opener_where_history_keeps_the_closer() -> None:
    """DeepSeek V3.2, GLM 4.7: the prompt opens thinking, history keeps only the stripped form."""
    source = CHATML_WITH_PROMPT.replace("PROMPT", "<|im_start|>assistant\n<think>").replace(
        "\n{{ m.content }}", "\n{% if m.role == 'assistant' %}</think>{% endif %}{{ m.content }}"
    )
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING, result.message
    assert finding(result, "generation_prompt.forced_prefix").message.startswith(
        "the generation prompt '<|im_start|>assistant\\n<think>' opens the thinking block differently from "
        "rendered replies ('<|im_start|>assistant\\n</think>'"
    )


def test_generation_prompt_warns_when_the_model_must_write_part_of_the_header() -> None:
    source = CHATML_WITH_PROMPT.replace("PROMPT", "<|im_start|>assistant")
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == ["generation_prompt.header_incomplete"]
    assert result.message.startswith(
        "the generation prompt '<|im_start|>assistant' lacks '\\n', which precedes replies in rendered turns"
    )


def test_generation_prompt_catches_continue_final_message_that_fails() -> None:
    """A template that lower-cases replies loses the continuation mark: continue_final_message fails."""
    source = CHATML.replace("{{ m.content }}", "{{ m.content | lower }}")
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["generation_prompt.continue_fails"]
    assert finding(result, "generation_prompt.continue_fails").message.startswith(
        "continue_final_message=True fails: continue_final_message is set but the final message does not appear"
    )


def test_generation_prompt_catches_continue_final_message_that_closes_the_turn() -> None:
    """A template that writes the last reply twice: the continued reply is not a prefix of the closed turn."""
    source = CHATML.replace("{{ m.content }}", "{{ m.content }}{% if loop.last %}{{ m.content }}{% endif %}")
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert "generation_prompt.continue_closed" in causes(result)
    assert finding(result, "generation_prompt.continue_closed").message.startswith(
        "continue_final_message=True does not leave the last reply open"
    )


def test_continuing_a_reply_with_trailing_whitespace_in_a_trimming_template_is_open() -> None:
    """The closed turn trims 'é\\r' to 'é' (a format decision); the continued one keeps what the caller wrote."""
    source = CHATML.replace("{{ m.content }}", "{{ m.content | trim }} ")
    assert "generation_prompt.continue_closed" not in causes(
        generation_prompt(subject_with_template("hermes-3-tiny", source))
    )
    doubled = CHATML.replace(
        "{{ m.content }}", "{{ m.content | trim }} {% if loop.last %}{{ m.content }}{% endif %}"
    )
    assert "generation_prompt.continue_closed" in causes(
        generation_prompt(subject_with_template("hermes-3-tiny", doubled))
    )


def test_generation_prompt_is_skipped_when_nothing_renders() -> None:
    result = generation_prompt(subject("broken/template-raises"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("no plain conversation renders (see `renders`)")


# ------------------------------------------------------------------------------------------- prefix stability


def test_prefix_stability_catches_history_that_changes() -> None:
    source = CHATML.replace("\n{{ m.content }}", "\n{% if loop.last %}[latest] {% endif %}{{ m.content }}")
    result = prefix_stability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["prefix_stability.history_changed"]
    assert result.message.startswith(
        "the rendering of the first 2 messages is not a prefix of the whole conversation's: earlier turns render "
        "differently once later turns follow"
    )
    assert "(near 'im_start|>assistant␤\\n[latest] x<|im_end|>')" in result.message  # where it changed
    assert result.message.endswith("conversation:\n  user: 'x'\n  assistant: 'x'\n  user: 'x'")


def test_prefix_stability_warns_on_eos_written_only_after_the_last_reply() -> None:
    source = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% if loop.last and m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = prefix_stability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == ["prefix_stability.final_eos"]
    assert result.message.startswith(
        "history rewrite by convention: the template writes the end-of-sequence token '<|im_end|>' only after "
        "the final message"
    )


def test_prefix_stability_warns_on_a_final_reply_closed_with_its_own_token() -> None:
    """gpt-oss closes the last reply with <|return|> and the same reply in history with <|end|>."""
    source = (
        "{% for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}"
        "{% if m.role == 'assistant' and loop.last %}<|return|>{% else %}<|end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|start|>assistant<|message|>{% endif %}"
    )
    result = prefix_stability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == ["prefix_stability.final_closer"]
    assert result.message.startswith(
        "history rewrite by convention: the final reply is closed with '<|return|>', the same reply in history "
        "with '<|end|>'"
    )


MOVES_SYSTEM = (
    "{% set ns = namespace(last=0) %}{% for m in messages %}{% if m.role == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% if m.role == 'user' %}[INST] {% if loop.index0 == ns.last and "
    "messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}{{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' %} {{ m.content }}</s>{% endif %}{% endfor %}"
)


def test_prefix_stability_warns_on_a_system_prompt_moved_to_the_last_user_turn() -> None:
    result = prefix_stability(subject_with_template("hermes-3-tiny", MOVES_SYSTEM))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == ["prefix_stability.system_moved"]
    assert result.message.startswith(
        "history rewrite: where the template places the system message changes"
    ), result.message
    # content_fidelity sees the system message after later turns: the same root cause, a note
    fidelity = content_fidelity(subject_with_template("hermes-3-tiny", MOVES_SYSTEM))
    assert "prefix_stability.system_moved" in causes(fidelity, Outcome.PASSED)


def test_prefix_stability_warns_on_tool_definitions_moved_to_the_last_user_turn() -> None:
    source = (
        "{% set ns = namespace(last=0) %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}"
        "{% if m.role == 'user' and loop.index0 == ns.last and tools %}[TOOLS]{{ tools | tojson }}[/TOOLS]"
        "{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}{% for c in m.tool_calls or [] %}<tool_call>"
        "{{ c.function | tojson }}</tool_call>{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = prefix_stability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING, result.message
    assert causes(result) == ["prefix_stability.tools_moved"]
    assert result.message.startswith(
        "history rewrite: where the template places the tool definitions changes"
    )


def test_prefix_stability_names_both_the_system_prompt_and_the_tools_moved() -> None:
    """Mistral v0.3 places both by the last user turn: only without both is history stable."""
    source = (
        "{% set ns = namespace(last=0) %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}"
        "{% if m.role == 'user' and loop.index0 == ns.last %}{% if tools %}[TOOLS]{{ tools | tojson }}[/TOOLS]"
        "{% endif %}{% if messages[0].role == 'system' %}[SYS]{{ messages[0].content }}{% endif %}{% endif %}"
        "{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}{% for c in m.tool_calls or [] %}"
        "<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = prefix_stability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING, result.message
    assert set(causes(result)) == {"prefix_stability.system_moved", "prefix_stability.tools_moved"}
    assert "prefix_stability.history_changed" not in causes(result)


def test_prefix_stability_warns_on_dropped_reasoning() -> None:
    source = (
        "{% set ns = namespace(last=0) %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and loop.index0 > ns.last %}"
        "<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = prefix_stability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == ["prefix_stability.reasoning_dropped"]
    assert result.message.startswith("history rewrite: the reasoning")


# ------------------------------------------------------------------------------------------- content fidelity


def test_content_fidelity_catches_a_dropped_system_message() -> None:
    result = content_fidelity(subject("broken/drops-system-message"))
    assert result.outcome is Outcome.FAILED
    assert "content_fidelity.system_dropped" in causes(result, Outcome.FAILED)
    assert finding(result, "content_fidelity.system_dropped").message.startswith(
        "the system message 0 is silently dropped\nconversation:\n  system:"
    )


def test_content_fidelity_catches_a_dropped_reply() -> None:
    source = CHATML.replace("{% for m in messages %}", "{% for m in messages if m.role != 'assistant' %}")
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert finding(result, "content_fidelity.dropped").message.startswith(
        "the assistant message 1 is silently dropped\nconversation:\n  user: 'x'\n  assistant: 'x'"
    )


def test_a_template_that_trims_the_turns_and_keeps_the_system_prompt_trims_as_a_format() -> None:
    source = CHATML.replace("{{ m.content }}", "{{ m.content if m.role == 'system' else m.content | trim }}")
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert "content_fidelity.trimmed" not in causes(result)
    assert finding(result, "content_fidelity.trimmed_as_format").outcome is Outcome.WARNING


@pytest.mark.parametrize("side", ["assistant", "system"])
def test_a_template_that_trims_only_its_own_side_trims_as_a_format(side: str) -> None:
    source = CHATML.replace(
        "{{ m.content }}", f"{{{{ m.content | trim if m.role == '{side}' else m.content }}}}"
    )
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert "content_fidelity.trimmed" not in causes(result)
    trimmed = finding(result, "content_fidelity.trimmed_as_format")
    assert trimmed.message.startswith(f"the {side} message ")
    assert "the template trims the text of its own side (replies written back as history" in trimmed.message


def test_content_fidelity_catches_content_trimmed_in_some_messages_only() -> None:
    source = CHATML.replace("{{ m.content }}", "{{ m.content | trim if m.role == 'user' else m.content }}")
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    trimmed = finding(result, "content_fidelity.trimmed")
    assert trimmed.outcome is Outcome.FAILED
    assert "is trimmed: '\\t⟪0⟫' renders as '⟪0⟫' (leading/trailing whitespace removed)" in trimmed.message
    assert "content_fidelity.trimmed_as_format" not in causes(result)


def test_a_template_that_trims_every_message_trims_as_a_format_and_the_reference_judges_the_format() -> None:
    # The same rule for any template, official or community: trimming every role alike is a format decision.
    # This fixture is ChatML, whose format keeps whitespace: the reference check owns that defect, once.
    trims = subject("broken/trims-content")
    result = content_fidelity(trims)
    trimmed = finding(result, "content_fidelity.trimmed_as_format")
    assert trimmed.outcome is Outcome.WARNING
    assert "is trimmed: '\\t⟪0⟫' renders as '⟪0⟫' (leading/trailing whitespace removed)" in trimmed.message
    assert "the template trims every turn's text (the user's and the assistant's alike)" in trimmed.message
    assert "content_fidelity.trimmed" not in causes(result)
    from templatecheck.checks.reference import reference

    assert [f.cause for f in reference(trims).findings if f.outcome is Outcome.FAILED] == [
        "reference.whitespace"
    ]


def test_trimming_is_a_warning_when_the_reference_format_trims() -> None:
    result = content_fidelity(subject("llama-3-tiny"))
    trimmed = finding(result, "content_fidelity.trimmed_as_format")
    assert trimmed.outcome is Outcome.WARNING
    assert "renders as" in trimmed.message
    assert "as the llama3 format does: the model never saw edge whitespace in training" in trimmed.message
    assert "content_fidelity.trimmed" not in causes(result)


def test_content_fidelity_catches_altered_content() -> None:
    source = CHATML.replace("{{ m.content }}", "{{ m.content | replace('a', 'A') }}")
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert finding(result, "content_fidelity.altered").message == (
        "the user message 0 is altered: '⟪0⟫a' renders as …'user\\n⟪0⟫A<|im_'…\nconversation:\n  user: 'a'"
    )


def test_content_fidelity_catches_reordered_and_repeated_turns() -> None:
    reverse = "{% for m in messages | reverse %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    result = content_fidelity(subject_with_template("hermes-3-tiny", reverse))
    assert result.outcome is Outcome.FAILED
    assert "is rendered out of order" in finding(result, "content_fidelity.reordered").message
    twice = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ m.content }}{% endfor %}"
    result = content_fidelity(subject_with_template("hermes-3-tiny", twice))
    assert "is rendered more than once" in finding(result, "content_fidelity.repeated").message


PARTS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}{% else %}"
    "{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_list_content_printed_as_a_repr_is_a_defect_that_names_the_content_format() -> None:
    result = content_fidelity(subject_with_template("hermes-3-tiny", CHATML))
    repr_finding = finding(result, "content_fidelity.list_content_repr")
    assert repr_finding.outcome is Outcome.FAILED
    assert repr_finding.message.startswith(
        "list content ([{'type': 'text', 'text': 'listzq7 part text'}]) is rendered as a Python repr, not as its "
        "text: the template expects 'string' content (the format vLLM's chat-template detection reads)"
    )
    assert "{% for p in m.content %}{{ p.text }}{% endfor %}" in (repr_finding.fix or "")
    # a message given as parts to the fidelity judge is reported as a repr too
    tagged = tag([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    found = fidelity_findings(subject_with_template("hermes-3-tiny", CHATML).render(tagged), tagged)
    assert [(f.cause, f.message) for f in found] == [
        (
            "content_fidelity.list_content_repr",
            "the user message 0 content is rendered as a Python repr; use its text",
        )
    ]


def test_list_content_silently_dropped_is_a_defect() -> None:
    source = CHATML.replace("{{ m.content }}", "{% if m.content is string %}{{ m.content }}{% endif %}")
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert finding(result, "content_fidelity.list_content_dropped").message.startswith(
        "list content ([{'type': 'text', 'text': 'listzq7 part text'}]) is silently dropped: its text is not in the "
        "prompt; the template expects 'string' content"
    )


@pytest.mark.parametrize(
    ("source", "how"),
    [
        (subject("hermes-3-tiny").template.source, "crashes: template raised TypeError"),
        (
            CHATML.replace(
                "{{ m.content }}",
                "{% if m.content is not string %}{{ raise_exception('Only string content') }}{% endif %}"
                "{{ m.content }}",
            ),
            "refuses it clearly: template refused: Only string content",
        ),
    ],
)
def test_list_content_that_raises_is_a_warning(source: str, how: str) -> None:
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    raised = finding(result, "content_fidelity.list_content_raises")
    assert raised.outcome is Outcome.WARNING
    assert raised.message.startswith(
        f"list content ([{{'type': 'text', 'text': 'listzq7 part text'}}]) is not accepted: the template {how}"
    )
    assert "the template expects 'string' content" in raised.message


def test_list_content_rendered_as_its_text_passes_and_reads_as_openai_content() -> None:
    result = content_fidelity(subject_with_template("hermes-3-tiny", PARTS))
    assert result.outcome is Outcome.PASSED, result.message
    assert content_format(PARTS) == "openai"
    assert content_format(CHATML) == "string"
    aliased = "{% for m in messages %}{% set c = m['content'] %}{% for p in c %}{{ p.text }}{% endfor %}{% endfor %}"
    assert content_format(aliased) == "openai"
    assert content_format("{% for m in messages %}") == "string"  # does not parse: nothing to detect


#: Reads the user's parts, prints the system message's content as it is (Gemma 4's and Llama 3.2 Vision's way).
USER_PARTS_ONLY = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'user' and m.content is not string %}"
    "{% for p in m.content %}{{ p.text }}{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_list_content_of_a_system_message_printed_as_a_repr_is_its_own_finding() -> None:
    result = content_fidelity(subject_with_template("hermes-3-tiny", USER_PARTS_ONLY))
    found = [f for f in result.findings if f.cause == "content_fidelity.list_content_repr"]
    assert len(found) == 1  # the system and the assistant message: one root cause, once
    assert found[0].outcome is Outcome.FAILED
    assert found[0].message == (
        "list content ([{'type': 'text', 'text': 'listzq7 part text'}]) of the system message and the assistant "
        "message is rendered as a Python repr, not as its text, though the user's is rendered as its text; the "
        "template loops over a message's content, which vLLM's chat-template detection reads as 'openai' content: "
        "vLLM then sends every message's text as parts, so this happens to every request that has such a message"
    )
    assert "{% for p in m.content %}{{ p.text }}{% endfor %}" in (found[0].fix or "")
    # a string-only template prints every role's parts as a repr: one root cause, the user's finding alone
    plain = content_fidelity(subject_with_template("hermes-3-tiny", CHATML))
    reprs = [f for f in plain.findings if f.cause == "content_fidelity.list_content_repr"]
    assert len(reprs) == 1 and reprs[0].message.startswith("list content ([{'type': 'text', 'text': 'listzq7")
    assert "of the system message" not in reprs[0].message


def test_list_content_of_a_dropped_role_is_not_a_list_finding() -> None:
    # the template never writes system messages: that is a dropped message, not a list-content finding
    source = PARTS.replace("{% for m in messages %}", "{% for m in messages if m.role != 'system' %}")
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert not [f for f in result.findings if (f.cause or "").startswith("content_fidelity.list_content")]


def test_content_dropped_next_to_tool_calls_is_the_tools_check_cause() -> None:
    source = subject("hermes-3-tiny", "tool_use").template.source.replace(
        "{% if message.content %}{{ message.content + '\\n' }}{% endif %}", ""
    )
    result = content_fidelity(subject_with_template("hermes-3-tiny", source, name="tool_use"))
    assert "tools.content_dropped_with_calls" in causes(result, Outcome.PASSED)
    assert "tools.content_dropped_with_calls" not in causes(result, Outcome.FAILED)


# -------------------------------------------------------------------------------------------- assistant mask

MASKED = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{% generation %}"
    "{{ m.content }}<|im_end|>{% endgeneration %}{% else %}{{ m.content }}<|im_end|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_assistant_mask_passes_a_mask_over_reply_and_end_of_turn() -> None:
    result = assistant_mask(subject_with_template("hermes-3-tiny", MASKED))
    assert result.outcome is Outcome.PASSED, result.message


def test_assistant_mask_catches_a_mask_without_the_end_of_turn_token() -> None:
    source = MASKED.replace(
        "{{ m.content }}<|im_end|>{% endgeneration %}", "{{ m.content }}{% endgeneration %}<|im_end|>"
    )
    result = assistant_mask(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["assistant_mask.end_of_turn_outside"]  # one finding for both replies
    assert (
        "leaves out the end-of-turn token '<|im_end|>': a model trained with this mask never learns to stop"
        in (result.message)
    )


def test_assistant_mask_catches_a_mask_over_the_header() -> None:
    source = MASKED.replace(
        "<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{% generation %}",
        "{% if m.role == 'assistant' %}{% generation %}<|im_start|>{{ m.role }}\n",
    ).replace("{% else %}{{ m.content }}", "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}")
    result = assistant_mask(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == ["assistant_mask.header_inside"]
    assert "before the reply (a header)" in result.message


def test_assistant_mask_catches_a_reply_left_outside_and_user_text_inside() -> None:
    outside = MASKED.replace(
        "{% if m.role == 'assistant' %}", "{% if m.role == 'assistant' and not loop.last %}"
    )
    result = assistant_mask(subject_with_template("hermes-3-tiny", outside))
    assert causes(result) == ["assistant_mask.reply_outside"]
    assert result.message.startswith("the reply '⟪4⟫second reply' is not inside any {% generation %} span")
    inside = MASKED.replace(
        "{% else %}{{ m.content }}<|im_end|>{% endif %}",
        "{% else %}{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}{% endif %}",
    )
    result = assistant_mask(subject_with_template("hermes-3-tiny", inside))
    assert causes(result) == ["assistant_mask.other_text_inside"]
    assert result.message.startswith("a {% generation %} span includes non-assistant text")
