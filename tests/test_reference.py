"""The reference check on the family fixtures and on templates of our own: correct models pass, each kind of
difference is its own cause with a readable example, and the reference follows the template's policy."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from templatecheck.causes import CAUSES
from templatecheck.checks.reference import mistral_common, reference
from templatecheck.errors import TemplatecheckError
from templatecheck.formats import Format, register, unregister
from templatecheck.formats.classify import GROUPS
from templatecheck.model import Subject, Template
from templatecheck.options import Options
from templatecheck.result import CheckResult, Outcome
from tests.conftest import FIXTURES, fixture_model, fixture_script, subject

FAMILIES = FIXTURES / "families"
FAMILY_NAMES = sorted(d.name for d in FAMILIES.iterdir() if d.name != "broken")
BUGS = sorted((f.parent.name, f.stem) for f in (FAMILIES / "broken").glob("*/*.jinja"))

#: The cause each broken variant of a family fixture has.
BUG_CAUSE = {
    "no-end-of-turn": "reference.end_of_turn",
    "system-moved": "reference.system_placement",
    "whitespace": "reference.separator",
    "assistant-role": "reference.header",
}

#: The end-of-turn token each family's reference writes and the no-end-of-turn variants drop.
END_OF_TURN = {
    "chatml": "<|im_end|>",
    "qwen2.5": "<|im_end|>",
    "llama2": "</s>",
    "llama3": "<|eot_id|>",
    "llama3.1": "<|eot_id|>",
    "gemma": "<end_of_turn>",
    "gemma3": "<end_of_turn>",
    "phi3": "<|end|>",
    "zephyr": "</s>",
}


def family_subject(family: str, bug: str | None = None, examples: int = 100, **options: Any) -> Subject:
    model = fixture_model(f"families/{family}")
    if bug is None:
        return Subject(model, model.templates["default"], Options(examples=examples, **options))
    path = FAMILIES / "broken" / family / f"{bug}.jinja"
    return Subject(model, Template(bug, path.read_text(), str(path)), Options(examples=examples, **options))


def mutated(family: str, old: str, new: str, examples: int = 10, **options: Any) -> Subject:
    """The family fixture's correct template with ``old`` (which occurs once) replaced by ``new``."""
    model = fixture_model(f"families/{family}")
    source = model.templates["default"].source
    assert source.count(old) == 1, (family, old)
    return Subject(
        model, Template("mutated", source.replace(old, new), "<test>"), Options(examples, **options)
    )


def causes(result: CheckResult, outcome: Outcome | None = None) -> list[str]:
    return [f.cause for f in result.findings if f.cause and (outcome is None or f.outcome is outcome)]


def finding(result: CheckResult, cause: str) -> str:
    return next(f.text for f in result.findings if f.cause == cause)


def test_family_fixtures_match_a_fresh_build() -> None:
    build = fixture_script("build_families")
    lines: list[str] = []
    assert build.check(FIXTURES, report=lines.append), (
        "\n".join(lines) + "\nrun: python fixtures/build_families.py"
    )
    assert len(BUGS) == 3 * len(FAMILY_NAMES) == 42


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_correct_model_of_each_family_passes(family: str) -> None:
    result = reference(family_subject(family))
    assert result.outcome is Outcome.PASSED, result.message
    assert result.layer.value == "reference"
    assert re.match(
        rf"reference {re.escape(family)} \(detected: .+\): the template matches it on \d+ renderings",
        result.message,
    )


@pytest.mark.parametrize(("family", "bug"), BUGS, ids=[f"{f}-{b}" for f, b in BUGS])
def test_each_broken_variant_fails_with_its_cause_and_a_readable_example(family: str, bug: str) -> None:
    result = reference(family_subject(family, bug, examples=10))
    assert result.outcome is Outcome.FAILED
    expected = BUG_CAUSE[bug]
    failed = causes(result, Outcome.FAILED)
    if (family, bug) == ("qwen2.5", "system-moved"):
        # Its template takes a system message that is not first for none, and writes Qwen's default too.
        assert failed == [expected, "reference.content"]
    else:
        assert failed == [expected]
    message = finding(result, expected)
    assert re.match(
        rf"the [a-z /,()-]+ differs from the {re.escape(family)} reference, in \d+ of \d+ renderings "
        rf"\(reference {re.escape(family)} \(detected\)\)\n",
        message,
    ), message
    assert "\nconversation: " in message and "\n  here: reference " in message
    assert f"    --- reference {family}\n    +++ template\n" in message
    assert re.search(rf"\n    reference {re.escape(family)}: \[\d+ .+\n    template: ", message), message
    assert "\n  fix: " in message
    if bug == "system-moved":
        assert "  system: " in message  # the conversation shown has the system message that moved
    if bug == "no-end-of-turn" and family in END_OF_TURN:
        token = END_OF_TURN[family]
        assert re.search(rf"reference {re.escape(family)}: \[\d+ '{re.escape(token)}'\]", message), message


