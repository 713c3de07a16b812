"""Run every check over every template of a template corpus, paired with one tokenizer, and count outcomes.

    python benchmarks/corpus_sweep.py [CORPUS_DIR] [TOKENIZER_DIR] [--examples N] [--show CHECK] [--jobs N]

Defaults: ../shared/corpus/templates with fixtures/hermes-3-tiny, the default example budget (``--examples``
as ``--tc-examples``). Prints a table check x outcome, with each check's wall time per template (the first
check to need a template's capabilities pays for learning them); the time loading the tokenizer took, and
the sweep's wall time beyond it, in all and per template (mean and median), with the CPU time of this
process and of its children (the render worker, Node); with --show the findings of one check. An exception
escaping a check is an error of ours: it is counted and printed, and the script exits 1. The checks run as
the suite runs them (:meth:`Session.run`: a template with the text of one checked before gets its results). With ``--jobs N`` the
templates are spread over N processes, one template at a time as ``pytest -n N`` spreads a folder of them,
each with its own render worker and tokenizer; the sweep's time is then the longest lane's. The render worker
loads the compiled templates an earlier run kept (``~/.cache/templatecheck/compiled/``): remove that folder, or
point ``TEMPLATECHECK_CACHE_DIR`` at an empty one, to measure a first run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.checks import REGISTRY  # noqa: E402
from templatecheck.corpus import corpus_model  # noqa: E402
from templatecheck.options import Options  # noqa: E402
from templatecheck.result import Outcome  # noqa: E402
from templatecheck.session import Session  # noqa: E402


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


@dataclass
class Tally:
    """What one lane of the sweep saw."""

    templates: int = 0
    loading: float = 0.0
    took: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    counts: Counter[tuple[str, Outcome]] = field(default_factory=Counter)
    spent: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    cpu_here: float = 0.0
    cpu_children: float = 0.0


def lane(corpus: str, tokenizer: str, examples: int, show: list[str], index: int, lanes: int) -> Tally:
    """Every check on the templates ``index``, ``index + lanes``, ... of the corpus, in this process."""
    model = corpus_model(Path(corpus), Path(tokenizer))
    options = Options(examples=examples)
    tally = Tally(templates=len(model.templates))
    start = time.perf_counter()
    model.tokenizer  # noqa: B018 (loaded here, so that the sweep's time is beyond it)
    tally.loading = time.perf_counter() - start
    cpu = _cpu()
    session = Session([model.ref.text], options, loaded={model.ref.text: model})
    for template in list(model.templates.values())[index::lanes]:
        began = time.perf_counter()
        for check in REGISTRY.values():
            ran = time.perf_counter()
            result = session.run(check, model, template.name)
            tally.spent[check.name] += time.perf_counter() - ran
            if result.outcome is Outcome.ERROR:
                tally.errors.append(f"ERROR in {check.name} on {template.name}:\n{result.message}")
                continue
            tally.counts[check.name, result.outcome] += 1
            if check.name in show and result.outcome in (Outcome.FAILED, Outcome.WARNING):
                first = result.message.split("\n")[0]
                tally.shown.append(f"{result.outcome.value:8} {template.name}: {first[:160]}")
        tally.took.append(time.perf_counter() - began)
        tally.names.append(template.name)
    tally.cpu_here, tally.cpu_children = (after - before for after, before in zip(_cpu(), cpu, strict=True))
    return tally


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared" / "corpus" / "templates"))
    parser.add_argument("tokenizer", nargs="?", default=str(ROOT / "fixtures" / "hermes-3-tiny"))
    parser.add_argument("--examples", type=int, default=Options.examples)
    parser.add_argument("--show", action="append", default=[])
    parser.add_argument(
        "--jobs", type=int, default=1, help="lanes (processes), as pytest -n spreads templates"
    )
    args = parser.parse_args()
    work = (args.corpus, args.tokenizer, args.examples, args.show)
    began = time.perf_counter()
    if args.jobs <= 1:
        tallies = [lane(*work, 0, 1)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
            tallies = list(
                pool.map(lane, *zip(*[(*work, i, args.jobs) for i in range(args.jobs)], strict=True))
            )
    wall = time.perf_counter() - began
    took = [t for tally in tallies for t in tally.took]
    counts = sum((t.counts for t in tallies), Counter())
    spent = sum((t.spent for t in tallies), Counter())
    count = max(1, len(took))
    loading = max(t.loading for t in tallies)
    sweep = max(sum(t.took) for t in tallies)  # the lanes run side by side once loaded
    own = sum(t.cpu_here for t in tallies)
    children = sum(t.cpu_children for t in tallies)
    lanes = f", {args.jobs} lanes side by side" if args.jobs > 1 else ""
    print(
        f"{tallies[0].templates} templates, {len(REGISTRY)} checks, examples={args.examples}{lanes}: tokenizer "
        f"loaded in {loading:.1f} s, then {sweep:.1f} s ({sweep / count * 1000:.0f} ms per template; one "
        f"template takes {sum(took) / count * 1000:.0f} ms, median {statistics.median(took or [0.0]) * 1000:.0f} ms;"
        f" CPU {own / count * 1000:.0f} ms here and {children / count * 1000:.0f} ms in the render worker and "
        f"Node per template); {wall:.1f} s in all"
    )
    outcomes = [o for o in Outcome if o is not Outcome.ERROR]
    print("| check | " + " | ".join(o.value for o in outcomes) + " | ms per template |")
    print("|---" * (len(outcomes) + 2) + "|")
    for name in REGISTRY:
        cells = " | ".join(str(counts[name, o]) for o in outcomes)
        print(f"| {name} | {cells} | {spent[name] / count * 1000:.1f} |")
    errors = [e for t in tallies for e in t.errors]
    for error in errors:
        print(error)
    print(f"errors of ours: {len(errors)}")
    names = [n for t in tallies for n in t.names]
    slowest = sorted(zip(took, names, strict=True), reverse=True)[:8]
    print("slowest: " + ", ".join(f"{name} {seconds:.1f} s" for seconds, name in slowest))
    for line in (line for t in tallies for line in t.shown):
        print(line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
