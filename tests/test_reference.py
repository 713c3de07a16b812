"""The reference check on the family fixtures: correct models pass, each broken variant fails readably."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from templatecheck.checks.reference import mistral_common, reference
from templatecheck.errors import TemplatecheckError
from templatecheck.formats import Format, register, unregister
from templatecheck.model import Subject, Template
from templatecheck.options import Options
from templatecheck.result import Outcome
from tests.conftest import FIXTURES, fixture_model, fixture_script, subject

FAMILIES = FIXTURES / "families"
FAMILY_NAMES = sorted(d.name for d in FAMILIES.iterdir() if d.name != "broken")
BUGS = sorted((f.parent.name, f.stem) for f in (FAMILIES / "broken").glob("*/*.jinja"))

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
def test_each_broken_variant_fails_with_a_readable_diff(family: str, bug: str) -> None:
    result = reference(family_subject(family, bug, examples=10))
    assert result.outcome is Outcome.FAILED
    message = result.message
    assert message.startswith(f"the template differs from the {family} reference in ")
    assert f"(reference {family} (detected: " in message
    assert "\nconversation: " in message and "first difference at character " in message
    assert f"    --- reference {family}\n    +++ template\n" in message
    assert re.search(rf"\n    reference {re.escape(family)}: \[\d+ .+\n    template: ", message), message
    if bug == "system-moved":
        assert "  system: " in message  # the conversation shown has the system message that moved
    if bug == "no-end-of-turn" and family in END_OF_TURN:
        token = END_OF_TURN[family]
        assert re.search(rf"reference {re.escape(family)}: \[\d+ '{re.escape(token)}'\]", message), message


def test_a_dropped_newline_shows_with_visible_whitespace() -> None:
    result = reference(family_subject("llama3", "whitespace", examples=5))
    assert (
        "conversation: user only (add_generation_prompt=False):\n  user: 'What is the capital of France?'"
        in (result.message)
    )
    assert (
        "    @@ -1,3 +1,2 @@\n     <|start_header_id|>user<|end_header_id|>␤\n    -␤\n"
        "     What is the capital of France?<|eot_id|>\n"
    ) in result.message
    assert "  first differing token: #5\n    reference llama3: [198 'Ċ'] [54 'W']" in result.message


def test_a_system_prompt_in_the_first_instead_of_the_last_user_turn() -> None:
    """Mistral v3 writes the system prompt into the last user message, v1 into the first."""
    result = reference(family_subject("mistral-v3", "system-moved", examples=5))
    assert result.message.splitlines()[1] == (
        "conversation: system + two user turns (add_generation_prompt=False):"
    )
    assert (
        "    -[INST] What is the capital of France?[/INST] The capital of France is Paris.</s>[INST] You are"
        in (result.message)
    )
    assert "    +[INST] You are a concise assistant.␤" in result.message


def test_a_missing_end_of_turn_token() -> None:
    result = reference(family_subject("chatml", "no-end-of-turn", examples=5))
    assert (
        "    -What is the capital of France?<|im_end|>␤\n    +What is the capital of France?␤"
        in result.message
    )
    assert "first differing token: #" in result.message


def test_a_text_difference_with_the_same_tokens_is_a_warning() -> None:
    """A SentencePiece tokenizer reads '▁' as it reads a space: the model sees no difference."""
    model = fixture_model("families/llama2")
    source = model.templates["default"].source.replace("' [/INST]' }}", "'▁[/INST]' }}")
    result = reference(Subject(model, Template("marker", source, "<test>"), Options(examples=5)))
    assert result.outcome is Outcome.WARNING, result.message
    assert result.message.startswith("the template's text differs from the llama2 reference in ")
    assert "but tokenizes to the same ids" in result.message


def test_a_leading_bos_is_left_to_double_bos() -> None:
    model = fixture_model("families/llama3")
    source = model.templates["default"].source.replace("{{- bos_token }}", "")
    result = reference(Subject(model, Template("no-bos", source, "<test>"), Options(examples=5)))
    assert result.outcome is Outcome.PASSED, result.message


def test_reference_none_skips_and_a_named_family_replaces_detection() -> None:
    off = reference(family_subject("chatml", reference="none"))
    assert off.outcome is Outcome.SKIPPED
    assert off.message == "no reference format: --reference none"
    forced = reference(family_subject("chatml", examples=5, reference="llama3"))
    assert forced.outcome is Outcome.FAILED
    assert "(reference llama3 (--reference))" in forced.message
    with pytest.raises(TemplatecheckError, match="--reference 'llama9': no such reference format"):
        reference(family_subject("chatml", reference="llama9"))


def test_a_model_of_no_known_family_is_skipped_with_the_way_out() -> None:
    template = Template("plain", "{% for m in messages %}{{ m.content }}\n{% endfor %}", "<test>")
    # the zephyr tokenizer has no chat control tokens; the model's only template is the plain one
    model = replace(fixture_model("families/zephyr"), templates={"plain": template})
    result = reference(Subject(model, template))
    assert result.outcome is Outcome.SKIPPED
    assert result.message == (
        "no reference format: no known format detected from the template, tokenizer or config.json; "
        "pass --reference"
    )


def test_a_template_whose_conversations_the_reference_leaves_undefined_is_skipped() -> None:
    result = reference(subject("hermes-3-tiny", "tool_use"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith(
        "reference chatml (detected: the template writes <|im_start|> and <|im_end|>): no conversation both "
        "sides define; not compared: chatml does not fix the wording of Hermes' tool-definition system turn"
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


def test_mistral_common_applies_to_mistral_formats_only() -> None:
    result = mistral_common(family_subject("llama3"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("not a Mistral format (reference llama3 (detected: ")


def test_mistral_common_needs_the_model_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_the_sample_is_the_same_in_every_call() -> None:
    from templatecheck.formats.compare import cases
    from templatecheck.sample import _draw

    _draw.cache_clear()
    first = cases(20, tool_calls=True)
    _draw.cache_clear()
    assert cases(20, tool_calls=True) == first
    assert len({c.name for c in first if c.name.startswith("drawn")}) == 20
    assert all(not c.add_generation_prompt for c in first if c.messages[-1]["role"] == "assistant")


def test_fixture_paths_exist() -> None:
    assert all((FAMILIES / f / "chat_template.jinja").is_file() for f in FAMILY_NAMES)
    assert Path(FAMILIES / "broken" / "gemma" / "assistant-role.jinja").is_file()