def test_a_dropped_newline_shows_with_visible_whitespace() -> None:
    result = reference(family_subject("llama3", "whitespace", examples=5))
    message = finding(result, "reference.separator")
    assert message.startswith(
        "the whitespace between a header, the text and the next turn differs from the llama3 reference, in "
    )
    assert (
        "conversation: user only (add_generation_prompt=False):\n  user: 'What is the capital of France?'"
        in message
    )
    assert "  here: reference '␤\\n' / template '' after 'ader_id|>user<|end_header_id|>'" in message
    assert (
        "    @@ -1,3 +1,2 @@\n     <|start_header_id|>user<|end_header_id|>␤\n    -␤\n"
        "     What is the capital of France?<|eot_id|>\n"
    ) in message
    assert "  first differing token: #5\n    reference llama3: [198 'Ċ'] [54 'W']" in message


def test_a_system_prompt_in_the_first_instead_of_the_last_user_turn() -> None:
    """Mistral v3 writes the system prompt into the last user message, v1 into the first."""
    result = reference(family_subject("mistral-v3", "system-moved", examples=5))
    message = finding(result, "reference.system_placement")
    assert message.startswith(
        "the place of the system prompt differs from the mistral-v3 reference, in 2 of "
    )
    assert message.splitlines()[1] == "conversation: system + two user turns (add_generation_prompt=False):"
    assert (
        "    -[INST] What is the capital of France?[/INST] The capital of France is Paris.</s>[INST] You are"
        in message
    )
    assert "    +[INST] You are a concise assistant.␤" in message


def test_a_missing_end_of_turn_token() -> None:
    result = reference(family_subject("chatml", "no-end-of-turn", examples=5))
    message = finding(result, "reference.end_of_turn")
    assert message.startswith("the end of a turn differs from the chatml reference, in ")
    assert "  here: reference '<|im_end|>' / template '' after " in message
    assert "    -What is the capital of France?<|im_end|>␤\n    +What is the capital of France?␤" in message


# ------------------------------------------------------------------------------ one cause per kind of difference

#: A template of our own for each cause: (family fixture, text of its correct template, replacement).
CALL_LINES = (
    "{{- '<tool_call>\\n{\"name\": ' + f.name | tojson + ', \"arguments\": ' }}\n"
    "{{- f.arguments if f.arguments is string else f.arguments | tojson }}"
)
CHATML_TURN = "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
MUTATIONS: dict[str, tuple[str, str, str]] = {
    "reference.header": (
        "chatml",
        "'<|im_start|>' + message.role + '\\n' + message.content",
        "'<|im_start|>' + message.role + ':\\n' + message.content",
    ),
    "reference.separator": (
        "llama3",
        "'<|end_header_id|>\\n\\n' + message.content",
        "'<|end_header_id|>\\n' + message.content",
    ),
    "reference.end_of_turn": ("llama3", "message.content | trim + '<|eot_id|>'", "message.content | trim"),
    "reference.bos_eos": (
        "llama2",
        "{{- bos_token + '[INST] '",
        "{{- (bos_token if loop.first else '') + '[INST] '",
    ),
    "reference.system_placement": (
        "llama3.1",
        "'\\n\\n' + system + '<|eot_id|>' }}",
        "'\\n\\n<|eot_id|>' + ('<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' "
        "if system else '') }}",
    ),
    "reference.tool_definitions": (
        "qwen2.5",
        "You may call one or more functions to assist with the user query.",
        "You may call functions.",
    ),
    "reference.tool_call_encoding": ("chatml", "'<tool_call>\\n{\"name\": '", "'<tool_call>{\"name\": '"),
    "reference.tool_result_encoding": (
        "chatml",
        "'<tool_response>\\n' + message.content",
        "'<tool_response>' + message.content",
    ),
    "reference.escaping": (
        "chatml",
        CHATML_TURN,
        "{{- '<|im_start|>' + message.role + '\\n' }}{{- message.content | e }}{{- '<|im_end|>\\n' }}",
    ),
    "reference.whitespace": (
        "chatml",
        "'\\n' + message.content + '<|im_end|>\\n' }}",
        "'\\n' + message.content | trim + '<|im_end|>\\n' }}",
    ),
    "reference.trimming": (
        "llama3",
        "message.content | trim + '<|eot_id|>'",
        "message.content + '<|eot_id|>'",
    ),
    "reference.empty_message": (
        "chatml",
        CHATML_TURN,
        "{%- if message.content %}" + CHATML_TURN + "{% endif %}",
    ),
    "reference.final_turn_open": (  # Qwen1.5's first template: the final message left open
        "chatml",
        "'<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
        "'<|im_start|>' + message.role + '\\n' + message.content }}"
        "{% if not loop.last or add_generation_prompt %}{{- '<|im_end|>\\n' }}{% endif %}",
    ),
    "reference.content": (
        "chatml",
        "'\\n' + message.content + '<|im_end|>\\n' }}",
        "'\\n' + ('Reply: ' if message.role == 'assistant' else '') + message.content + '<|im_end|>\\n' }}",
    ),
}

