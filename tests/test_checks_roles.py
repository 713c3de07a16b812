"""Role policy, default system prompt and clock checks, both ways, each cause with the template that triggers it."""

from __future__ import annotations

import pytest

from templatecheck.causes import CAUSES
from templatecheck.checks.roles import ROLE_MATRIX, clock, default_system_prompt, role_matrix, role_policy
from templatecheck.model import Subject
from templatecheck.options import Options
from templatecheck.result import CheckResult, Outcome
from tests.conftest import subject, subject_with_template


def causes(result: CheckResult) -> list[tuple[str, Outcome]]:
    return [(f.cause, f.outcome) for f in result.findings if f.cause]


def test_role_matrix_of_a_faithful_template() -> None:
    rows = role_matrix(subject("hermes-3-tiny"))
    assert [(name, verdict) for name, verdict, _ in rows] == [
        ("no system", "renders"),
        ("system first", "renders"),
        ("system mid-conversation", "renders"),
        ("consecutive users", "renders"),
        ("consecutive assistants", "renders"),
        ("assistant first", "renders"),
        ("empty content", "renders"),
    ]


def test_no_order_of_the_matrix_starts_with_a_tool_message() -> None:
    """A tool message only answers a tool call: an order that starts with one is not a valid conversation."""
    assert all(order.conversation[0]["role"] != "tool" for order in ROLE_MATRIX)


#: How each unusual order is recognised inside a template, to drop or crash on exactly that order.
ORDERS = {
    "system_mid": "m.role == 'system' and not loop.first",
    "consecutive_users": "loop.previtem is defined and loop.previtem.role == 'user' and m.role == 'user'",
    "consecutive_assistants": (
        "loop.previtem is defined and loop.previtem.role == 'assistant' and m.role == 'assistant'"
    ),
    "assistant_first": "loop.first and m.role == 'assistant'",
    "empty_content": "m.content == ''",
}
NAMES = {
    order.dropped.key.split(".")[1][: -len("_dropped")]: order.name for order in ROLE_MATRIX if order.dropped
}


