"""The reference renderers on hand-written examples of each published format, the registry, and detection."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from difflib import SequenceMatcher
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from templatecheck.errors import TemplatecheckError
from templatecheck.formats import (
    BUILTIN,
    Evidence,
    Format,
    Unsupported,
    formats,
    get,
    names,
    register,
    unregister,
)
from templatecheck.formats.compare import Case, Comparison, Policy, Reference, cases, comparable, compare
from templatecheck.formats.detect import Choice, detect, evidence_of
from templatecheck.formats.diffing import atoms, edits, opcodes
from templatecheck.model import Template, load_model
from templatecheck.render import RenderError
from tests.conftest import FIXTURES, SHARED, fixture_model, needs_shared

SYS, HI, YO, Q = (
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Yo"},
    {"role": "user", "content": "Q?"},
)
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"id": "abcdefghi", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
}
RESULT = {"role": "tool", "tool_call_id": "abcdefghi", "content": '{"y": 2}'}
TOOL = {"type": "function", "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}}}


def render(family: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return get(family).render(messages, **kwargs)


# ----------------------------------------------------------------------------------------------- ChatML


def test_chatml_turns_and_generation_prompt() -> None:
    assert render("chatml", [SYS, HI], add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_hermes_tool_call_and_responses() -> None:
    text = render("chatml", [HI, CALL, RESULT, {**RESULT, "content": "z"}])
    assert text.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call><|im_end|>\n'
        '<|im_start|>tool\n<tool_response>\n{"y": 2}\n</tool_response>\n<tool_response>\nz\n</tool_response>\n'
        "<|im_end|>\n"
    )


def test_chatml_leaves_the_wording_of_tool_definitions_undefined() -> None:
    with pytest.raises(Unsupported, match="does not fix the wording of Hermes' tool-definition system turn"):
        render("chatml", [HI], tools=[TOOL])


def test_chatml_eos_after_replies_is_the_templates() -> None:
    replies = render("chatml", [HI, YO, Q], eos_after_reply="</s>")
    assert replies == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n</s>"
        "<|im_start|>user\nQ?<|im_end|>\n"
    )
    assert render("chatml", [HI, YO], eos_at_end="</s>").endswith("Yo<|im_end|>\n</s>")
    assert render("chatml", [HI, YO], eos_at_end="</s>", add_generation_prompt=True).endswith(
        "Yo<|im_end|>\n<|im_start|>assistant\n"
    )


def test_plain_chatml_defines_no_tool_turns() -> None:
    assert render("chatml-plain", [SYS, HI]) == render("chatml", [SYS, HI])
    with pytest.raises(Unsupported, match="chatml-plain defines no tool calls or tool results"):
        render("chatml-plain", [HI, CALL])


def test_qwen25_default_system_prompt_gives_way_to_the_templates() -> None:
    assert render("qwen2.5", [HI], default_system_prompt="") == "<|im_start|>user\nHi<|im_end|>\n"
    assert render("qwen2.5", [HI], default_system_prompt="Think.").startswith(
        "<|im_start|>system\nThink.<|im_end|>\n"
    )


def test_qwen25_default_system_prompt_tools_and_responses_in_a_user_turn() -> None:
    assert render("qwen2.5", [HI]) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
    )
    text = render("qwen2.5", [SYS, HI, CALL, RESULT], tools=[TOOL], add_generation_prompt=True)
    assert text.startswith(
        "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
        "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}}}\n'
        "</tools>\n\n"
    )
    assert text.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"y": 2}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    )


# ------------------------------------------------------------------------------------------------ Llama


def test_llama2_system_block_bos_eos_per_exchange_and_stripping() -> None:
    text = render(
        "llama2", [SYS, {"role": "user", "content": " Hi "}, YO, Q], bos_token="<s>", eos_token="</s>"
    )
    # Meta strips the whole first user text, system block included: the user's own leading space stays.
    assert text == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Yo </s><s>[INST] Q? [/INST]"


def test_llama2_defines_only_alternating_turns() -> None:
    with pytest.raises(Unsupported, match="alternating"):
        render("llama2", [HI, Q])
    with pytest.raises(Unsupported, match="after an optional system prompt"):
        render("llama2", [HI, YO, SYS])


def test_llama3_headers_strip_and_generation_prompt() -> None:
    text = render("llama3", [SYS, {"role": "user", "content": "  Hi\n"}], bos_token="<|begin_of_text|>")
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    )
    assert render("llama3", [HI], add_generation_prompt=True).endswith(
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    with pytest.raises(Unsupported, match="llama3 defines no tool definitions"):
        render("llama3", [HI], tools=[TOOL])


def test_llama31_preamble_dates_from_the_clock_or_date_string() -> None:
    text = render("llama3.1", [HI], now=datetime(2026, 3, 4))
    assert text == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 04 Mar 2026\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    )
    assert "Today Date: 26 Jul 2024\n" in render("llama3.1", [HI], date_string="26 Jul 2024")


def test_llama31_json_tools_in_the_first_user_message_and_ipython_results() -> None:
    text = render("llama3.1", [SYS, HI, CALL, RESULT], tools=[TOOL])
    assert "Environment: ipython\nCutting Knowledge Date: December 2023\n" in text
    assert (
        "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions" in text
    )
    assert '"name": "f",\n        "description": "F."' in text  # indented JSON, four spaces
    assert text.endswith(
        '}\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{"name": "f", "parameters": {"x": 1}}'
        '<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n{"y": 2}<|eot_id|>'
    )


def test_llama31_leaves_builtin_tools_and_parallel_calls_undefined() -> None:
    with pytest.raises(Unsupported, match="built-in tools"):
        render("llama3.1", [HI], builtin_tools=["brave_search"])
    two = {**CALL, "tool_calls": CALL["tool_calls"] * 2}
    with pytest.raises(Unsupported, match="one call per assistant turn"):
        render("llama3.1", [HI, two])


# ---------------------------------------------------------------------------------------------- Mistral

MISTRAL = {"bos_token": "<s>", "eos_token": "</s>"}


def test_mistral_v1_inst_as_text_and_system_in_the_first_user_message() -> None:
    text = render("mistral-v1", [SYS, HI, YO, Q], **MISTRAL)
    assert text == "<s> [INST] Be brief.\n\nHi [/INST] Yo</s> [INST] Q? [/INST]"
    # SentencePiece's spaces before [INST] and a reply are the template's to write (mistral_common checks ids)
    spaces = {"inst_space": "", "turn_space": "", "answer_space": ""}
    assert (
        render("mistral-v1", [HI, YO, Q], **MISTRAL, **spaces)
        == "<s>[INST] Hi [/INST]Yo</s>[INST] Q? [/INST]"
    )


def test_mistral_v3_system_in_the_last_user_message_spm_and_tekken() -> None:
    assert render("mistral-v3", [SYS, HI, YO, Q], **MISTRAL) == (
        "<s>[INST] Hi[/INST] Yo</s>[INST] Be brief.\n\nQ?[/INST]"
    )
    assert render("mistral-v3-tekken", [SYS, HI, YO, Q], **MISTRAL) == (
        "<s>[INST]Hi[/INST]Yo</s>[INST]Be brief.\n\nQ?[/INST]"
    )


def test_mistral_v3_empty_text_has_no_space_and_replies_lose_trailing_spaces() -> None:
    assert render("mistral-v3", [{"role": "user", "content": ""}], **MISTRAL) == "<s>[INST][/INST]"
    assert render("mistral-v3", [HI, {"role": "assistant", "content": "Yo  "}], **MISTRAL).endswith(" Yo</s>")


def test_mistral_v3_tools() -> None:
    text = render("mistral-v3", [HI, CALL, RESULT], tools=[TOOL], **MISTRAL)
    assert text == (
        '<s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "f", "description": "F.", "parameters": '
        '{"type": "object"}}}][/AVAILABLE_TOOLS][INST] Hi[/INST][TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}, '
        '"id": "abcdefghi"}]</s>[TOOL_RESULTS] {"content": {"y": 2}, "call_id": "abcdefghi"}[/TOOL_RESULTS]'
    )


def test_mistral_v7_system_prompt_in_place_and_tool_content() -> None:
    assert (
        render("mistral-v7", [SYS, HI], **MISTRAL)
        == "<s>[SYSTEM_PROMPT] Be brief.[/SYSTEM_PROMPT][INST] Hi[/INST]"
    )
    assert render("mistral-v7-tekken", [HI, CALL, RESULT], **MISTRAL).endswith(
        '[TOOL_RESULTS]abcdefghi[TOOL_CONTENT]{"y": 2}[/TOOL_RESULTS]'
    )


@pytest.mark.parametrize("family", ["mistral-v1", "mistral-v3", "mistral-v7"])
def test_mistral_leaves_what_mistral_common_rejects_undefined(family: str) -> None:
    with pytest.raises(Unsupported, match="rejects an empty assistant message"):
        render(family, [HI, {"role": "assistant", "content": ""}, Q], **MISTRAL)
    with pytest.raises(Unsupported, match="no system message after an assistant message"):
        render(family, [HI, YO, SYS, Q], **MISTRAL)


def test_mistral_merges_consecutive_user_messages_as_mistral_common_does() -> None:
    assert render("mistral-v3", [HI, Q], **MISTRAL) == "<s>[INST] Hi\n\nQ?[/INST]"


# ------------------------------------------------------------------------------------ Gemma, Phi, Zephyr


def test_gemma_model_role_trim_and_no_system() -> None:
    text = render(
        "gemma", [{"role": "user", "content": " Hi "}, YO], bos_token="<bos>", add_generation_prompt=True
    )
    assert text == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(Unsupported, match="no place for a 'system' message"):
        render("gemma", [SYS, HI])


def test_gemma3_puts_system_text_at_the_start_of_the_first_user_turn() -> None:
    assert render("gemma3", [SYS, HI, YO, Q]) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n"
        "<start_of_turn>user\nQ?<end_of_turn>\n"
    )


def test_phi3_and_zephyr_turns() -> None:
    assert render("phi3", [SYS, HI], add_generation_prompt=True) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    )
    assert render("phi3", [HI], eos_at_end="<|endoftext|>") == "<|user|>\nHi<|end|>\n<|endoftext|>"
    assert render("zephyr", [SYS, HI], eos_token="</s>", add_generation_prompt=True) == (
        "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
    )
    with pytest.raises(Unsupported, match="none was given"):
        render("zephyr", [HI])


@pytest.mark.parametrize("fmt", BUILTIN, ids=lambda f: f.name)
def test_every_renderer_names_its_source_and_rejects_content_parts(fmt: Format) -> None:
    assert "Source" in fmt.source and "Not defined" in fmt.source
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    with pytest.raises(Unsupported, match="text content only"):
        fmt.render(parts, bos_token="<s>", eos_token="</s>")


# --------------------------------------------------------------------------------------------- registry


def _acme(messages: Any, *, add_generation_prompt: bool = False, **kwargs: Any) -> str:
    """Acme chat. Source: the Acme model card. Not defined: nothing."""
    return "".join(f"<|acme:{m['role']}|>{m['content']}" for m in messages)


def test_a_registered_format_is_found_by_name_and_detected_first() -> None:
    acme = Format(
        "acme", _acme, "Acme chat", detect=lambda e: "acme markers" if e.writes("<|acme:") else None
    )
    register(acme)
    try:
        assert get("acme") is acme and "acme" in names() and formats()[0] is acme
        choice = detect(Evidence(templates=("{{ '<|acme:' }}<|im_start|><|im_end|>",)))
        assert (choice.name, choice.how) == ("acme", "detected: acme markers")
        with pytest.raises(TemplatecheckError, match=r"'acme' is already registered .* pass replace=True"):
            register(Format("acme", _acme, "again"))
    finally:
        unregister("acme")
    assert "acme" not in names()


def test_replace_shadows_a_builtin_format() -> None:
    mine = register(Format("gemma", _acme, "my gemma"), replace=True)
    try:
        assert get("gemma") is mine and sum(1 for f in formats() if f.name == "gemma") == 1
        with pytest.raises(TemplatecheckError):  # the replaced format's aliases go with it
            get("gemma2")
    finally:
        unregister("gemma")
    assert get("gemma").summary.startswith("Gemma / Gemma 2")


def test_an_unknown_name_lists_the_known_families() -> None:
    with pytest.raises(TemplatecheckError) as info:
        get("llama4")
    message = str(info.value)
    assert message.startswith(
        "--tc-reference 'llama4': no such reference format; known: chatml, chatml-plain, "
    )
    assert "(or 'none' to skip the comparison)" in message
    with pytest.raises(TemplatecheckError, match="reserved"):
        register(Format("none", _acme, "nothing"))


def test_aliases_name_the_same_format() -> None:
    assert get("llama3.2") is get("llama3.3") is get("llama3.1")
    assert get("hermes") is get("chatml")


# -------------------------------------------------------------------------------------------- detection


SPM = "sentencepiece"


@pytest.mark.parametrize(
    ("evidence", "family"),
    [
        (Evidence(templates=("<|im_start|>{{ m }}<|im_end|>",)), "chatml"),
        (
            Evidence(templates=("<|im_start|>{{ m }}<|im_end|><tool_call><tool_response><|im_start|>tool",)),
            "chatml",
        ),
        (
            Evidence(templates=("<|im_start|><|im_end|>{% for t in tools %}<function={{ t }}>{% endfor %}",)),
            "chatml-plain",
        ),
        (
            Evidence(
                templates=("<|im_start|><|im_end|><tool_call><tool_response>{{ tools }}<|im_start|>user",)
            ),
            "qwen2.5",
        ),
        (Evidence(templates=("<|im_start|><|im_end|><think>",)), None),
        (
            Evidence(
                templates=(
                    "<|im_start|>You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                )
            ),
            "qwen2.5",
        ),
        (Evidence(templates=("<|start_header_id|><|eot_id|>",)), "llama3"),
        (Evidence(tokens=frozenset({"<|eot_id|>"}), templates=("<|start_header_id|>",)), "llama3"),
        (Evidence(templates=("<|start_header_id|>",)), None),
        (Evidence(templates=("<|start_header_id|>Cutting Knowledge Date",)), "llama3.1"),
        (Evidence(templates=("[INST] <<SYS>>",)), "llama2"),
        (Evidence(templates=("[INST][/INST]",), tokenizer_kind=SPM), "mistral-v1"),
        (
            Evidence(tokens=frozenset({"[INST]"}), templates=("[INST][/INST]",), tokenizer_kind=SPM),
            "mistral-v3",
        ),
        (
            Evidence(tokens=frozenset({"[INST]"}), templates=("[INST][/INST]",), tokenizer_kind="bytelevel"),
            "mistral-v3-tekken",
        ),
        (
            Evidence(
                tokens=frozenset({"[INST]", "[SYSTEM_PROMPT]"}),
                templates=("[INST][/INST]",),
                tokenizer_kind="tekken",
            ),
            "mistral-v7-tekken",
        ),
        # a tokenizer that is not Mistral's: the template's tool tokens and spacing tell the version and kind
        (
            Evidence(templates=("'[INST] ' [/INST] call_id [TOOL_CALLS]",), tokenizer_kind="bytelevel"),
            "mistral-v3",
        ),
        (
            Evidence(templates=("'[INST]' [/INST] call_id [TOOL_CALLS]",), tokenizer_kind="bytelevel"),
            "mistral-v3-tekken",
        ),
        (Evidence(templates=("[INST] [/INST][SYSTEM_PROMPT] ",), tokenizer_kind="bytelevel"), "mistral-v7"),
        (Evidence(templates=("[INST][/INST][TOOL_RESULTS]",), tokenizer_kind=SPM), None),  # v2: no call ids
        (Evidence(tokens=frozenset({"[INST]"}), templates=("[INST][/INST][ARGS]",)), None),
        (Evidence(templates=("<start_of_turn><end_of_turn>",), config={"model_type": "gemma2"}), "gemma"),
        (
            Evidence(templates=("<start_of_turn><end_of_turn>",), config={"model_type": "gemma3_text"}),
            "gemma3",
        ),
        (Evidence(templates=("<|user|><|end|>",)), "phi3"),
        (Evidence(templates=("{{ '<|' + m.role + '|>\n' }}<|end|><|assistant|>",)), "phi3"),
        (Evidence(templates=("<|user|><|assistant|>{{ eos_token }}",)), "zephyr"),
        # tokens decide only when there is no template to read
        (Evidence(tokens=frozenset({"<start_of_turn>"}), templates=("{{ messages }}",)), None),
        (Evidence(tokens=frozenset({"<start_of_turn>"})), "gemma"),
        (Evidence(templates=("{{ messages }}",)), None),
    ],
)
def test_detection_from_the_template_with_the_tokenizer_telling_variants_apart(
    evidence: Evidence, family: str | None
) -> None:
    choice = detect(evidence)
    assert (choice.format.name if choice.format else None) == family, choice.how


@pytest.mark.parametrize(
    ("template", "looks_like"),
    [
        ("<|im_start|><|im_end|><think>", "reasoning ChatML (Qwen 3, QwQ, SmolLM 3: <think> blocks)"),
        (
            "[INST][/INST][ARGS]",
            "Mistral tokenizer v11 or later ([CALL_ID], [ARGS], [THINK], [MODEL_SETTINGS])",
        ),
        ("[INST][/INST][TOOL_RESULTS]", "Mistral tokenizer v2 (tool calls and results without call ids)"),
        ("<|START_OF_TURN_TOKEN|>", "Cohere Command R / A"),
        ("<|start_header_id|>{{ '>>>' }}<|eot_id|>", "Functionary (MeetKai)"),
        ("<|user|>[BEGIN FINAL RESPONSE]<|end|>", "Apriel (ServiceNow)"),
    ],
)
def test_a_family_without_a_reference_is_named(template: str, looks_like: str) -> None:
    how = detect(Evidence(tokens=frozenset({"<|im_start|>", "[INST]"}), templates=(template,))).how
    assert how.startswith(f"the template looks like {looks_like} (it writes ")
    assert how.endswith(
        "a family templatecheck has no reference format for; pass --tc-reference NAME to compare with one anyway"
    )


def test_without_a_telling_template_the_tokenizer_only_suggests() -> None:
    choice = detect(Evidence(tokens=frozenset({"<|im_start|>", "<|im_end|>"}), templates=("{{ messages }}",)))
    assert choice.format is None
    assert choice.how == (
        "the template writes the literals of no known format; the tokenizer suggests chatml (the tokenizer has "
        "<|im_start|> and <|im_end|>): --tc-reference chatml compares with it; pass --tc-reference NAME"
    )


def test_evidence_reads_tokenizer_files_without_transformers() -> None:
    v3 = evidence_of(fixture_model("families/mistral-v3"))
    assert "[INST]" in v3.tokens and v3.tokenizer_kind == "sentencepiece" and v3.model_type == "mistral"
    tekken = evidence_of(fixture_model("families/mistral-v3-tekken"))
    assert tekken.tokenizer_kind == "bytelevel"
    hermes = evidence_of(fixture_model("hermes-3-tiny"))
    assert {"<|im_start|>", "<|start_header_id|>"} <= hermes.tokens  # both kinds: the template decides
    assert detect(hermes).name == "chatml"


def test_each_template_is_detected_on_its_own() -> None:
    model = fixture_model("hermes-3-tiny")
    other = Template("llama", "<|start_header_id|>{{ messages[0].content }}<|eot_id|>", "<test>")
    both = replace(model, templates={**model.templates, "llama": other})
    assert detect(evidence_of(both, other)).name == "llama3"
    assert detect(evidence_of(both, both.templates["default"])).name == "chatml"


@pytest.mark.parametrize(
    "family", [d.name for d in sorted((FIXTURES / "families").iterdir()) if d.name != "broken"]
)
def test_every_family_fixture_is_detected_as_its_family(family: str) -> None:
    choice = detect(evidence_of(fixture_model(f"families/{family}")))
    assert choice.name == family, choice.describe()


@needs_shared
@pytest.mark.parametrize(
    ("name", "family", "kind"),
    [
        ("hermes-3-llama-3.1-8b", "chatml", "bytelevel"),
        ("llama-3.1-8b-instruct", "llama3.1", "bytelevel"),
        ("llama-3-8b-instruct-original", "llama3", "bytelevel"),
        ("mistral-7b-instruct-v0.3", "mistral-v3", "sentencepiece"),
    ],
)
def test_detection_of_the_real_tokenizer_directories(name: str, family: str, kind: str) -> None:
    evidence = evidence_of(load_model(str(SHARED / "models" / name)))
    assert evidence.tokenizer_kind == kind
    assert detect(evidence).name == family


def test_the_choice_says_how_it_was_made() -> None:
    detected = detect(Evidence(templates=("<|start_header_id|><|eot_id|>",)))
    assert detected.short() == "llama3 (detected)"
    assert detected.describe() == "llama3 (detected: the template writes <|start_header_id|> and <|eot_id|>)"
    assert detect(Evidence()).short() == "none (not detected)"
    assert Choice(get("gemma"), "--tc-reference").short() == "gemma (--tc-reference)"
    assert Choice(None, "--tc-reference none").short() == "none (--tc-reference none)"


# ------------------------------------------------------------------------------ free wording and policy


@pytest.mark.parametrize(
    ("family", "variable", "rendering", "value"),
    [
        (
            "llama3.1",
            "date_string",
            "<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n",
            "26 Jul 2024",
        ),
        ("mistral-v1", "inst_space", "[INST] Hi [/INST]", ""),
        ("mistral-v1", "turn_space", "[INST] Hi [/INST] Yo</s> [INST] Q? [/INST]", " "),
        ("mistral-v1", "answer_space", "[INST] Hi [/INST]Yo</s>", ""),
        ("chatml", "eos_after_reply", "<|im_start|>assistant\nYo<|im_end|>\n</s><|im_start|>user", "</s>"),
        ("chatml", "eos_at_end", "<|im_start|>assistant\nYo<|im_end|>\n</s>", "</s>"),
        ("phi3", "eos_at_end", "<|user|>\nHi<|end|>\n</s>", "</s>"),
    ],
)
def test_the_wording_a_format_leaves_free_is_read_from_a_rendering(
    family: str, variable: str, rendering: str, value: str
) -> None:
    slot = next(f for f in get(family).free if f.variable == variable)
    assert slot.read(rendering, eos="</s>") == value
    assert slot.read("nothing of it", eos="</s>") is None


def test_compare_follows_the_templates_default_system_prompt_and_says_so() -> None:
    def with_default(case: Case) -> str:
        messages = [dict(m) for m in case.messages]
        if not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": "Be kind."})
        return get("chatml").render(messages, add_generation_prompt=case.add_generation_prompt)

    sample = cases(0, tool_calls=False)
    special = {"bos_token": "", "eos_token": ""}
    plain = compare(get("chatml"), with_default, sample, special)
    assert plain.differences and not plain.aligned
    followed = compare(get("chatml"), with_default, sample, special, Policy(default_system="Be kind."))
    assert not followed.differences
    assert followed.aligned_summary() == f"default system prompt 'Be kind.' (in 2 of {followed.compared})"


def test_the_default_system_prompt_of_a_learnt_policy_replaces_the_formats_own() -> None:
    learnt = Reference(get("qwen2.5"), {}, Policy(learnt=True))
    assert learnt.render([HI], add_generation_prompt=False, tools=None) == "<|im_start|>user\nHi<|im_end|>\n"
    unknown = Reference(get("qwen2.5"), {}, Policy())
    assert unknown.render([HI], add_generation_prompt=False, tools=None).startswith(
        "<|im_start|>system\nYou are Qwen"
    )


# --------------------------------------------------------------------------------------------- the diff


@given(
    st.lists(st.sampled_from("ab\n<"), max_size=14),
    st.lists(st.sampled_from("ab\n<"), max_size=14),
)
def test_the_diff_is_a_shortest_edit_script(a: list[str], b: list[str]) -> None:
    ranges = edits(a, b)
    rebuilt, at = [], 0
    for i1, i2, j1, j2 in ranges:
        assert at <= i1 <= i2 and a[at:i1] == b[len(rebuilt) : len(rebuilt) + i1 - at]
        rebuilt += a[at:i1] + b[j1:j2]
        at = i2
    assert rebuilt + a[at:] == b
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    longest = sum(block.size for block in matcher.get_matching_blocks())
    assert sum(i2 - i1 for i1, i2, _, _ in ranges) <= len(a) - longest  # never more edits than difflib's


def test_the_diff_keeps_each_turn_with_its_own_end_token() -> None:
    ref = "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n<|im_start|>assistant\n"
    tpl = "<|im_start|>user <|im_end|>\n<|im_start|>assistant <|im_end|>\n<|im_start|>assistant\n"
    ranges, _ = opcodes(ref, tpl)
    assert [(ref[i1:i2], tpl[j1:j2]) for i1, i2, j1, j2 in ranges] == [("\n", " "), ("\n", " ")]
    assert atoms("<|im_end|>&#34;x\\u00e9") == ["<|im_end|>", "&#34;", "x", "\\u00e9"]


def test_the_skipped_summary_counts_reasons_most_frequent_first() -> None:
    comparison = Comparison(not_rendered=2)
    for why, n in (("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)):
        comparison.unsupported[why] += n
    assert comparison.skipped_summary() == (
        "a (5); b (4); c (3); other reasons (3); the template does not render the conversation (2)"
    )


def test_compare_counts_what_the_template_refuses_and_what_the_reference_leaves_out() -> None:
    sample = cases(0, tool_calls=True)

    def refuses_systems(case: Case) -> str:
        if any(m["role"] == "system" for m in case.messages):
            raise RenderError("refused", "no system")
        return get("llama3").render(
            [dict(m) for m in case.messages], add_generation_prompt=case.add_generation_prompt
        )

    result = compare(get("llama3"), refuses_systems, sample, {"bos_token": "", "eos_token": ""})
    assert result.differences == [] and result.compared > 0
    assert result.not_rendered == 5  # system + user (2), system + user + assistant (1), two turns (2)
    assert result.unsupported["llama3 defines no tool definitions"] == 4


def test_comparable_removes_one_leading_bos() -> None:
    assert comparable("<s><s>x", "<s>") == "<s>x"
    assert comparable("x<s>", "<s>") == "x<s>"
    assert comparable("x", "") == "x"


def test_mistral_common_bundles_no_v7_tekken_tokenizer() -> None:
    pytest.importorskip("mistral_common")
    from templatecheck.formats.oracle import OracleUnavailable, _bundled

    with pytest.raises(OracleUnavailable, match="mistral-common bundles no v7 Tekken tokenizer"):
        _bundled("v7", True)
