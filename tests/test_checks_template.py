"""Template-layer checks, each proven both ways: a correct fixture passes, a broken one fails with its message."""

from __future__ import annotations

import pytest

from templatecheck.checks import REGISTRY
from templatecheck.checks.template import (
    assistant_mask,
    content_fidelity,
    generation_prompt,
    prefix_stability,
    renders,
)
from templatecheck.result import Layer, Outcome
from tests.conftest import subject, subject_with_template

CORRECT = [("hermes-3-tiny", "default"), ("hermes-3-tiny", "tool_use"), ("llama-3-tiny", "default")]
#: Checks that cannot apply to the plain fixtures, or that flag what every model has (see their own tests).
EXPECTED = {
    "assistant_mask": Outcome.SKIPPED,  # no {% generation %} blocks
    "control_token_injection": Outcome.WARNING,  # every tokenizer turns control-token text into tokens
    "mistral_common": Outcome.SKIPPED,  # not a Mistral format
}


@pytest.mark.parametrize(("model", "template"), CORRECT)
@pytest.mark.parametrize("name", [n for n, c in REGISTRY.items() if c.layer is not Layer.GENERATION])
def test_correct_fixtures_pass_every_check(model: str, template: str, name: str) -> None:
    result = REGISTRY[name](subject(model, template))
    expected = EXPECTED.get(name, Outcome.PASSED)
    if name == "tools" and template == "default":
        expected = Outcome.SKIPPED  # plain ChatML and Llama 3 templates have no tool support
    if name == "reference" and template == "tool_use":
        expected = Outcome.SKIPPED  # the Hermes tool prompt's wording is not fixed by the reference
    if name == "content_fidelity" and model == "llama-3-tiny":
        expected = Outcome.WARNING  # it trims text, as the Llama 3 format does (see the next test)
    assert result.outcome is expected, result.message


CHATML_WITH_PROMPT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}PROMPT{% endif %}"
)
INST = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' %} {{ m.content }}</s>{% endif %}{% endfor %}"
)


# ---------------------------------------------------------------------------------------------------- renders


def test_renders_catches_a_template_that_raises() -> None:
    result = renders(subject("broken/template-raises"))
    assert result.outcome is Outcome.FAILED
    assert (
        "the template does not render (user only, add_generation_prompt=False): template raised"
        in result.message
    )
    assert "strip_all" in result.message
    assert "user: 'What is the capital of France?'" in result.message