#: The first line of each cause's finding.
FIRST_LINES = {
    "reference.header": "the turn header (or generation prompt) differs from the chatml reference, in ",
    "reference.separator": "the whitespace between a header, the text and the next turn differs from the llama3 ",
    "reference.end_of_turn": "the end of a turn differs from the llama3 reference, in ",
    "reference.bos_eos": "the BOS/EOS placement differs from the llama2 reference, in ",
    "reference.system_placement": "the place of the system prompt differs from the llama3.1 reference, in ",
    "reference.tool_definitions": "the rendering of tool definitions differs from the qwen2.5 reference, in ",
    "reference.tool_call_encoding": "the encoding of tool calls differs from the chatml reference, in ",
    "reference.tool_result_encoding": "the encoding of tool results differs from the chatml reference, in ",
    "reference.escaping": "the escaping of text differs from the chatml reference, in ",
    "reference.whitespace": "the whitespace of message text differs from the chatml reference, in ",
    "reference.trimming": "the trimming of message text differs from the llama3 reference, in ",
    "reference.empty_message": "the rendering of an empty message differs from the chatml reference, in ",
    "reference.final_turn_open": "the end of the final message (left open) differs from the chatml reference, in ",
    "reference.content": "the text differs from the chatml reference, in ",
}


@pytest.mark.parametrize("cause", sorted(MUTATIONS))
def test_each_kind_of_difference_is_its_own_cause(cause: str) -> None:
    family, old, new = MUTATIONS[cause]
    result = reference(mutated(family, old, new))
    assert causes(result) == [cause], result.message
    rule = CAUSES[cause]
    assert result.outcome is rule.severity
    message = finding(result, cause)
    assert message.startswith(FIRST_LINES[cause]), message
    assert re.search(r", in \d+ of \d+ renderings \(reference [a-z0-9.-]+ \(detected\)\)\n", message)
    assert "\n  here: reference " in message and "\n  first differing token: #" in message
    # and the family's correct template, the same change undone, has none of it
    assert not causes(reference(mutated(family, old, old)))


def test_every_reference_cause_is_triggered_by_a_test() -> None:
    ours = {key for key in CAUSES if key.startswith("reference.")}
    assert ours == {*MUTATIONS, "reference.same_tokens", "reference.source_layout"}
    assert {f"reference.{g.name}" for g in GROUPS} == set(MUTATIONS)
    assert {
        CAUSES[k].severity
        for k in ("reference.trimming", "reference.empty_message", "reference.final_turn_open")
    } == {Outcome.WARNING}


def test_a_text_difference_with_the_same_tokens_is_a_warning() -> None:
    """A SentencePiece tokenizer reads '▁' as it reads a space: the model sees no difference."""
    model = fixture_model("families/llama2")
    source = model.templates["default"].source.replace("' [/INST]' }}", "'▁[/INST]' }}")
    result = reference(Subject(model, Template("marker", source, "<test>"), Options(examples=5)))
    assert result.outcome is Outcome.WARNING, result.message
    assert causes(result) == ["reference.same_tokens"]
    assert result.message.startswith("the template's text differs from the llama2 reference in ")
    assert "but tokenizes to the same ids" in result.message


