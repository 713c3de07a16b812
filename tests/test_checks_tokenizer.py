"""Tokenizer-layer checks, both ways."""

from __future__ import annotations

import json
import shutil
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
from templatecheck.model import Subject, load_model
from templatecheck.result import Outcome
from tests.conftest import FIXTURES, subject, subject_with_template

# ------------------------------------------------------------------------------------------- control tokens


def test_control_tokens_pass_when_every_literal_is_one_special_token() -> None:
    assert control_tokens(subject("hermes-3-tiny")).outcome is Outcome.PASSED
    assert control_tokens(subject("llama-3-tiny")).outcome is Outcome.PASSED


def test_control_tokens_catch_a_literal_missing_from_the_vocabulary() -> None:
    source = "{% for m in messages %}<|im_start|>{{ m.role }}<|im_sep|>{{ m.content }}<|im_end|>{% endfor %}"
    result = control_tokens(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("the template writes '<|im_sep|>', which this tokenizer splits into ")
    assert "it is not a token of this vocabulary" in result.message


def test_control_tokens_ignore_bracket_markup_when_the_tokenizer_has_none() -> None:
    """Llama 2 writes [INST] as plain text by design: only tokenizers with [X] tokens are held to it."""
    source = "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"
    result = control_tokens(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.SKIPPED
    assert result.message == "the template writes no control-token literal"


def test_control_tokens_warn_on_markup_added_as_an_ordinary_token(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURES / "hermes-3-tiny", model_dir)
    data = json.loads((model_dir / "tokenizer.json").read_text())
    for token in data["added_tokens"]:
        if token["content"] == "<|im_start|>":
            token["special"] = False
    (model_dir / "tokenizer.json").write_text(json.dumps(data))
    model = load_model(str(model_dir))
    result = control_tokens(Subject(model, model.templates["default"]))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith("'<|im_start|>' is an added token but not special")


# ------------------------------------------------------------------------------------------------ double BOS


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


def test_double_bos_finds_bos_that_only_some_conversations_repeat() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}{{ bos_token }}{% endif %}"
        "<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    )
    result = double_bos(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    assert "assistant:" in result.message  # the shrunk conversation holds an assistant turn


# ----------------------------------------------------------------------------------------------- end of turn


def test_end_of_turn_catches_the_llama3_launch_bug() -> None:
    result = end_of_turn(subject("broken/eos-missing-end-of-turn"))
    assert result.outcome is Outcome.FAILED
    assert result.message == (
        "the end-of-turn token '<|eot_id|>' (1030) is not a stop token: generation_config.json eos_token_id is "
        "[1025 '<|end_of_text|>'], so generation runs past the end of the assistant turn\n"
        "  fix: set eos_token_id in generation_config.json to [1025, 1030]"
    )


def test_end_of_turn_passes_a_stop_set_with_the_end_of_turn_token() -> None:
    assert end_of_turn(subject("llama-3-tiny")).outcome is Outcome.PASSED
    assert end_of_turn(subject("hermes-3-tiny")).outcome is Outcome.PASSED


def test_end_of_turn_warns_when_turns_end_in_plain_text() -> None:
    source = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}"
    result = end_of_turn(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    assert result.message.startswith("assistant turns end without a control token")


# ------------------------------------------------------------------------------------------------ round trip


def test_round_trip_passes_a_lossless_tokenizer() -> None:
    assert round_trip(subject("hermes-3-tiny")).outcome is Outcome.PASSED


def test_round_trip_catches_a_lossy_normalizer(tmp_path: Path) -> None:
    model_dir = tmp_path / "lowercase"
    shutil.copytree(FIXTURES / "hermes-3-tiny", model_dir)
    data = json.loads((model_dir / "tokenizer.json").read_text())
    data["normalizer"] = {"type": "Lowercase"}
    (model_dir / "tokenizer.json").write_text(json.dumps(data))
    model = load_model(str(model_dir))
    result = round_trip(Subject(model, model.templates["default"]))
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("decoding the encoded prompt does not give it back\nfirst difference at")


# ------------------------------------------------------------------------------------ control-token injection


def test_injection_is_reported_with_the_fix() -> None:
    result = control_token_injection(subject("hermes-3-tiny"))
    assert result.outcome is Outcome.WARNING
    assert result.message == (
        "user text containing '<|im_start|>', '<|im_end|>' reaches the model as 2 real control tokens through "
        "tokenizer(prompt) and apply_chat_template; fix: apply_chat_template(..., tokenize=True, "
        "sanitize_control_tokens=True) neutralizes them"
    )


def test_injection_that_no_client_can_neutralize_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(str(FIXTURES / "hermes-3-tiny"))
    original = model.tokenizer.apply_chat_template

    def refusing(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("sanitize_control_tokens"):
            raise ValueError("Can't sanitize '<|im_end|>': the tokenizer produces it from plain text")
        return original(*args, **kwargs)

    monkeypatch.setattr(model.tokenizer, "apply_chat_template", refusing)
    result = control_token_injection(Subject(model, model.templates["default"]))
    assert result.outcome is Outcome.FAILED
    assert result.message == (
        "user text can never be neutralized: Can't sanitize '<|im_end|>': the tokenizer produces it from plain text"
    )


def test_injection_is_skipped_without_special_tokens_in_the_template() -> None:
    source = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    result = control_token_injection(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.SKIPPED
