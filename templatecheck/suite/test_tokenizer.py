"""Tokenizer layer: what the model receives once the rendering is tokenized."""

from templatecheck.checks import tokenizer
from templatecheck.plugin import CheckRunner


def test_control_tokens(tc: CheckRunner) -> None:
    tc.run(tokenizer.control_tokens)


def test_double_bos(tc: CheckRunner) -> None:
    tc.run(tokenizer.double_bos)


def test_end_of_turn(tc: CheckRunner) -> None:
    tc.run(tokenizer.end_of_turn)


def test_round_trip(tc: CheckRunner) -> None:
    tc.run(tokenizer.round_trip)


def test_control_token_injection(tc: CheckRunner) -> None:
    tc.run(tokenizer.control_token_injection)
