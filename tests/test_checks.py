"""Every check passes a correct fixture and catches the broken fixture named after its bug."""

from __future__ import annotations

import pytest

from templatecheck.checks.template import generation_prompt, renders
from templatecheck.checks.tokenizer import double_bos
from templatecheck.result import Outcome
from tests.conftest import subject, subject_with_template

CORRECT = [("hermes-3-tiny", "default"), ("hermes-3-tiny", "tool_use"), ("llama-3-tiny", "default")]


@pytest.mark.parametrize(("model", "template"), CORRECT)
@pytest.mark.parametrize("check", [renders, generation_prompt, double_bos], ids=lambda c: c.name)
def test_correct_fixtures_pass_every_check(model: str, template: str, check: object) -> None:
    result = check(subject(model, template))  # type: ignore[operator]
    assert result.outcome is Outcome.PASSED, result.message
    assert result.layer.value in ("template", "tokenizer")


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
        "a rendered assistant turn does not start with the generation-prompt header '<|im_start|>assistant '"
        in result.message
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


INST = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' %} {{ m.content }}</s>{% endif %}{% endfor %}"
)


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


def test_generation_prompt_warns_on_missing_trailing_whitespace() -> None:
    source = CHATML_WITH_PROMPT.replace("PROMPT", "<|im_start|>assistant")
    result = generation_prompt(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith(
        "the generation prompt '<|im_start|>assistant' lacks the whitespace '\\n' that precedes replies"
    )


CHATML_WITH_PROMPT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}PROMPT{% endif %}"
)


def test_generation_prompt_is_skipped_when_nothing_renders() -> None:
    result = generation_prompt(subject("broken/template-raises"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message == "no plain conversation renders (see `renders`)"


def test_double_bos_catches_template_bos_plus_tokenizer_bos() -> None:
    result = double_bos(subject("broken/double-bos"))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith(
        "tokenizer(prompt), the default harnesses use on a rendered prompt gives 2 BOS tokens: "
        "the template writes bos_token and the tokenizer adds another"
    )
    assert "[1024 '<|begin_of_text|>'] [1024 '<|begin_of_text|>']" in result.message
    assert "fix: drop {{ bos_token }} from the template" in result.message
    # apply_chat_template(tokenize=True) encodes without special tokens: one BOS, so only one finding.
    assert len(result.findings) == 1


def test_double_bos_catches_a_missing_bos() -> None:
    result = double_bos(subject("broken/no-bos"))
    assert result.outcome is Outcome.FAILED
    assert len(result.findings) == 2
    assert "gives 0 BOS tokens: the template does not write BOS and this path adds none" in result.message
    assert "fix: write {{ bos_token }} at the start of the template ('<|begin_of_text|>')" in result.message


def test_double_bos_catches_bos_written_per_turn() -> None:
    source = "{% for m in messages %}{{ bos_token }}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    result = double_bos(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert "gives 2 BOS tokens: BOS '<|begin_of_text|>' appears 2 times" in result.message
