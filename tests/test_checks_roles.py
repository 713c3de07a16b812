"""Role policy, default system prompt and clock checks, both ways."""

from __future__ import annotations

from templatecheck.checks.roles import clock, default_system_prompt, role_matrix, role_policy
from templatecheck.result import Outcome
from tests.conftest import subject, subject_with_template


def test_role_matrix_of_a_faithful_template() -> None:
    rows = role_matrix(subject("hermes-3-tiny"))
    assert [(name, verdict) for name, verdict, _ in rows] == [
        ("no system", "renders"),
        ("system first", "renders"),
        ("system mid-conversation", "renders"),
        ("consecutive users", "renders"),
        ("consecutive assistants", "renders"),
        ("assistant first", "renders"),
        ("tool first", "renders"),
        ("empty content", "renders"),
    ]


def test_role_policy_catches_a_dropped_system_message_and_prints_the_matrix() -> None:
    result = role_policy(subject("broken/drops-system-message"))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith(
        "the template silently drops or alters messages (system first, system mid-conversation)\nrole policy:\n"
    )
    assert "  system first             drops    the system message 0 is silently dropped" in result.message
    assert "  no system                renders" in result.message


def test_role_policy_accepts_clear_refusals() -> None:
    source = (
        "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
        "<{{ m.role }}>{{ m.content }}{% endfor %}"
    )
    result = role_policy(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.PASSED, result.message
    verdicts = dict(
        (name, verdict) for name, verdict, _ in role_matrix(subject_with_template("hermes-3-tiny", source))
    )
    assert verdicts["consecutive users"] == "refuses"
    assert verdicts["no system"] == "renders"


def test_role_policy_warns_on_unclear_crashes() -> None:
    source = "{% for m in messages %}{% if m.role == 'tool' %}{{ m.content.missing() }}{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    result = role_policy(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith(
        "the template crashes instead of refusing clearly with raise_exception (tool first)"
    )


def test_role_policy_catches_a_silently_skipped_role() -> None:
    source = "{% for m in messages %}{% if m.role in ['user', 'assistant', 'system'] %}<{{ m.role }}>{{ m.content }}{% endif %}{% endfor %}"
    result = role_policy(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("the template silently drops or alters messages (tool first)")


DEFAULT_PROMPT = (
    "{% if messages[0].role != 'system' %}<|im_start|>system\nYou are Tiny, a helpful assistant made by the "
    "fixture team.<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_default_system_prompt_is_reported() -> None:
    result = default_system_prompt(subject_with_template("hermes-3-tiny", DEFAULT_PROMPT))
    assert result.outcome is Outcome.WARNING
    assert result.message == (
        "without a system message the template injects a default system prompt: "
        "'You are Tiny, a helpful assistant made by the fixture team.'"
    )


def test_no_default_system_prompt_passes() -> None:
    assert default_system_prompt(subject("hermes-3-tiny")).outcome is Outcome.PASSED


def test_clock_reports_date_injection_and_the_documented_variable() -> None:
    source = (
        "{% if date_string is not defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
        "Today Date: {{ date_string }}\n" + DEFAULT_PROMPT
    )
    result = clock(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith("the template writes the current date from strftime_now ('15 Jan 2026'")
    assert "the harness can pin it through the variable date_string" in result.message


def test_clock_catches_a_random_rendering() -> None:
    source = "{{ ['Hi.', 'Hello.', 'Hey.', 'Yo.', 'Greetings.'] | random }}" + DEFAULT_PROMPT
    result = clock(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert (
        result.message
        == "the rendering differs between identical renders (e.g. the random filter): not reproducible"
    )


def test_clock_passes_a_clock_free_template() -> None:
    assert clock(subject("llama-3-tiny")).outcome is Outcome.PASSED
