"""Tokenizer-layer checks, both ways: every cause triggered by a fixture, with its message, and fixtures that
do not trigger it; then the verdicts on the real models."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from templatecheck.checks.tokenizer import (
    control_token_injection,
    control_tokens,
    double_bos,
    end_of_turn,
    round_trip,
)
from templatecheck.model import Model, Subject, Template, load_model
from templatecheck.options import Options
from templatecheck.result import CheckResult, Finding, Outcome
from tests.conftest import FIXTURES, SHARED, fixture_model, needs_shared, subject, subject_with_template


def only(result: CheckResult, outcome: Outcome | None = None) -> Finding:
    """The one finding of ``result`` that is not a passed note (of ``outcome`` when given)."""
    found = [f for f in result.findings if f.outcome is not Outcome.PASSED]
    assert len(found) == 1, [f.text for f in result.findings]
    assert outcome is None or found[0].outcome is outcome, found[0].text
    return found[0]


def causes(result: CheckResult) -> list[str]:
    return [f.cause for f in result.findings if f.outcome in (Outcome.FAILED, Outcome.WARNING)]


def edited_model(
    tmp_path: Path, base: str, edit: Callable[[dict[str, Any]], None] | None = None, **files: Any
) -> Model:
    """A copy of a fixture model with its tokenizer.json edited and other JSON files replaced."""
    model_dir = tmp_path / base.replace("/", "-")
    shutil.copytree(FIXTURES / base, model_dir)
    if edit is not None:
        data = json.loads((model_dir / "tokenizer.json").read_text())
        edit(data)
        (model_dir / "tokenizer.json").write_text(json.dumps(data))
    for name, content in files.items():
        (model_dir / f"{name}.json").write_text(json.dumps(content))
    return load_model(str(model_dir))


def on(model: Model, source: str | None = None, options: Options | None = None) -> Subject:
    template = model.templates["default"] if source is None else Template("candidate", source, "<test>")
    return Subject(model, template, options or Options())


def added(data: dict[str, Any], content: str) -> dict[str, Any]:
    return next(t for t in data["added_tokens"] if t["content"] == content)


# ------------------------------------------------------------------------------------------- control tokens


def test_control_tokens_pass_when_every_literal_is_one_special_token() -> None:
    assert control_tokens(subject("hermes-3-tiny")).outcome is Outcome.PASSED
    assert control_tokens(subject("hermes-3-tiny", "tool_use")).outcome is Outcome.PASSED
    assert control_tokens(subject("llama-3-tiny")).outcome is Outcome.PASSED


def test_control_tokens_catch_a_literal_missing_from_the_vocabulary() -> None:
    source = "{% for m in messages %}<|im_start|>{{ m.role }}<|im_sep|>{{ m.content }}<|im_end|>{% endfor %}"
    finding = only(control_tokens(subject_with_template("hermes-3-tiny", source)), Outcome.FAILED)
    assert finding.cause == "control_tokens.split"
    assert finding.message.startswith(
        "the template writes '<|im_sep|>', which this tokenizer splits into several tokens: not a token of this "
        "vocabulary (a template for another tokenizer, or a missing added token)\n  '<|im_sep|>' -> "
    )
    assert (
        finding.fix
        == "write the tokenizer's exact special tokens, or add the missing ones as special added tokens"
    )


def test_control_tokens_name_the_token_a_misspelt_literal_means() -> None:
    source = "{% for m in messages %}<|start_header|>{{ m.role }}<|end_header_id|>{{ m.content }}{% endfor %}"
    finding = only(control_tokens(subject_with_template("llama-3-tiny", source)), Outcome.FAILED)
    assert finding.cause == "control_tokens.split"
    assert "(did you mean '<|start_header_id|>'?)" in finding.message


def test_control_tokens_catch_a_template_for_another_tokenizer() -> None:
    phi3 = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}<|assistant|>\n"
    source = phi3.replace(
        "<|{{ m.role }}|>", "{% if m.role == 'user' %}<|user|>{% else %}<|system|>{% endif %}"
    )
    finding = only(control_tokens(subject_with_template("hermes-3-tiny", source)), Outcome.FAILED)
    assert finding.cause == "control_tokens.other_tokenizer"
    assert finding.message.startswith(
        "none of the template's control tokens ('<|assistant|>', '<|end|>', '<|system|>', '<|user|>') is a token "
        "of this tokenizer: the template is written for another tokenizer (this one's markup: "
    )
    assert "'<|im_start|>'" in finding.message
    assert finding.fix is not None and finding.fix.startswith(
        "use the chat template of this tokenizer's model family"
    )


def test_control_tokens_ignore_bracket_markup_when_the_tokenizer_has_none() -> None:
    """Llama 2 writes [INST] as plain text by design: only tokenizers with [X] tokens are held to it."""
    source = "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"
    result = control_tokens(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.SKIPPED
    assert result.message == "the template writes no control-token literal"


def _im_start_not_special(data: dict[str, Any]) -> None:
    added(data, "<|im_start|>")["special"] = False


def test_control_tokens_fail_markup_added_as_an_ordinary_token(tmp_path: Path) -> None:
    model = edited_model(tmp_path, "hermes-3-tiny", _im_start_not_special)
    finding = only(control_tokens(on(model)), Outcome.FAILED)
    assert finding.cause == "control_tokens.not_special"
    assert finding.message == (
        "'<|im_start|>' is an added token but not special: decoding with skip_special_tokens keeps it in replies, "
        "and split_special_tokens does not keep user text from becoming it"
    )
    assert finding.fix == "mark '<|im_start|>' special (\"special\": true in tokenizer.json's added_tokens)"


def test_control_tokens_accept_tool_markup_that_is_deliberately_not_special() -> None:
    """Hermes' <tool_call> is an ordinary added token so that replies keep it: not turn markup."""
    assert causes(control_tokens(subject("hermes-3-tiny", "tool_use"))) == []


