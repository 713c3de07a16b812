"""The hostile corpus (tests/hostile_cases.py) as a table: each case, what templatecheck answered, how long.

    python benchmarks/hostile_table.py

Templates run with a 1 s render bound (as in the tests), through the check that must catch them; bad inputs
through load_model. Prints a Markdown table.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"

from templatecheck.checks import REGISTRY  # noqa: E402
from templatecheck.errors import TemplatecheckError  # noqa: E402
from templatecheck.model import load_model  # noqa: E402
from templatecheck.render import RenderError  # noqa: E402
from tests.hostile_cases import INPUTS, TEMPLATES  # noqa: E402
from tests.test_hostile import build_input, hostile_subject  # noqa: E402


def main() -> None:
    hostile_subject("{{ 'warm-up' }}")  # loads the tokenizer (and transformers) before anything is timed
    print("| case | answer | time |")
    print("|---|---|---|")
    for case in TEMPLATES:
        start = time.perf_counter()
        target = hostile_subject(case.source)
        try:
            target.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
            kind = "renders"
        except RenderError as error:
            kind = error.kind
        result = REGISTRY[case.check](target)
        elapsed = time.perf_counter() - start
        first = result.message.split("\n")[0][:90]
        print(f"| {case.name} | {kind}; {case.check} {result.outcome.value}: {first} | {elapsed:.2f} s |")
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    for case in INPUTS:
        with tempfile.TemporaryDirectory() as tmp:
            huggingface_hub.constants.HF_HUB_CACHE = str(Path(tmp) / "empty-cache")
            model_arg, template_arg = build_input(case, Path(tmp))
            start = time.perf_counter()
            try:
                _ = load_model(model_arg, chat_template=template_arg).tokenizer
                answer = "loaded (unexpected)"
            except TemplatecheckError as error:
                answer = str(error)[:110]
            elapsed = time.perf_counter() - start
        print(f"| {case.name} | error: {answer} | {elapsed:.2f} s |")


if __name__ == "__main__":
    main()