# ------------------------------------------------------------------------ root causes other checks own

OWNED_ELSEWHERE = {
    "generation_prompt.always_added": (
        "llama3",
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}",
        "the rendering without add_generation_prompt already ends with the generation prompt",
    ),
    "tools.html_escaped": (
        "chatml",
        CALL_LINES,
        "{{- '<tool_call>\\n' }}{{- '{\"name\": \"' + f.name + '\", \"arguments\": ' + f.arguments | tojson | safe }}",
        "the template HTML-escapes tool JSON (&#34; for a quote)",
    ),
    "tools.result_reencoded": (
        "chatml",
        "'<tool_response>\\n' + message.content",
        "'<tool_response>\\n' + message.content | tojson",
        "the template writes a string tool result JSON-encoded a second time",
    ),
    "content_fidelity.system_dropped": (  # left out, not placed elsewhere
        "chatml",
        "{%- for message in messages %}",
        "{%- for message in messages if message.role != 'system' %}",
        "the template leaves out the system prompt that the reference writes",
    ),
}


@pytest.mark.parametrize("cause", sorted(OWNED_ELSEWHERE))
def test_a_root_cause_another_check_owns_is_a_note_with_its_key(cause: str) -> None:
    family, old, new, words = OWNED_ELSEWHERE[cause]
    result = reference(mutated(family, old, new))
    assert result.outcome is Outcome.PASSED, result.message
    notes = [f for f in result.findings if f.cause]
    assert [f.cause for f in notes] == [cause]
    owner = cause.split(".")[0]
    assert notes[0].message.startswith(f"also observed {cause} (reported by `{owner}`): {words}")


# --------------------------------------------------------------------------- the template's own policy


def test_a_default_system_prompt_is_the_templates_policy_and_the_reference_follows_it() -> None:
    """tiny-chatml was trained with its default system prompt; its broken twin leaves it out. Both are ChatML:
    the reference check passes both, and says what it followed; the generation layer tells them apart."""
    trained = reference(subject("tiny-chatml"))
    assert trained.outcome is Outcome.PASSED, trained.message
    assert trained.message.startswith("reference chatml (detected: ")
    assert (
        "the reference follows the template's policy: default system prompt 'You are a helpful assistant.'"
        in (trained.message)
    )
    broken = reference(subject("broken/tiny-no-system-prompt"))
    assert broken.outcome is Outcome.PASSED
    assert "default system prompt" not in broken.message


def test_a_default_system_prompt_the_reference_cannot_follow_is_not_one() -> None:
    """A template that writes the default also when a system message is given has no default to align with."""
    model = fixture_model("families/chatml")
    source = "{{- '<|im_start|>system\\nAlways here.<|im_end|>\\n' }}" + model.templates["default"].source
    result = reference(Subject(model, Template("always", source, "<test>"), Options(examples=5)))
    assert "reference.content" in causes(result)
    assert "default system prompt" not in result.message
    assert "  here: reference '' / template '<|im_start|>system␤\\nAlways here.<|im_end|>␤\\n' after ''" in (
        finding(result, "reference.content")
    )


def test_a_hard_coded_date_is_the_templates_and_a_missing_date_line_is_not() -> None:
    """Llama 3.1's template hard-codes 'Today Date: 26 Jul 2024' unless date_string is passed."""
    hard = mutated("llama3.1", "strftime_now('%d %b %Y')", "'26 Jul 2024'")
    result = reference(hard)
    assert result.outcome is Outcome.PASSED, result.message
    assert "date of the system preamble '26 Jul 2024'" in result.message
    passed = reference(
        mutated(
            "llama3.1",
            "strftime_now('%d %b %Y')",
            "'26 Jul 2024'",
            template_vars={"date_string": "01 Feb 2025"},
        )
    )
    assert passed.outcome is Outcome.PASSED and "'01 Feb 2025'" in passed.message
    dropped = reference(mutated("llama3.1", "\\nToday Date: ' + date_string + '\\n\\n'", "\\n' + '\\n'"))
    assert causes(dropped) == ["reference.content"]
    assert "  here: reference 'Today Date: 15 Jan 2026␤\\n' / template ''" in finding(
        dropped, "reference.content"
    )


# -------------------------------------------------------------------------------------- family choice