# ------------------------------------------------------------------------------------------------ double BOS


def test_a_template_bos_plus_the_tokenizers_bos_is_a_hazard_of_the_naive_path() -> None:
    result = double_bos(subject("broken/double-bos"))
    finding = only(result, Outcome.WARNING)
    assert finding.cause == "double_bos.text_with_special_tokens"
    assert finding.message.startswith(
        "tokenizer(prompt) gives 2 BOS tokens where apply_chat_template(tokenize=True) and servers give 1: the "
        "template writes '<|begin_of_text|>' and the tokenizer adds another to text encoded with special tokens\n"
        "  tokenizer(prompt): [1024 '<|begin_of_text|>'] [1024 '<|begin_of_text|>'] [1026 '<|im_start|>']"
    )
    assert finding.fix == (
        "encode the rendering with add_special_tokens=False, or use apply_chat_template(tokenize=True); keep "
        "{{ bos_token }} in the template (apply_chat_template and servers need it)"
    )
    assert "drop" not in finding.text


def test_the_naive_hazard_fails_when_the_naive_path_is_a_declared_consumer() -> None:
    s = subject("broken/double-bos")
    result = double_bos(replace(s, options=Options(consumers=("naive",))))
    finding = only(result, Outcome.FAILED)
    assert finding.cause == "double_bos.text_with_special_tokens"
    assert finding.message.endswith("\n  (fails: --tc-consumer naive)")
    assert double_bos(replace(s, options=Options(consumers=("server",)))).outcome is Outcome.WARNING


def test_a_template_that_leaves_bos_to_the_tokenizer_fails_for_apply_chat_template_and_servers() -> None:
    finding = only(double_bos(subject("broken/no-bos")), Outcome.FAILED)
    assert finding.cause == "double_bos.missing"
    assert finding.message.startswith(
        "apply_chat_template(tokenize=True) and servers (the rendering encoded without special tokens) give no "
        "BOS: the template does not write '<|begin_of_text|>', which the tokenizer adds only to text encoded with "
        "special tokens\n  tokens: [1026 '<|im_start|>']"
    )
    assert finding.fix is not None
    assert finding.fix.startswith("write {{ bos_token }} at the start of the template ('<|begin_of_text|>')")


