"""The reference renderers on hand-written examples of each published format, the registry, and detection."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

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
from templatecheck.formats.compare import Case, Comparison, cases, comparable, compare
from templatecheck.formats.detect import Choice, detect, evidence_of
from templatecheck.model import load_model
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
    assert message.startswith("--reference 'llama4': no such reference format; known: chatml, gemma, ")
    assert "(or 'none' to skip the comparison)" in message
    with pytest.raises(TemplatecheckError, match="reserved"):
        register(Format("none", _acme, "nothing"))


def test_aliases_name_the_same_format() -> None:
    assert get("llama3.2") is get("llama3.3") is get("llama3.1")
    assert get("hermes") is get("chatml")


# -------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("evidence", "family"),
    [
        (Evidence(templates=("<|im_start|>{{ m }}<|im_end|>",)), "chatml"),
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
        (Evidence(templates=("<|start_header_id|>Cutting Knowledge Date",)), "llama3.1"),
        (Evidence(templates=("[INST] <<SYS>>",)), "llama2"),
        (Evidence(templates=("[INST][/INST]",), tokenizer_kind="sentencepiece"), "mistral-v1"),
        (
            Evidence(
                tokens=frozenset({"[INST]"}), templates=("[INST][/INST]",), tokenizer_kind="sentencepiece"
            ),
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
        (Evidence(tokens=frozenset({"[INST]"}), templates=("[INST][/INST][ARGS]",)), None),
        (Evidence(templates=("<start_of_turn><end_of_turn>",), config={"model_type": "gemma2"}), "gemma"),
        (
            Evidence(templates=("<start_of_turn><end_of_turn>",), config={"model_type": "gemma3_text"}),
            "gemma3",
        ),
        (Evidence(templates=("<|user|><|end|>",)), "phi3"),
        (Evidence(templates=("<|user|><|assistant|>{{ eos_token }}",)), "zephyr"),
        (Evidence(tokens=frozenset({"<start_of_turn>"}), templates=("{{ messages }}",)), "gemma"),
        (Evidence(templates=("{{ messages }}",)), None),
    ],
)
def test_detection_from_literals_then_tokens(evidence: Evidence, family: str | None) -> None:
    choice = detect(evidence)
    assert (choice.format.name if choice.format else None) == family
    if family is None:
        assert choice.how.startswith("no known format detected")


def test_evidence_reads_tokenizer_files_without_transformers() -> None:
    v3 = evidence_of(fixture_model("families/mistral-v3"))
    assert "[INST]" in v3.tokens and v3.tokenizer_kind == "sentencepiece" and v3.model_type == "mistral"
    tekken = evidence_of(fixture_model("families/mistral-v3-tekken"))
    assert tekken.tokenizer_kind == "bytelevel"
    hermes = evidence_of(fixture_model("hermes-3-tiny"))
    assert {"<|im_start|>", "<|start_header_id|>"} <= hermes.tokens  # both kinds: the template decides
    assert detect(hermes).name == "chatml"


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


@needs_shared
def test_without_a_telling_template_the_tokens_decide() -> None:
    evidence = evidence_of(load_model(str(SHARED / "models" / "llama-3.1-8b-instruct")))
    untold = replace(evidence, templates=("{{ messages }}",))
    choice = detect(untold)
    assert choice.name == "llama3.1"
    assert (
        choice.how
        == "detected: the tokenizer has <|start_header_id|>, <|eom_id|> and <|python_tag|> (Llama 3.1+)"
    )


def test_the_choice_says_how_it_was_made() -> None:
    detected = detect(Evidence(templates=("<|start_header_id|><|eot_id|>",)))
    assert detected.short() == "llama3 (detected)"
    assert detected.describe() == "llama3 (detected: the template writes <|start_header_id|> and <|eot_id|>)"
    assert detect(Evidence()).short() == "none (not detected)"
    assert Choice(get("gemma"), "--reference").short() == "gemma (--reference)"
    assert Choice(None, "--reference none").short() == "none (--reference none)"


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