def test_reference_none_skips_and_a_named_family_replaces_detection() -> None:
    off = reference(family_subject("chatml", reference="none"))
    assert off.outcome is Outcome.SKIPPED
    assert off.message == "no reference format: --tc-reference none"
    forced = reference(family_subject("chatml", examples=5, reference="llama3"))
    assert forced.outcome is Outcome.FAILED
    assert "(reference llama3 (--tc-reference))" in forced.message
    with pytest.raises(TemplatecheckError, match="--tc-reference 'llama9': no such reference format"):
        reference(family_subject("chatml", reference="llama9"))


def test_a_template_of_no_known_family_is_skipped_with_the_way_out() -> None:
    template = Template("plain", "{% for m in messages %}{{ m.content }}\n{% endfor %}", "<test>")
    # the zephyr tokenizer has no chat control tokens; the model's only template is the plain one
    model = replace(fixture_model("families/zephyr"), templates={"plain": template})
    result = reference(Subject(model, template))
    assert result.outcome is Outcome.SKIPPED
    assert result.message == (
        "no reference format: the template writes the literals of no known format; pass --tc-reference NAME"
    )


def test_the_tokenizer_does_not_override_a_template_that_shows_no_family() -> None:
    template = Template("plain", "{% for m in messages %}{{ m.content }}\n{% endfor %}", "<test>")
    model = replace(fixture_model("families/llama3.1"), templates={"plain": template})
    result = reference(Subject(model, template))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith(
        "no reference format: the template writes the literals of no known format; the tokenizer suggests "
        "llama3.1 (the tokenizer has <|start_header_id|>, <|eom_id|> and <|python_tag|> (Llama 3.1+)): "
        "--tc-reference llama3.1 compares with it"
    )


@pytest.mark.parametrize(
    ("source", "family"),
    [
        ("{{ '<｜User｜>' + messages[0].content + '<｜Assistant｜>' }}", "DeepSeek"),  # noqa: RUF001
        ("[gMASK]<sop>{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}", "GLM"),
        ("<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{ messages[0].content }}<|END_OF_TURN_TOKEN|>", "Cohere"),
        ("<|start_of_role|>user<|end_of_role|>{{ messages[0].content }}<|end_of_text|>", "IBM Granite"),
        ("<|start|>user<|message|>{{ messages[0].content }}<|end|><|start|>assistant<|channel|>", "gpt-oss"),
        ("<|turn>user\n{{ messages[0].content }}<turn|>", "Gemma 4"),
        (
            "<|im_start|>user\n{{ messages[0].content }}<|im_end|>\n<|im_start|>assistant\n<think>\n",
            "reasoning",
        ),
    ],
)
def test_a_family_without_a_reference_is_skipped_with_its_name(source: str, family: str) -> None:
    model = fixture_model("families/llama3.1")  # the tokenizer would suggest llama3.1: it must not decide
    template = Template("other", source, "<test>")
    result = reference(Subject(replace(model, templates={"other": template}), template))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith(f"no reference format: the template looks like {family}")
    assert "a family templatecheck has no reference format for; pass --tc-reference NAME" in result.message


