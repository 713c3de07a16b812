"""The hostile corpus (tests/hostile_cases.py) as a table: each case, what templatecheck answered, how long.

    python benchmarks/hostile_table.py

Templates run with a 1 s render bound (as in the tests), through the check that must catch them; bad inputs
through load_model. Prints a Markdown table per case (answer, time, growth of this process's peak memory),
then one row per class of cases: how many, how many were answered as the corpus expects, the slowest, and the
largest peak-memory growth.
"""

from __future__ import annotations

import os
import resource
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
from tests.hostile_cases import CANARY_VALUE, INPUTS, MODEL_DIRS, TEMPLATES, WORKER_TEMPLATES  # noqa: E402
from tests.test_hostile import _load_and_check, build_input, build_model_dir, hostile_subject  # noqa: E402


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    hostile_subject("{{ 'warm-up' }}").render([])  # loads the tokenizer, transformers and the worker first
    classes: dict[str, list[tuple[bool, float, float]]] = {}
    print("| case | answer | time | peak memory growth |")
    print("|---|---|---|---|")
    for group, cases in (
        ("templates, in-process bounds", TEMPLATES),
        ("templates, worker limits", WORKER_TEMPLATES),
    ):
        for case in cases:
            peak = _peak_mb()
            start = time.perf_counter()
            target = hostile_subject(case.source)
            try:
                target.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
                kind = None
            except RenderError as error:
                kind = error.kind
            result = REGISTRY[case.check](target)
            elapsed, grown = time.perf_counter() - start, _peak_mb() - peak
            contained = kind == case.kind and result.outcome.value == "failed"
            classes.setdefault(group, []).append((contained, elapsed, grown))
            first = result.message.split("\n")[0][:90]
            print(
                f"| {case.name} | {kind or 'renders'}; {case.check} {result.outcome.value}: {first} "
                f"| {elapsed:.2f} s | {grown:.0f} MB |"
            )
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    for case in INPUTS:
        with tempfile.TemporaryDirectory() as tmp:
            huggingface_hub.constants.HF_HUB_CACHE = str(Path(tmp) / "empty-cache")
            model_arg, template_arg = build_input(case, Path(tmp))
            start = time.perf_counter()
            peak = _peak_mb()
            try:
                _ = load_model(model_arg, chat_template=template_arg).tokenizer
                answer, contained = "loaded (unexpected)", False
            except TemplatecheckError as error:
                answer, contained = str(error)[:110], case.message in str(error)
            elapsed, grown = time.perf_counter() - start, _peak_mb() - peak
        classes.setdefault("bad inputs", []).append((contained, elapsed, grown))
        print(f"| {case.name} | error: {answer} | {elapsed:.2f} s | {grown:.0f} MB |")
    for case in MODEL_DIRS:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "outside").mkdir()
            (Path(tmp) / "outside" / "secret.txt").write_text(CANARY_VALUE)
            (Path(tmp) / "outside" / "secret.jinja").write_text(CANARY_VALUE)
            try:
                path = build_model_dir(case, Path(tmp) / "outside")
            except BaseException:  # a case this user may not build (a device node)
                continue
            peak = _peak_mb()
            start = time.perf_counter()
            said, outcome = _load_and_check(case, path)
            elapsed, grown = time.perf_counter() - start, _peak_mb() - peak
        expected = (
            outcome is None if case.check is None else outcome is not None and outcome.value == case.outcome
        )
        contained = expected and case.message in said and CANARY_VALUE not in said
        classes.setdefault("model directories", []).append((contained, elapsed, grown))
        answer = said.split("\n")[0][:110]
        print(
            f"| {case.name} | {outcome.value if outcome else 'error'}: {answer} | {elapsed:.2f} s | {grown:.0f} MB |"
        )
    print()
    print("| class | cases | contained | slowest | largest peak memory growth |")
    print("|---|---|---|---|---|")
    for group, rows in classes.items():
        print(
            f"| {group} | {len(rows)} | {sum(c for c, _, _ in rows)} | {max(t for _, t, _ in rows):.2f} s "
            f"| {max(g for _, _, g in rows):.0f} MB |"
        )


if __name__ == "__main__":
    main()
