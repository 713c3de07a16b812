"""The trained fixture: its directories are what fixtures/train_tiny.py writes, and the variants share weights."""

from __future__ import annotations

import json
from types import ModuleType

from tests.conftest import FIXTURES, fixture_script


def train_tiny() -> ModuleType:
    return fixture_script("train_tiny")


def test_committed_directories_match_a_fresh_write() -> None:
    lines: list[str] = []
    assert train_tiny().check(FIXTURES, report=lines.append), (
        "\n".join(lines) + "\nrun: python fixtures/train_tiny.py --variants"
    )


def test_the_weights_are_written_once_and_linked() -> None:
    weights = FIXTURES / "tiny-chatml" / "model.safetensors"
    assert weights.is_file() and not weights.is_symlink()
    assert weights.stat().st_size < 3_000_000
    for directory in (FIXTURES / "broken").glob("tiny-*"):
        link = directory / "model.safetensors"
        assert link.is_symlink() and link.resolve() == weights.resolve(), directory


def test_each_variant_differs_from_the_correct_model_by_its_bug() -> None:
    module = train_tiny()
    correct = {
        k: (FIXTURES / "tiny-chatml" / k).read_text()
        for k in ("tokenizer_config.json", "generation_config.json")
    }
    changed = {}
    for directory in module.DIRECTORIES[1:]:
        here = FIXTURES / directory.path
        changed[directory.path] = sorted(k for k in correct if (here / k).read_text() != correct[k])
        assert (here / "config.json").read_text() == (FIXTURES / "tiny-chatml" / "config.json").read_text()
    assert changed == {
        "broken/tiny-llama3-header": ["tokenizer_config.json"],
        "broken/tiny-ignores-add-generation-prompt": ["tokenizer_config.json"],
        "broken/tiny-eos-without-im-end": ["generation_config.json", "tokenizer_config.json"],
        "broken/tiny-no-system-prompt": ["tokenizer_config.json"],
    }
    eos = json.loads((FIXTURES / "broken" / "tiny-eos-without-im-end" / "generation_config.json").read_text())
    assert eos["eos_token_id"] == 1025  # <|end_of_text|>, not <|im_end|> (1027)


def test_the_default_template_writes_the_default_system_prompt_only_when_none_is_given() -> None:
    module = train_tiny()
    assert "You are a helpful assistant." in module.CHATML
    assert "You are a helpful assistant." not in module.build.CHATML