def test_renders_warns_on_a_deliberate_system_refusal() -> None:
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    result = renders(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith(
        "the template refuses a system message (system + user + assistant, add_generation_prompt=False): "
        "template refused: System role not supported"
    )


def test_renders_finds_and_shrinks_a_crash_on_generated_conversations() -> None:
    """A template that crashes only on text with a newline: hypothesis finds it, the shrinker shortens it."""
    source = (
        "{% for m in messages %}{% if '\\n' in m.content %}{{ m.content.nope() }}{% endif %}"
        "<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    result = renders(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("a valid conversation does not render: template raised UndefinedError")
    conversation = result.message.split("conversation:\n", 1)[1].splitlines()
    assert len(conversation) <= 2  # shrunk to the message with the newline (and the user turn it needs)
    assert any("\\n" in line for line in conversation)
    assert all(len(line) < 40 for line in conversation)


# ------------------------------------------------------------------------------------------ generation prompt


def test_generation_prompt_catches_an_ignored_add_generation_prompt() -> None:
    result = generation_prompt(subject("broken/ignores-add-generation-prompt"))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith(
        "add_generation_prompt=True adds no assistant header, but replies are written after "
        "'<|im_start|>assistant\\n': the model is asked to continue the user's turn"
    )
    fix = (
        'fix: end the template with {% if add_generation_prompt %}{{ "<|im_start|>assistant\\n" }}{% endif %}'
    )
    assert fix in result.message
    assert "<|im_start|>user␤\n" in result.message  # the rendering is shown with visible newlines


def test_generation_prompt_catches_a_header_that_differs_from_assistant_turns() -> None:
    result = generation_prompt(subject("broken/header-mismatch"))
    assert result.outcome is Outcome.FAILED
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
    assert (
        "add_generation_prompt=True changes the conversation instead of appending a header" in result.message
    )
    assert "first difference at character" in result.message


def test_generation_prompt_accepts_a_format_without_assistant_header() -> None:
    """Mistral and Llama 2 put the reply straight after [/INST]: an empty generation prompt is right."""
    result = generation_prompt(subject_with_template("hermes-3-tiny", INST))
    assert result.outcome is Outcome.PASSED, result.message


def test_generation_prompt_warns_on_a_forced_prefix() -> None:
    source = CHATML_WITH_PROMPT.replace("PROMPT", "<|im_start|>assistant\n<think>\n")
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith(
        "the generation prompt adds '<think>\\n' after the turn header '<|im_start|>assistant\\n', which "
        "rendered replies do not have"
    )


def test_generation_prompt_warns_when_the_model_must_write_part_of_the_header() -> None:
    source = CHATML_WITH_PROMPT.replace("PROMPT", "<|im_start|>assistant")
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith(
        "the generation prompt '<|im_start|>assistant' lacks '\\n', which precedes replies in rendered turns"
    )


def test_generation_prompt_catches_continue_final_message_that_closes_the_turn() -> None:
    """A template that lower-cases replies: the prefilled reply cannot be continued."""
    source = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | lower }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert "continue_final_message=True" in result.message


def test_generation_prompt_is_skipped_when_nothing_renders() -> None:
    result = generation_prompt(subject("broken/template-raises"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("no plain conversation renders (see `renders`)")


# ------------------------------------------------------------------------------------------- prefix stability


def test_prefix_stability_catches_eos_written_only_after_the_last_reply() -> None:
    source = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% if loop.last and m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    result = prefix_stability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert (
        "messages is not a prefix of the whole conversation's: earlier turns render differently"
        in result.message
    )
    assert "conversation:\n  user:" in result.message


def test_prefix_stability_warns_on_a_system_prompt_moved_to_the_last_user_turn() -> None:
    source = (
        "{% set ns = namespace(last=0) %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
        "{% for m in messages %}{% if m.role == 'user' %}[INST] {% if loop.index0 == ns.last and "
        "messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}{{ m.content }}[/INST]"
        "{% elif m.role == 'assistant' %} {{ m.content }}</s>{% endif %}{% endfor %}"
    )
    result = prefix_stability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith(
        "history rewrite: where the template places the system message changes"
    ), result.message


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
    assert result.message.startswith("history rewrite: the reasoning")


# ------------------------------------------------------------------------------------------- content fidelity


def test_content_fidelity_catches_a_dropped_system_message() -> None:
    result = content_fidelity(subject("broken/drops-system-message"))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("the system message 0 is silently dropped\nconversation:\n  system:")


def test_content_fidelity_catches_trimmed_content() -> None:
    result = content_fidelity(subject("broken/trims-content"))
    assert result.outcome is Outcome.FAILED
    assert "is trimmed: ' ⟪0⟫' renders as '⟪0⟫' (leading/trailing whitespace removed)" in result.message


def test_trimming_is_a_warning_when_the_reference_format_trims() -> None:
    result = content_fidelity(subject("llama-3-tiny"))
    assert result.outcome is Outcome.WARNING
    assert "renders as" in result.message
    assert "as the llama3 format does: the model never saw edge whitespace in training" in result.message


def test_content_fidelity_catches_reordered_and_repeated_turns() -> None:
    reverse = "{% for m in messages | reverse %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    result = content_fidelity(subject_with_template("hermes-3-tiny", reverse))
    assert result.outcome is Outcome.FAILED
    assert "is rendered out of order" in result.message
    twice = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ m.content }}{% endfor %}"
    result = content_fidelity(subject_with_template("hermes-3-tiny", twice))
    assert "is rendered more than once" in result.message


def test_content_fidelity_catches_list_content_printed_as_repr() -> None:
    source = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    # this template shows list content only as a repr: the capability probe does not offer list content...
    result = content_fidelity(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.PASSED, result.message
    # ...and a message given as parts to the fidelity judge is reported as a repr
    from templatecheck.checks.template import fidelity_problem, tag

    tagged = tag([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    rendered = subject_with_template("hermes-3-tiny", source).render(tagged)
    problem = fidelity_problem(rendered, tagged)
    assert problem is not None
    assert problem.finding.message == "the user message 0 content is rendered as a Python repr; use its text"


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
    assert "before the reply (a header)" in result.message
