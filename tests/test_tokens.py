"""The tokens view: consumer paths, the stop set, the control tokens the template writes."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from templatecheck import conversation as conv
from templatecheck.model import Model
from templatecheck.tokens import PATHS, encode, encode_as_text, encode_naive, stop_set, tokens_of
from tests.conftest import fixture_model, subject, subject_with_template

CONVERSATIONS = [conv.USER_ONLY, conv.SYSTEM_USER, [*conv.SYSTEM_USER_ASSISTANT, conv.user("And Spain?")]]


@pytest.mark.parametrize("name", ["hermes-3-tiny", "llama-3-tiny", "broken/double-bos"])
@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["user", "system+user", "two turns"])
def test_the_apply_chat_template_path_is_what_the_installed_transformers_gives(
    name: str, conversation: conv.Conversation
) -> None:
    """apply_chat_template(tokenize=True) encodes its rendering without special tokens, also for a tokenizer
    that adds BOS to text (broken/double-bos): the view's path must stay what transformers does."""
    s = subject(name)
    theirs = s.model.tokenizer.apply_chat_template(
        conversation,
        chat_template=s.template.source,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    rendering = s.render(conversation, add_generation_prompt=True)
    assert tokens_of(s).path("apply_chat_template", rendering) == list(theirs)


def test_the_paths_differ_only_in_the_special_tokens_the_naive_path_adds() -> None:
    view = tokens_of(subject("broken/double-bos"))
    rendering = subject("broken/double-bos").render(conv.USER_ONLY, add_generation_prompt=True)
    paths = view.paths(rendering)
    assert set(paths) == set(PATHS) == {"apply_chat_template", "server", "naive"}
    assert paths["apply_chat_template"] == paths["server"] == encode(view.tokenizer, rendering)
    assert paths["naive"] == [1024, *paths["server"]] == encode_naive(view.tokenizer, rendering)
    assert view.naive_adds == ((1024,), ())
    assert tokens_of(subject("hermes-3-tiny")).naive_adds == ((), ())


def test_encoding_as_text_splits_special_tokens() -> None:
    tokenizer = fixture_model("hermes-3-tiny").tokenizer
    assert encode(tokenizer, "<|im_end|>") == [1027]
    assert 1027 not in encode_as_text(tokenizer, "<|im_end|>")
    assert len(encode_as_text(tokenizer, "<|im_end|>")) > 1


def test_the_view_is_built_once_per_template() -> None:
    s = subject("hermes-3-tiny")
    assert tokens_of(s) is tokens_of(s)
    assert tokens_of(s) is not tokens_of(subject("hermes-3-tiny", "tool_use"))


def test_the_control_tokens_the_template_writes() -> None:
    view = tokens_of(subject("llama-3-tiny"))
    assert view.written == ("<|start_header_id|>", "<|begin_of_text|>", "<|end_header_id|>", "<|eot_id|>")
    assert view.bos_id == 1024 and view.bos == "<|begin_of_text|>"
    assert {1024, 1025, 1030, 1031} <= view.special and 1033 not in view.special  # <tool_call> is not special
    assert 1033 in view.added
    tool_use = tokens_of(subject("hermes-3-tiny", "tool_use")).written
    assert "<tool_call>" in tool_use and "<|im_start|>" in tool_use
    assert tokens_of(subject_with_template("hermes-3-tiny", "{{ messages[0].content }}")).written == ()


# ------------------------------------------------------------------------------------------------- stop set


def _with_config(config: Any) -> Model:
    return replace(fixture_model("llama-3-tiny"), generation_config=config, cache={})


def test_the_stop_set_reads_an_id_or_a_list_of_ids() -> None:
    assert stop_set(fixture_model("llama-3-tiny")).ids == (1025, 1030)
    assert stop_set(fixture_model("llama-3-tiny")).source == "generation_config.json eos_token_id"
    assert stop_set(fixture_model("hermes-3-tiny")).ids == (1027,)
    found = stop_set(_with_config({"eos_token_id": 1030}))
    assert (found.ids, found.problem) == ((1030,), None)


def test_without_an_eos_token_id_the_stop_set_is_the_tokenizers_eos() -> None:
    found = stop_set(_with_config({"bos_token_id": 1024}))
    assert found.ids == (1030,) and found.problem is None
    assert (
        found.source == "the tokenizer's eos_token '<|eot_id|>' (no eos_token_id in generation_config.json)"
    )
    assert (
        stop_set(_with_config(None)).source
        == "the tokenizer's eos_token '<|eot_id|>' (no generation_config.json)"
    )


@pytest.mark.parametrize(
    ("value", "ids", "bad"),
    [
        ("<|eot_id|>", (1030,), "bad entries: ['<|eot_id|>']"),
        ([1025, "1030"], (1025,), "bad entries: ['1030']"),
        ([1025, True], (1025,), "bad entries: [True]"),
        ([1025, 99999], (1025,), "bad entries: [99999]"),
        ([], (1030,), "the list is empty"),
    ],
)
def test_an_invalid_eos_token_id_is_a_problem_naming_the_file_and_value(
    value: Any, ids: tuple[int, ...], bad: str
) -> None:
    found = stop_set(_with_config({"eos_token_id": value}))
    assert found.ids == ids
    assert found.problem is not None
    assert found.problem.startswith(f"{fixture_model('llama-3-tiny').directory / 'generation_config.json'}: ")
    assert f"eos_token_id is {value!r}, which is not a token id or a list of token ids" in found.problem
    assert found.problem.endswith(f"{bad})")


def test_a_generation_config_that_is_not_an_object_is_a_problem() -> None:
    found = stop_set(_with_config([1, 2]))
    assert found.ids == (1030,)
    assert found.problem is not None and "is not a JSON object (it holds list [1, 2])" in found.problem


def test_importing_the_view_imports_no_transformers() -> None:
    code = (
        "import sys, templatecheck.tokens; print('transformers' in sys.modules, 'tokenizers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