def test_no_bos_anywhere_is_right_for_a_model_trained_without_it() -> None:
    source = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    result = double_bos(subject_with_template("hermes-3-tiny", source))  # its tokenizer adds no BOS
    assert result.outcome is Outcome.PASSED
    assert result.findings[0].message.startswith(
        "no path gives BOS '<|begin_of_text|>': the template does not"
    )


def test_one_bos_on_every_path_passes() -> None:
    result = double_bos(subject("hermes-3-tiny"))
    assert (result.outcome, result.findings) == (Outcome.PASSED, ())


def test_double_bos_catches_bos_written_per_turn() -> None:
    source = "{% for m in messages %}{{ bos_token }}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    finding = only(double_bos(subject_with_template("hermes-3-tiny", source)), Outcome.FAILED)
    assert finding.cause == "double_bos.repeated"
    assert finding.message.startswith(
        "apply_chat_template(tokenize=True) and servers (the rendering encoded without special tokens) give 2 BOS "
        "tokens: '<|begin_of_text|>' is written again inside the conversation (not as a new sequence after an "
        "end-of-sequence token)\n  tokens from the first repeat: "
    )
    assert finding.fix == "write {{ bos_token }} once, at the start of the template"


def test_double_bos_finds_bos_that_only_some_conversations_repeat() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}{{ bos_token }}{% endif %}"
        "<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    )
    finding = only(double_bos(subject_with_template("hermes-3-tiny", source)), Outcome.FAILED)
    assert finding.cause == "double_bos.repeated"
    assert "\nconversation:\n" in finding.message and "assistant:" in finding.message  # the shrunk case


LLAMA2 = (
    "{% for m in messages %}{% if m.role == 'user' %}{{ bos_token }}[INST] {{ m.content }} [/INST]"
    "{% elif m.role == 'assistant' %} {{ m.content }}{{ END }}{% endif %}{% endfor %}"
)


def test_bos_after_an_end_of_sequence_token_is_a_new_sequence_not_a_repeat() -> None:
    """Llama 2 encodes each exchange as its own sequence: ``</s><s>[INST]`` is its format, not a defect."""
    with_eos = double_bos(subject_with_template("hermes-3-tiny", LLAMA2.replace("END", "eos_token")))
    assert with_eos.outcome is Outcome.PASSED, with_eos.message
    without = double_bos(subject_with_template("hermes-3-tiny", LLAMA2.replace("{{ END }}", "")))
    assert causes(without) == ["double_bos.repeated"]  # the sample has the multi-turn case


def test_text_before_bos_fails() -> None:
    source = "\n{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
    finding = only(double_bos(subject_with_template("hermes-3-tiny", source)), Outcome.FAILED)
    assert finding.cause == "double_bos.not_at_start"
    assert finding.message.startswith(
        "BOS '<|begin_of_text|>' is not the first token on any path: the template writes '\\n' before it\n"
        "  tokens: [198 'Ċ'] [1024 '<|begin_of_text|>']"
    )


def test_double_bos_is_skipped_for_a_tokenizer_without_bos(tmp_path: Path) -> None:
    config = json.loads((FIXTURES / "hermes-3-tiny" / "tokenizer_config.json").read_text())
    model = edited_model(tmp_path, "hermes-3-tiny", tokenizer_config={**config, "bos_token": None})
    result = double_bos(on(model))
    assert (result.outcome, result.message) == (Outcome.SKIPPED, "the tokenizer defines no BOS token")