def test_a_template_whose_conversations_the_reference_leaves_undefined_is_skipped() -> None:
    result = reference(subject("hermes-3-tiny", "tool_use"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith(
        "reference chatml (detected: the template writes <|im_start|> and <|im_end|> and Hermes' tool turns): "
        "no conversation both sides define; not compared: chatml does not fix the wording of Hermes' "
        "tool-definition system turn"
    )


def test_tool_exchanges_are_compared_where_the_template_reads_tools() -> None:
    small, tools = (reference(family_subject(f, examples=0)) for f in ("llama3", "qwen2.5"))
    counted = [int(re.search(r"matches it on (\d+) renderings", r.message).group(1)) for r in (small, tools)]  # type: ignore[union-attr]
    assert counted[1] == counted[0] + 8  # two tool exchanges, with and without tools, with and without prompt


def _boom(messages: Any, **kwargs: Any) -> str:
    """Boom. Source: none. Not defined: nothing."""
    raise ValueError("no luck")


def test_a_reference_renderer_that_crashes_is_an_error_of_the_format() -> None:
    register(Format("boom", _boom, "crashes"))
    try:
        result = reference(family_subject("chatml", reference="boom"))
    finally:
        unregister("boom")
    assert result.outcome is Outcome.ERROR
    assert (
        result.message == "the boom reference renderer raised ValueError: no luck; fix the format's renderer"
    )


def test_a_leading_bos_is_left_to_double_bos() -> None:
    model = fixture_model("families/llama3")
    source = model.templates["default"].source.replace("{{- bos_token }}", "")
    result = reference(Subject(model, Template("no-bos", source, "<test>"), Options(examples=5)))
    assert result.outcome is Outcome.PASSED, result.message


# -------------------------------------------------------------------------------------------- mistral


def test_mistral_common_applies_to_mistral_formats_only() -> None:
    result = mistral_common(family_subject("llama3"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("not a Mistral format (reference llama3 (detected: ")


def test_mistral_common_needs_the_model_vocabulary() -> None:
    pytest.importorskip("mistral_common")
    result = mistral_common(family_subject("mistral-v3"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith(
        "the model's tokenizer is not mistral-common's (mistral-common's bundled v3 tokenizer): different "
        "vocabulary (409 vs 32768 tokens)"
    )


def test_without_mistral_common_the_oracle_is_skipped_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mistral_common", None)  # import mistral_common -> ImportError
    result = mistral_common(family_subject("mistral-v3"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message == "mistral-common is not installed: pip install 'templatecheck[mistral]'"


def test_the_sample_is_the_same_in_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from templatecheck.formats.compare import cases
    from templatecheck.sample import _draw, _projected

    monkeypatch.setenv("TEMPLATECHECK_CACHE_DIR", "off")  # hypothesis draws each time
    _draw.cache_clear()
    _projected.cache_clear()
    first = cases(20, tool_calls=True)
    _draw.cache_clear()
    _projected.cache_clear()
    assert cases(20, tool_calls=True) == first
    assert len({c.name for c in first if c.name.startswith("drawn")}) == 20
    assert all(not c.add_generation_prompt for c in first if c.messages[-1]["role"] == "assistant")


def test_fixture_paths_exist() -> None:
    assert all((FAMILIES / f / "chat_template.jinja").is_file() for f in FAMILY_NAMES)
    assert Path(FAMILIES / "broken" / "gemma" / "assistant-role.jinja").is_file()


# ------------------------------------------------------------- a difference named by its root cause, once

CHATML_SPECIAL = {"bos_token": "", "eos_token": "<|im_end|>"}
LLAMA3_SPECIAL = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}


def groups_of(family: str, special: dict[str, str], messages: list[dict[str, Any]], change: Any) -> list[str]:
    """The groups of the pieces by which ``change(reference rendering)`` differs from the reference."""
    from templatecheck.formats import get
    from templatecheck.formats.classify import hunks
    from templatecheck.formats.compare import Case, Difference, Reference

    ref = Reference(get(family), special)
    case = Case("chosen", tuple(messages))
    expected = ref.render(messages, add_generation_prompt=False, tools=None)
    actual = change(expected)
    assert actual != expected
    return [h.group for h in hunks(Difference(case, expected, actual, tuple(messages)), ref)]


def without_turn_ends(token: str) -> Any:
    """A template that drops the end of every turn (and a text that ends with the token keeps its own)."""
    return lambda text: text.replace(f"{token}{token}", "\0").replace(token, "").replace("\0", token)


def test_a_dropped_end_of_turn_after_text_that_ends_with_the_token_is_the_end_of_turn() -> None:
    # The diff can read the dropped '<|im_end|>' as the text's own (the first of two): it is the turn's.
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  a\n<|im_end|>"}]
    found = groups_of("chatml", CHATML_SPECIAL, messages, without_turn_ends("<|im_end|>"))
    assert set(found) == {"end_of_turn"}, found
    # the same text, the end of turn kept: nothing differs but what the template changed
    plain = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    assert set(groups_of("chatml", CHATML_SPECIAL, plain, without_turn_ends("<|im_end|>"))) == {"end_of_turn"}


def test_a_text_that_ends_with_a_backslash_keeps_the_next_control_token_whole() -> None:
    # '\\<' is no escape: read as one, the dropped '<|eot_id|>' after 'k\\' was named a header difference.
    messages = [{"role": "user", "content": "weather"}, {"role": "assistant", "content": "k\\"}]
    found = groups_of("llama3", LLAMA3_SPECIAL, messages, lambda text: text.replace("<|eot_id|>", ""))
    assert set(found) == {"end_of_turn"}, found
    # a JSON escape stays one piece: '\\n' written as '\\t' is one changed piece of the text
    escaped = [{"role": "user", "content": 'say "\\n" now'}]
    assert groups_of("llama3", LLAMA3_SPECIAL, escaped, lambda t: t.replace("\\n", "\\t")) == ["content"]


def test_trimmed_edge_whitespace_next_to_a_separator_is_the_texts_whitespace() -> None:
    # '\n' + '\r\nQr6' trimmed reads as '\n\r' dropped (part separator, part text): it is the text's edge.
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\r\nQr6"}]
    trim = groups_of("chatml", CHATML_SPECIAL, messages, lambda t: t.replace("\n\r\nQr6", "\nQr6"))
    assert trim == ["whitespace"]
    # a format that trims (Llama 3), and a template that keeps the edge whitespace: the trimming warning
    kept = groups_of("llama3", LLAMA3_SPECIAL, messages, lambda t: t.replace("\n\nQr6", "\n\n\r\nQr6"))
    assert kept == ["trimming"]
    # a separator dropped where the text has no edge whitespace is still a separator
    dropped = groups_of("llama3", LLAMA3_SPECIAL, [messages[0]], lambda t: t.replace("\n\nhi", "\nhi"))
    assert dropped == ["separator"]


def test_a_moved_system_prompt_of_few_long_words_is_the_system_placement_alone() -> None:
    # The diff joins the two places of the moved turn into one block across a system prompt short in words.
    system = "weatheranswerPariscityyes)6eG<tool_call>g]helloyesweather"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "\nParis{#'3"}]

    def user_first(text: str) -> str:
        system_turn, user_turn = text.split("<|im_start|>user")
        return "<|im_start|>user" + user_turn + system_turn

    assert set(groups_of("chatml", CHATML_SPECIAL, messages, user_first)) == {"system_placement"}


# ------------------------------------------------------------------------- a template's source layout

LAID_OUT = (
    "{% for message in messages %}\n"
    "    {{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}\n"
    "    {{ '<|im_start|>assistant\\n' }}\n"
    "{% endif %}"
)


def chatml_with(source: str) -> Subject:
    return Subject(fixture_model("families/chatml"), Template("candidate", source, "<test>"), Options(10))


def test_a_template_whose_indentation_renders_is_one_source_layout_finding() -> None:
    result = reference(chatml_with(LAID_OUT))
    assert causes(result) == ["reference.source_layout"], result.message
    layout = next(f for f in result.findings if f.cause == "reference.source_layout")
    assert layout.outcome is Outcome.FAILED
    assert layout.message.startswith(
        "the template writes its source layout into the prompt: line breaks and indentation between its tags "
        "render as text ("
    )
    assert "reference; without that whitespace, 0 do, reported below)\nconversation: " in layout.message
    assert "+␠␠␠␠<|im_start|>user␤" in layout.message
    assert layout.fix is not None and "{%- ... -%}" in layout.fix
    # with its whitespace controlled, the same template is ChatML
    controlled = LAID_OUT.replace("{% ", "{%- ").replace("{{ ", "{{- ").replace(" }}", " -}}")
    assert not causes(reference(chatml_with(controlled)))


def test_a_laid_out_template_with_a_format_defect_too_has_both_findings() -> None:
    bug = LAID_OUT.replace("message.role + '\\n'", "message.role + ':\\n'")
    assert causes(reference(chatml_with(bug))) == ["reference.source_layout", "reference.header"]


def test_whitespace_between_tags_that_is_the_format_is_not_layout() -> None:
    # Its newlines between tags are ChatML's separators: without them it would differ more, not less.
    source = (
        "{% for m in messages %}<|im_start|>{{ m.role }}:\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert causes(reference(chatml_with(source))) == ["reference.header"]


def test_a_system_prompt_left_out_is_dropped_even_when_a_user_turn_repeats_its_text() -> None:
    messages = [{"role": "system", "content": "{% if %}"}, {"role": "user", "content": "{% if %}"}]

    def without_system(text: str) -> str:
        return text[text.index("<|im_start|>user") :]

    assert set(groups_of("chatml", CHATML_SPECIAL, messages, without_system)) == {
        "content_fidelity.system_dropped"
    }

    def user_first(text: str) -> str:
        system_turn, user_turn = text.split("<|im_start|>user")
        return "<|im_start|>user" + user_turn + system_turn

    assert set(groups_of("chatml", CHATML_SPECIAL, messages, user_first)) == {"system_placement"}
