"""Engine layer, GGUF: a GGUF --model against the model it was converted from (--tc-compare-to)."""

from templatecheck.checks import gguf
from templatecheck.plugin import CheckRunner


def test_gguf_matches_original(tc: CheckRunner) -> None:
    tc.run(gguf.gguf_matches_original)