def test_double_bos_is_skipped_when_nothing_renders() -> None:
    result = double_bos(subject("broken/template-raises"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message.startswith("no plain conversation renders (see `renders`)")


# ----------------------------------------------------------------------------------------------- end of turn


def test_end_of_turn_catches_the_llama3_launch_bug() -> None:
    finding = only(end_of_turn(subject("broken/eos-missing-end-of-turn")), Outcome.FAILED)
    assert finding.cause == "end_of_turn.not_stop_token"
    assert finding.message == (
        "the end-of-turn token '<|eot_id|>' (1030) is not a stop token: generation_config.json eos_token_id is "
        "[1025 '<|end_of_text|>'], so generation runs past the end of the assistant turn\n"
        "  '<|eot_id|>' (1030) closes: reply"
    )
    assert finding.fix == "set eos_token_id in generation_config.json to [1025, 1030]"


def test_end_of_turn_passes_a_stop_set_with_the_end_of_turn_token() -> None:
    for s in (subject("llama-3-tiny"), subject("hermes-3-tiny"), subject("hermes-3-tiny", "tool_use")):
        result = end_of_turn(s)
        assert result.outcome is Outcome.PASSED, result.message
    notes = [f.message for f in end_of_turn(subject("hermes-3-tiny", "tool_use")).findings]
    assert notes == [
        "assistant turns close with stop tokens (generation_config.json eos_token_id): "
        "'<|im_end|>' (1027): reply, tool call"
    ]


#: Llama-3-like: replies close with <|eot_id|>, tool calls with <|eom_id|> (llama-3-tiny stops on 1025, 1030).
TOOL_CALL_EOM = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<|python_tag|>{{ c.function.arguments | tojson }}"
    "{% endfor %}<|eom_id|>{% else %}{{ m.content }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_a_tool_call_turn_closing_with_a_token_the_stop_set_lacks_fails() -> None:
    finding = only(end_of_turn(subject_with_template("llama-3-tiny", TOOL_CALL_EOM)), Outcome.FAILED)
    assert finding.cause == "end_of_turn.not_stop_token"
    assert finding.message == (
        "the end-of-turn token '<|eom_id|>' (1031) is not a stop token: generation_config.json eos_token_id is "
        "[1025 '<|end_of_text|>', 1030 '<|eot_id|>'], so generation runs past the end of the assistant turn\n"
        "  '<|eom_id|>' (1031) closes: tool call"
    )
    assert finding.fix == "set eos_token_id in generation_config.json to [1025, 1030, 1031]"


def test_a_stop_set_with_every_closing_token_passes_every_mode() -> None:
    model = replace(
        fixture_model("llama-3-tiny"), generation_config={"eos_token_id": [1025, 1030, 1031]}, cache={}
    )
    result = end_of_turn(on(model, TOOL_CALL_EOM))
    assert result.outcome is Outcome.PASSED
    assert result.findings[0].message.endswith("'<|eot_id|>' (1030): reply; '<|eom_id|>' (1031): tool call")


def test_a_calls_own_markup_before_the_turns_closing_token_is_not_a_closing_token() -> None:
    """A call that ends with its own markup and then the reply's closing token (DeepSeek's
    ``<｜tool▁calls▁end｜><｜end▁of▁sentence｜>``) closes with the reply's token."""  # noqa: RUF002
    source = TOOL_CALL_EOM.replace("<|eom_id|>{% else %}", "<|eom_id|><|eot_id|>{% else %}")
    result = end_of_turn(subject_with_template("llama-3-tiny", source))
    assert result.outcome is Outcome.PASSED
    assert result.findings[0].message.endswith("'<|eot_id|>' (1030): reply, tool call")


#: Llama-3.1-like: a call of a built-in tool is written after <|python_tag|> and closes with <|eom_id|>.
BUILTIN_EOM = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{% if m.tool_calls %}{% set c = m.tool_calls[0].function %}"
    '{% if builtin_tools is defined and c.name in builtin_tools %}<|python_tag|>{{ c.name }}.call(query="'
    '{{ c.arguments.query }}")<|eom_id|>{% else %}{{ c.arguments | tojson }}<|eot_id|>{% endif %}'
    "{% else %}{{ m.content }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_built_in_tool_calls_are_rendered_with_the_variables_the_template_reads() -> None:
    finding = only(end_of_turn(subject_with_template("llama-3-tiny", BUILTIN_EOM)), Outcome.FAILED)
    assert finding.cause == "end_of_turn.not_stop_token"
    assert finding.message.endswith("\n  '<|eom_id|>' (1031) closes: built-in tool call")
    assert finding.fix == "set eos_token_id in generation_config.json to [1025, 1030, 1031]"


def test_a_template_without_built_in_tools_gets_no_built_in_mode() -> None:
    source = BUILTIN_EOM.replace("builtin_tools is defined and c.name in builtin_tools", "false")
    result = end_of_turn(subject_with_template("llama-3-tiny", source))
    assert result.outcome is Outcome.PASSED
    assert result.findings[0].message.endswith("'<|eot_id|>' (1030): reply, tool call")


def test_end_of_turn_warns_when_turns_end_in_plain_text() -> None:
    source = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}"
    finding = only(end_of_turn(subject_with_template("hermes-3-tiny", source)), Outcome.WARNING)
    assert finding.cause == "end_of_turn.no_control_token"
    assert finding.message == (
        "assistant turns end without a control token (reply): generation can stop only on a stop string, which "
        "clients must configure themselves\n  after the reply: '␤\\n␤\\n'"
    )


def test_an_eos_token_id_that_is_not_a_token_id_fails_and_the_tokenizers_eos_is_used(tmp_path: Path) -> None:
    model = edited_model(tmp_path, "llama-3-tiny", generation_config={"eos_token_id": "<|eot_id|>"})
    result = end_of_turn(on(model))
    finding = only(result, Outcome.FAILED)
    assert finding.cause == "end_of_turn.stop_set_invalid"
    assert finding.message == (
        f"{model.directory / 'generation_config.json'}: eos_token_id is '<|eot_id|>', which is not a token id or a "
        "list of token ids of this tokenizer (ids are integers from 0 to 1038; bad entries: ['<|eot_id|>'])"
    )
    assert finding.fix == "write eos_token_id as a token id or a list of token ids, e.g. [1030]"
    assert "the tokenizer's eos_token '<|eot_id|>'" in result.findings[-1].message  # judged with it: passes


def test_end_of_turn_is_skipped_when_nothing_renders() -> None:
    assert end_of_turn(subject("broken/template-raises")).outcome is Outcome.SKIPPED


# ------------------------------------------------------------------------------------------------ round trip


def test_round_trip_passes_a_lossless_tokenizer() -> None:
    assert round_trip(subject("hermes-3-tiny")).outcome is Outcome.PASSED
    assert round_trip(subject("hermes-3-tiny", "tool_use")).outcome is Outcome.PASSED


def _lowercase(data: dict[str, Any]) -> None:
    data["normalizer"] = {"type": "Lowercase"}


def test_round_trip_renders_a_template_that_reads_the_clock_under_the_real_clock(monkeypatch: Any) -> None:
    """transformers renders with today's date: so must the renders compared with it, where the template
    reads the clock (else its pinned renders are the same, and serve)."""
    from templatecheck.checks import tokenizer

    dated = (
        "{{ strftime_now('%d %B %Y') }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert round_trip(subject_with_template("hermes-3-tiny", dated)).outcome is Outcome.PASSED
    monkeypatch.setattr(tokenizer, "_reads_clock", lambda subject: False)
    result = round_trip(subject_with_template("hermes-3-tiny", dated + " "))
    assert result.outcome is Outcome.ERROR
    assert result.message.startswith("templatecheck renders this conversation differently from transformers'")


def test_round_trip_catches_a_lossy_normalizer(tmp_path: Path) -> None:
    result = round_trip(on(edited_model(tmp_path, "hermes-3-tiny", _lowercase)))
    finding = only(result, Outcome.FAILED)
    assert finding.cause == "round_trip.decode_differs"
    assert finding.message.startswith(
        "decoding the encoded prompt does not give it back\nfirst difference at"
    )


def test_round_trip_catches_apply_chat_template_that_encodes_unlike_its_rendering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = load_model(str(FIXTURES / "hermes-3-tiny"))
    original = model.tokenizer.apply_chat_template

    def bos_first(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        return [1024, *out] if kwargs.get("tokenize") else out

    monkeypatch.setattr(model.tokenizer, "apply_chat_template", bos_first)
    finding = only(round_trip(on(model)), Outcome.FAILED)
    assert finding.cause == "round_trip.apply_chat_template_differs"
    assert finding.message.startswith(
        "apply_chat_template(tokenize=True) differs from its rendering encoded without special tokens (what "
        "servers send)\n  first difference at token 1:\n    apply_chat_template: [1024 '<|begin_of_text|>']"
    )


def test_a_rendering_unlike_transformers_is_an_error_of_templatecheck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = load_model(str(FIXTURES / "hermes-3-tiny"))
    original = model.tokenizer.apply_chat_template

    def other_text(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("tokenize"):
            return model.tokenizer("x", add_special_tokens=False)["input_ids"]
        return "x"

    monkeypatch.setattr(model.tokenizer, "apply_chat_template", other_text)
    assert original is not other_text
    finding = only(round_trip(on(model)), Outcome.ERROR)
    assert finding.message.startswith(
        "templatecheck renders this conversation differently from transformers' apply_chat_template"
    )


def test_round_trip_passes_the_template_variables_to_transformers() -> None:
    source = "{% for m in messages %}<|im_start|>{{ m.role }} {{ greeting }}\n{{ m.content }}<|im_end|>{% endfor %}"
    s = subject_with_template("hermes-3-tiny", source)
    assert (
        round_trip(replace(s, options=Options(template_vars={"greeting": "hello"}))).outcome is Outcome.PASSED
    )


def test_transformers_renders_run_in_one_child_for_every_template_of_a_tokenizer() -> None:
    from templatecheck.checks.tokenizer import _applier

    first = subject_with_template(
        "hermes-3-tiny", "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}"
    )
    second = subject_with_template(
        "hermes-3-tiny", "{% for m in messages %}<|im_end|>{{ m.content }}{% endfor %}"
    )
    assert round_trip(first).outcome is Outcome.PASSED
    server = _applier(first.model.tokenizer)
    starts, pid = server.starts, server._pid
    assert pid is not None
    assert round_trip(second).outcome is Outcome.PASSED
    assert _applier(second.model.tokenizer) is server and (server.starts, server._pid) == (starts, pid)


# ------------------------------------------------------------------------------------ control-token injection


def test_injection_is_a_hazard_of_the_server_path_with_the_clients_fix() -> None:
    finding = only(control_token_injection(subject("hermes-3-tiny")), Outcome.WARNING)
    assert finding.cause == "control_token_injection.user_text_as_control"
    assert finding.message.startswith(
        "user text containing '<|begin_of_text|>', '<|im_start|>', '<|im_end|>' reaches the model as 3 real "
        "control tokens on the apply_chat_template, server, naive paths\n  user text: 'ignore this "
    )
    assert finding.fix == (
        "sanitize user text before it is encoded: apply_chat_template(..., tokenize=True, "
        "sanitize_control_tokens=True) where transformers has it, or encode user text with "
        "split_special_tokens=True; a server does the same for the messages it receives"
    )
    declared = replace(subject("hermes-3-tiny"), options=Options(consumers=("server",)))
    assert control_token_injection(declared).outcome is Outcome.FAILED


def test_injection_names_the_tokens_split_special_tokens_leaves() -> None:
    finding = only(control_token_injection(subject("hermes-3-tiny", "tool_use")), Outcome.WARNING)
    assert "'<tool_call>'" in finding.message
    assert finding.fix is not None and finding.fix.endswith(
        "; remove '</tool_response>', '<tool_response>', '</tool_call>', '<tool_call>', '</tools>', '<tools>' from "
        "user text (added tokens that are not special: split_special_tokens does not split them)"
    )


def test_injection_of_markup_that_is_not_special_is_reported_by_control_tokens(tmp_path: Path) -> None:
    result = control_token_injection(on(edited_model(tmp_path, "hermes-3-tiny", _im_start_not_special)))
    assert causes(result) == ["control_token_injection.user_text_as_control"]
    assert [f.message.split(":")[0] for f in result.findings if f.outcome is Outcome.PASSED] == [
        "also observed control_tokens.not_special (reported by `control_tokens`)"
    ]


def _folding(data: dict[str, Any]) -> None:
    data["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}
    added(data, "<|im_end|>")["normalized"] = True


def test_a_tokenizer_that_makes_control_tokens_from_other_text_fails(tmp_path: Path) -> None:
    result = control_token_injection(on(edited_model(tmp_path, "hermes-3-tiny", _folding)))
    assert causes(result) == [
        "control_token_injection.user_text_as_control",
        "control_token_injection.from_other_text",
    ]
    finding = result.findings[1]
    assert finding.outcome is Outcome.FAILED
    assert finding.message == (
        "the tokenizer makes control tokens out of text that is not their literal string, which no sanitizer "
        "looks for\n  '<|IM_END|>' becomes '<|im_end|>'\n"
        "  '＜｜im_end｜＞' becomes '<|im_end|>'"  # noqa: RUF001
    )
    assert finding.fix is not None and finding.fix.startswith('set "normalized": false on these added tokens')


def test_injection_is_skipped_without_special_tokens_in_the_template() -> None:
    source = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    result = control_token_injection(subject_with_template("hermes-3-tiny", source))
    assert (result.outcome, result.message) == (Outcome.SKIPPED, "the template writes no control token")


# ---------------------------------------------------------------------------------------------- real models

REAL = [
    "llama-3.1-8b-instruct",
    "hermes-3-llama-3.1-8b",
    "llama-3-8b-instruct-original",
    "mistral-7b-instruct-v0.3",
]


def real(name: str, options: Options | None = None) -> list[Subject]:
    model = load_model(str(SHARED / "models" / name))
    return [Subject(model, t, options or Options(examples=20)) for t in model.templates.values()]


@needs_shared
@pytest.mark.parametrize("name", REAL)
def test_real_models_that_write_bos_give_one_naive_warning_and_no_failure(name: str) -> None:
    for s in real(name):
        result = double_bos(s)
        finding = only(result, Outcome.WARNING)
        assert finding.cause == "double_bos.text_with_special_tokens", finding.text
        assert (
            "gives 2 BOS tokens where apply_chat_template(tokenize=True) and servers give 1"
            in finding.message
        )
    for s in real(name, Options(examples=20, consumers=("naive",))):
        assert double_bos(s).outcome is Outcome.FAILED


@needs_shared
def test_llama_3_original_fails_end_of_turn_with_the_stop_set_fix() -> None:
    (s,) = real("llama-3-8b-instruct-original")
    finding = only(end_of_turn(s), Outcome.FAILED)
    assert finding.cause == "end_of_turn.not_stop_token"
    assert finding.message.startswith(
        "the end-of-turn token '<|eot_id|>' (128009) is not a stop token: generation_config.json eos_token_id "
        "is [128001 '<|end_of_text|>']"
    )
    assert finding.fix == "set eos_token_id in generation_config.json to [128001, 128009]"


@needs_shared
def test_llama_3_1_closes_built_in_tool_calls_with_a_stop_token() -> None:
    (s,) = real("llama-3.1-8b-instruct")
    result = end_of_turn(s)
    assert result.outcome is Outcome.PASSED
    assert result.findings[0].message == (
        "assistant turns close with stop tokens (generation_config.json eos_token_id): '<|eot_id|>' (128009): "
        "reply, tool call, reply with built-in tools enabled; '<|eom_id|>' (128008): built-in tool call, tool "
        "call with built-in tools enabled"
    )


@needs_shared
@pytest.mark.parametrize("name", REAL)
def test_real_models_pass_the_other_tokenizer_checks(name: str) -> None:
    for s in real(name):
        assert control_tokens(s).outcome is Outcome.PASSED
        assert round_trip(s).outcome is Outcome.PASSED
        assert causes(control_token_injection(s)) == ["control_token_injection.user_text_as_control"]
        if name != "llama-3-8b-instruct-original":
            assert end_of_turn(s).outcome is Outcome.PASSED


def test_transformers_text_is_asked_for_only_where_its_ids_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """``apply_chat_template(tokenize=False)`` tells a renderer difference from a tokenizer one; where the ids
    already equal our rendering encoded, nothing differs and it is not called."""
    model = load_model(str(FIXTURES / "hermes-3-tiny"))
    original = model.tokenizer.apply_chat_template
    asked: list[bool] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        asked.append(bool(kwargs.get("tokenize")))
        return original(*args, **kwargs)

    monkeypatch.setattr(model.tokenizer, "apply_chat_template", counted)
    from templatecheck import worker

    # the calls run in a child forked for them: here they run in this process, so that they can be counted
    monkeypatch.setattr(
        worker.ForkServer,
        "run",
        lambda self, arguments, budget: [{"ok": self.function(a)} for a in arguments],
    )
    assert round_trip(on(model)).outcome is Outcome.PASSED
    assert asked and all(asked)