def _on(condition: str, action: str) -> str:
    return (
        f"{{% for m in messages %}}{{% if {condition} %}}{action}{{% else %}}<|im_start|>{{{{ m.role }}}}\n"
        "{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def test_every_unusual_order_has_its_causes() -> None:
    assert set(NAMES) == set(ORDERS)
    for key in ORDERS:
        assert CAUSES[f"role_policy.{key}_dropped"].severity is Outcome.FAILED
        assert CAUSES[f"role_policy.{key}_crash"].severity is Outcome.WARNING


@pytest.mark.parametrize("key", sorted(ORDERS))
def test_a_silently_dropped_order_is_its_own_defect(key: str) -> None:
    result = role_policy(subject_with_template("hermes-3-tiny", _on(ORDERS[key], "")))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == [(f"role_policy.{key}_dropped", Outcome.FAILED)]
    assert result.message.startswith(f"the template silently drops or alters messages ({NAMES[key]}): the ")
    assert "\nrole policy:\n  no system " in result.message


@pytest.mark.parametrize("key", sorted(ORDERS))
def test_a_crash_on_an_order_is_its_own_warning(key: str) -> None:
    result = role_policy(
        subject_with_template("hermes-3-tiny", _on(ORDERS[key], "{{ m.content.missing() }}"))
    )
    assert result.outcome is Outcome.WARNING
    assert causes(result) == [(f"role_policy.{key}_crash", Outcome.WARNING)]
    assert result.message.startswith(
        f"the template crashes instead of refusing clearly with raise_exception ({NAMES[key]}): template raised"
    )


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


def test_a_dropped_system_message_is_one_root_cause_owned_by_content_fidelity() -> None:
    """A template that never shows a system message drops it first and mid-conversation: one cause, noted."""
    result = role_policy(subject("broken/drops-system-message"))
    assert result.outcome is Outcome.PASSED, result.message
    assert causes(result) == [
        ("content_fidelity.system_dropped", Outcome.PASSED),
        ("content_fidelity.system_dropped", Outcome.PASSED),
    ]
    assert result.findings[0].message.startswith(
        "also observed content_fidelity.system_dropped (reported by `content_fidelity`): the system message 0 is "
        "silently dropped"
    )


def test_a_crash_on_a_plain_order_is_the_renders_cause() -> None:
    result = role_policy(
        subject_with_template("hermes-3-tiny", _on("m.role == 'system'", "{{ m.content.x() }}"))
    )
    assert ("renders.crash", Outcome.PASSED) in causes(result)


# ---------------------------------------------------------------------------------------- default system prompt

DEFAULT_PROMPT = (
    "{% if messages[0].role != 'system' %}<|im_start|>system\nYou are Tiny, a helpful assistant made by the "
    "fixture team.<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_default_system_prompt_is_reported() -> None:
    result = default_system_prompt(subject_with_template("hermes-3-tiny", DEFAULT_PROMPT))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == [("default_system_prompt.injected", Outcome.WARNING)]
    assert result.findings[0].message == (
        "without a system message the template injects a default system prompt: "
        "'You are Tiny, a helpful assistant made by the fixture team.'"
    )


def test_no_default_system_prompt_passes() -> None:
    assert default_system_prompt(subject("hermes-3-tiny")).outcome is Outcome.PASSED


# ------------------------------------------------------------------------------------------------------ clock

CLOCK_DATE = (
    "{% if date_string is not defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
    "Today Date: {{ date_string }}\n" + DEFAULT_PROMPT
)
FIXED_DATE = (
    '{% if not date_string is defined %}{% set date_string = "26 Jul 2024" %}{% endif %}'
    "Today Date: {{ date_string }}\n" + DEFAULT_PROMPT
)


def test_clock_reports_date_injection_and_the_variable_that_pins_it() -> None:
    result = clock(subject_with_template("hermes-3-tiny", CLOCK_DATE))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == [("clock.date_injected", Outcome.WARNING)]
    assert result.message.startswith("the template writes the current date from strftime_now ('15 Jan 2026'")
    assert "pin it with --tc-template-var date_string=... (apply_chat_template(..., date_string=...))" in (
        result.message
    )


def test_clock_reports_a_fixed_date_from_a_variable_default() -> None:
    """Llama 3.1: "Today Date: 26 Jul 2024" unless the harness passes date_string."""
    result = clock(subject_with_template("hermes-3-tiny", FIXED_DATE))
    assert result.outcome is Outcome.WARNING
    assert causes(result) == [("clock.date_fixed", Outcome.WARNING)]
    assert result.message.startswith(
        "the template writes a fixed date, '26 Jul 2024', from the default of the variable date_string"
    )
    assert "pin it with --tc-template-var date_string=..." in result.message


@pytest.mark.parametrize("source", [CLOCK_DATE, FIXED_DATE])
def test_a_date_pinned_with_template_var_passes(source: str) -> None:
    base = subject_with_template("hermes-3-tiny", source)
    pinned = Subject(base.model, base.template, Options(template_vars={"date_string": "1 Mar 2025"}))
    assert clock(pinned).outcome is Outcome.PASSED, clock(pinned).message


def test_clock_catches_a_random_rendering() -> None:
    source = "{{ ['Hi.', 'Hello.', 'Hey.', 'Yo.', 'Greetings.'] | random }}" + DEFAULT_PROMPT
    result = clock(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert causes(result) == [("clock.nondeterministic", Outcome.FAILED)]
    assert (
        result.message
        == "the rendering differs between identical renders (e.g. the random filter): not reproducible"
    )


def test_clock_passes_a_clock_free_template() -> None:
    assert clock(subject("llama-3-tiny")).outcome is Outcome.PASSED
