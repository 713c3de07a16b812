"""The engine layer over a corpus of real templates, and what it costs on one model against the static layers.

    python benchmarks/engine_corpus.py [CORPUS_DIR] [--tokenizer DIR] [--examples N] [--model DIR] [--limit N]

(defaults: ../shared/corpus, the Llama 3.1 tokenizer of ../shared/models, 10 drawn conversations per template,
the cost measured on ../shared/models/llama-3.1-8b-instruct with the suite's default 100)

1. Per engine installed (MiniJinja as TGI sets it up, @huggingface/jinja): every corpus template whose plain
   conversations render in transformers, rendered on the plain conversations and a drawn sample, and each
   rendering compared with transformers'. A template is *identical* (every conversation), *failing* (the
   engine cannot parse or run it on some conversation), or *different*, counted per group of what differs.
2. The ten most common root causes (engine, group, construct) with an example template and its detail.
3. The cost of the engine layer (``minijinja``, ``hfjs``, ``portability``) on one model against the static
   layers (template, tokenizer, reference) measured in the same run, as a ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.checks import REGISTRY  # noqa: E402
from templatecheck.checks.engine import Difference, cases, compare, construct_hits, render_pairs  # noqa: E402
from templatecheck.corpus import corpus_model  # noqa: E402
from templatecheck.engines import ENGINES, Engine  # noqa: E402
from templatecheck.gates import parse_error, plain_error  # noqa: E402
from templatecheck.model import Subject, load_model  # noqa: E402
from templatecheck.options import Options  # noqa: E402
from templatecheck.render import RenderError  # noqa: E402
from templatecheck.result import Layer  # noqa: E402

SHARED = ROOT.parent / "shared"
FAILING = ("fails", "string_method", "loop_variable")


def survey(subject: Subject, engine: Engine) -> tuple[str, list[Difference]]:
    """``identical``, ``failing`` or ``different`` for one template, and the root causes seen."""
    hits = construct_hits(subject.template.source)
    batch = cases(subject)
    found: dict[tuple[str, int], Difference] = {}
    failing = False
    for case, pair in zip(batch, render_pairs(subject, engine, batch), strict=True):
        failing |= isinstance(pair[1], RenderError) and not isinstance(pair[0], RenderError)
        for d in compare(subject, hits, engine, case, pair):
            found.setdefault((d.group, d.line), d)
    verdict = "failing" if failing else ("different" if found else "identical")
    return verdict, list(found.values())


def corpus_tables(corpus: Path, tokenizer: Path, examples: int, limit: int | None) -> None:
    model = corpus_model(corpus / "templates", tokenizer)
    names = sorted(model.templates)[:limit]
    engines = [e for e in ENGINES if e.missing() is None]
    for engine in ENGINES:
        if engine.missing() is not None:
            print(f"{engine.name}: skipped ({engine.missing()})")
    verdicts: dict[str, Counter[str]] = {e.name: Counter() for e in engines}
    groups: dict[str, Counter[str]] = {e.name: Counter() for e in engines}
    causes: Counter[tuple[str, str, str]] = Counter()
    example: dict[tuple[str, str, str], tuple[str, Difference]] = {}
    skipped = 0
    start = time.perf_counter()
    for name in names:
        subject = Subject(model, model.templates[name], Options(examples=examples))
        if parse_error(subject) is not None or plain_error(subject) is not None:
            skipped += 1
            continue
        for engine in engines:
            verdict, found = survey(subject, engine)
            verdicts[engine.name][verdict] += 1
            for group in sorted({d.group for d in found}):
                groups[engine.name][group] += 1
            for d in found:
                key = (engine.name, d.group, d.construct)
                causes[key] += 1
                example.setdefault(key, (name, d))
    seconds = time.perf_counter() - start
    compared = len(names) - skipped
    print(f"\n{compared} templates compared ({skipped} skipped: no plain conversation renders in transformers), "
          f"{examples} drawn conversations each, {seconds:.0f} s\n")  # fmt: skip
    for engine in engines:
        print(f"## {engine.title}\n")
        print("| verdict | templates |\n| --- | --- |")
        for verdict in ("identical", "different", "failing"):
            print(f"| {verdict} | {verdicts[engine.name][verdict]} |")
        print("\n| group (templates showing it) | templates |\n| --- | --- |")
        for group, count in groups[engine.name].most_common():
            print(f"| {group} | {count} |")
        print()
    print("## The ten most common root causes\n")
    print(
        "| engine | group | construct | templates | example | detail |\n| --- | --- | --- | --- | --- | --- |"
    )
    for key, count in causes.most_common(10):
        name, d = example[key]
        detail = d.detail.replace("|", "\\|").replace("\n", " ")[:110]
        construct = key[2].replace("|", "\\|")
        print(f"| {key[0]} | {key[1]} | `{construct}` | {count} | {name} | {detail} |")


def cost(model_dir: Path) -> None:
    """Wall time of the engine layer against the static layers on one model, in one run."""
    model = load_model(str(model_dir))
    subject = Subject(model, model.templates["default"], Options())
    static = [c for c in REGISTRY.values() if c.layer in (Layer.TEMPLATE, Layer.TOKENIZER, Layer.REFERENCE)]
    engine = [c for c in REGISTRY.values() if c.layer is Layer.ENGINE]
    start = time.perf_counter()
    for check in static:
        check(subject)
    static_s = time.perf_counter() - start
    timings = {}
    for check in engine:
        start = time.perf_counter()
        result = check(subject)
        timings[check.name] = (time.perf_counter() - start, result.outcome.value)
    engine_s = sum(t for t, _ in timings.values())
    print(
        f"\n## Cost on {model_dir.name} (default template, {subject.options.examples} drawn conversations)\n"
    )
    print(f"static layers ({len(static)} checks): {static_s:.2f} s")
    for name, (seconds, outcome) in timings.items():
        print(f"  {name}: {seconds:.2f} s ({outcome})")
    print(
        f"engine layer ({len(engine)} checks): {engine_s:.2f} s; ratio engine/static = {engine_s / static_s:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", nargs="?", type=Path, default=SHARED / "corpus")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "models" / "llama-3.1-8b-instruct")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "llama-3.1-8b-instruct")
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="only the first N templates")
    args = parser.parse_args()
    corpus_tables(args.corpus, args.tokenizer, args.examples, args.limit)
    cost(args.model)


if __name__ == "__main__":
    main()
