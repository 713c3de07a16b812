"""Run every check over every template of a template corpus, paired with one tokenizer, and count outcomes.

    python benchmarks/corpus_sweep.py [CORPUS_DIR] [TOKENIZER_DIR] [--examples N] [--show CHECK]

Defaults: ../shared/corpus/templates with fixtures/hermes-3-tiny. Prints a table check x outcome, the wall
time, and with --show the findings of one check. An exception escaping a check is an error of ours: it is
counted and printed, and the script exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.checks import REGISTRY  # noqa: E402
from templatecheck.corpus import corpus_model  # noqa: E402
from templatecheck.model import Subject  # noqa: E402
from templatecheck.options import Options  # noqa: E402
from templatecheck.result import Outcome  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared" / "corpus" / "templates"))
    parser.add_argument("tokenizer", nargs="?", default=str(ROOT / "fixtures" / "hermes-3-tiny"))
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--show", action="append", default=[])
    args = parser.parse_args()
    model = corpus_model(Path(args.corpus), Path(args.tokenizer))
    options = Options(examples=args.examples)
    counts: Counter[tuple[str, Outcome]] = Counter()
    errors = 0
    shown: list[str] = []
    start = time.perf_counter()
    for template in model.templates.values():
        subject = Subject(model, template, options)
        for check in REGISTRY.values():
            try:
                result = check(subject)
            except Exception:
                errors += 1
                print(f"ERROR OF OURS in {check.name} on {template.name}:\n{traceback.format_exc()}")
                continue
            counts[check.name, result.outcome] += 1
            if check.name in args.show and result.outcome in (Outcome.FAILED, Outcome.WARNING):
                first = result.message.split("\n")[0]
                shown.append(f"{result.outcome.value:8} {template.name}: {first[:160]}")
    elapsed = time.perf_counter() - start
    outcomes = [o for o in Outcome if o is not Outcome.ERROR]
    print(
        f"{len(model.templates)} templates, {len(REGISTRY)} checks, examples={args.examples}, {elapsed:.1f} s"
    )
    print("| check | " + " | ".join(o.value for o in outcomes) + " |")
    print("|---" * (len(outcomes) + 1) + "|")
    for name in REGISTRY:
        print(f"| {name} | " + " | ".join(str(counts[name, o]) for o in outcomes) + " |")
    print(f"errors of ours: {errors}")
    for line in shown:
        print(line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
