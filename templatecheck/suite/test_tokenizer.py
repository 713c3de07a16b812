"""Tokenizer layer: what the model receives once the rendering is tokenized."""

from templatecheck.checks import tokenizer
from templatecheck.plugin import CheckRunner


def test_double_bos(tc: CheckRunner) -> None:
    tc.run(tokenizer.double_bos)
