"""Run every check over every template of a template corpus, paired with one tokenizer, and count outcomes.

    python benchmarks/corpus_sweep.py [CORPUS_DIR] [TOKENIZER_DIR] [--examples N] [--show CHECK]

Defaults: ../shared/corpus/templates with fixtures/hermes-3-tiny, the default example budget (``--examples``
as ``--tc-examples``). Prints a table check x outcome, with each check's wall time per template (the first
check to need a template's capabilities pays for learning them); the time loading the tokenizer took, and
the sweep's wall time beyond it, in all and per template (mean and median), with the CPU time of this
process and of its children (the render worker, Node); with --show the findings of one check. An exception
escaping a check is an error of ours: it is counted and printed, and the script exits 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process, and of its live children (the render worker, Node: read from /proc, as
    they run for the whole sweep) and those that ended (forked tasks)."""
    here, ended = os.times()[:2], os.times()[2:4]
    ticks = os.sysconf("SC_CLK_TCK")
    live = 0.0
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if pid.isdigit() and int(fields[1]) == os.getpid():
            live += (int(fields[11]) + int(fields[12])) / ticks
    return sum(here), sum(ended) + live


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared" / "corpus" / "templates"))
    parser.add_argument("tokenizer", nargs="?", default=str(ROOT / "fixtures" / "hermes-3-tiny"))
    parser.add_argument("--examples", type=int, default=Options.examples)
    parser.add_argument("--show", action="append", default=[])
    args = parser.parse_args()
    model = corpus_model(Path(args.corpus), Path(args.tokenizer))
    options = Options(examples=args.examples)
    start = time.perf_counter()
    model.tokenizer  # noqa: B018 (loaded here, so that the sweep's time is beyond it)
    loading = time.perf_counter() - start
    cpu = _cpu()
    took: list[float] = []
    names: list[str] = []
    counts: Counter[tuple[str, Outcome]] = Counter()
    spent: Counter[str] = Counter()
    errors = 0
    shown: list[str] = []
    for template in model.templates.values():
        began = time.perf_counter()
        subject = Subject(model, template, options)
        for check in REGISTRY.values():
            ran = time.perf_counter()
            try:
                result = check(subject)
            except Exception:
                errors += 1
                print(f"ERROR OF OURS in {check.name} on {template.name}:\n{traceback.format_exc()}")
                continue
            finally:
                spent[check.name] += time.perf_counter() - ran
            counts[check.name, result.outcome] += 1
            if check.name in args.show and result.outcome in (Outcome.FAILED, Outcome.WARNING):
                first = result.message.split("\n")[0]
                shown.append(f"{result.outcome.value:8} {template.name}: {first[:160]}")
        took.append(time.perf_counter() - began)
        names.append(template.name)
    elapsed = sum(took)
    own, children = (after - before for after, before in zip(_cpu(), cpu, strict=True))
    outcomes = [o for o in Outcome if o is not Outcome.ERROR]
    count = max(1, len(took))
    print(
        f"{len(model.templates)} templates, {len(REGISTRY)} checks, examples={args.examples}: tokenizer loaded "
        f"in {loading:.1f} s, then {elapsed:.1f} s ({elapsed / count * 1000:.0f} ms per template, median "
        f"{statistics.median(took or [0.0]) * 1000:.0f} ms; CPU {own / count * 1000:.0f} ms here and "
        f"{children / count * 1000:.0f} ms in the render worker and Node per template)"
    )
    print("| check | " + " | ".join(o.value for o in outcomes) + " | ms per template |")
    print("|---" * (len(outcomes) + 2) + "|")
    for name in REGISTRY:
        cells = " | ".join(str(counts[name, o]) for o in outcomes)
        print(f"| {name} | {cells} | {spent[name] / count * 1000:.1f} |")
    print(f"errors of ours: {errors}")
    slowest = sorted(zip(took, names, strict=True), reverse=True)[:8]
    print("slowest: " + ", ".join(f"{name} {seconds:.1f} s" for seconds, name in slowest))
    for line in shown:
        print(line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
