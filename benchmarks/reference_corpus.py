"""What the ``reference`` check says about every template of the corpus, and the goldens against the references.

    python benchmarks/reference_corpus.py [CORPUS_DIR] [--tokenizer DIR] [--examples N] [--sample N] [--seed S]

(defaults: ../shared/corpus, the Llama 3.1 tokenizer of ../shared/models, 10 drawn conversations)

1. Templates: the ``reference`` check itself on every corpus template (``templates/*.json``), each paired with
   one tokenizer (a Llama 3 byte-level BPE tokenizer by default, as a corpus sweep pairs them): the family it
   detects from the template, its outcome and its causes. A template of a family without a reference is
   skipped with the family it looks like.
2. Goldens: every golden (``goldens/**/*.json``) that the corpus reproduced with plain Jinja (validation
   ``PASS``), of a template of a family the check compared, rendered by that family's reference with the
   golden's own inputs (messages, tools, BOS/EOS, extra variables, date) and compared with its expected text.

Prints one line per template (outcome, family, causes) and per golden, tables per outcome, family and cause,
``--sample N`` failed templates in full (drawn with ``--seed``) for reading, and the time taken.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.checks.reference import reference, reference_policy  # noqa: E402
from templatecheck.corpus import corpus_model  # noqa: E402
from templatecheck.formats import Unsupported, get  # noqa: E402
from templatecheck.formats.compare import Policy, comparable  # noqa: E402
from templatecheck.formats.detect import choose  # noqa: E402
from templatecheck.model import Subject  # noqa: E402
from templatecheck.options import Options  # noqa: E402
from templatecheck.result import CheckResult, Outcome  # noqa: E402

SHARED = ROOT.parent / "shared"
LLAMA3_TOKENIZER = SHARED / "models" / "llama-3.1-8b-instruct"


@dataclass(frozen=True)
class Row:
    """The ``reference`` check on one corpus template."""

    template: str
    #: The format compared with, or ``none``.
    family: str
    result: CheckResult
    #: The template's policy the reference followed (``None`` without a format).
    policy: Policy | None = None

    @property
    def outcome(self) -> str:
        return self.result.outcome.value

    @property
    def causes(self) -> list[str]:
        """The causes of the findings, the check's own and those it notes for other checks, in order."""
        return [f.cause for f in self.result.findings if f.cause]

    def failing(self) -> list[str]:
        return [f.cause for f in self.result.findings if f.outcome is Outcome.FAILED]

    def why(self) -> str:
        """The first line of the first finding of the outcome: what the row is about."""
        return self.result.message.split("\n", 1)[0] if self.result.message else ""


def survey(corpus: Path, examples: int = 10, tokenizer: Path = LLAMA3_TOKENIZER) -> list[Row]:
    """The ``reference`` check on every corpus template, with ``tokenizer``'s tokenizer."""
    model = corpus_model(corpus / "templates", tokenizer)
    rows = []
    for template in model.templates.values():
        subject = Subject(model, template, Options(examples=examples))
        choice = choose(model, subject.options, template)
        result = reference(subject)
        rule = reference_policy(subject, choice.format) if choice.format is not None else None
        rows.append(Row(template.name, choice.name, result, rule))
    return rows


@dataclass(frozen=True)
class Golden:
    """One golden rendered by its template's reference."""

    golden: str
    family: str
    verdict: str  # "agrees", "differs", "not comparable"
    why: str = ""


def golden_one(data: dict[str, Any], family: str, policy: Policy | None = None) -> tuple[str, str]:
    """``(verdict, why)`` for one golden rendered by ``family``'s reference, following the template's
    ``policy`` (its default system prompt) and the wording the format leaves free as the golden writes it."""
    if "tool_use" in data["template_ref"].partition("#")[2] and not data.get("tools"):
        return (
            "not comparable",
            "a tool_use template rendered without tools (transformers selects it only with tools)",
        )
    date = data.get("strftime_now_date")
    bos = data.get("bos_token") or ""
    fmt = get(family)
    eos = data.get("eos_token") or ""
    free = {slot.variable: slot.read(data["expected"], eos) for slot in fmt.free}
    variables = {
        **(policy.renderer_variables() if policy is not None else {}),
        **{k: v for k, v in free.items() if v is not None},
    }
    messages = list(data["messages"])
    default = policy.default_system if policy is not None else None
    if default is not None and not any(m.get("role") == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": default})
    try:
        rendered = fmt.render(
            messages,
            add_generation_prompt=bool(data.get("add_generation_prompt")),
            tools=data.get("tools"),
            bos_token=bos,
            eos_token=eos,
            **({"now": datetime.fromisoformat(date)} if date else {}),
            **{**variables, **(data.get("extra_context") or {})},
        )
    except Unsupported as why:
        return "not comparable", str(why)
    expected, got = comparable(data["expected"], bos), comparable(rendered, bos)
    if expected == got:
        return "agrees", ""
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
        min(len(expected), len(got)),
    )
    return (
        "differs",
        f"golden {expected[max(0, at - 25) : at + 25]!r} / reference {got[max(0, at - 25) : at + 25]!r}",
    )


def goldens(corpus: Path, rows: list[Row]) -> list[Golden]:
    """The plain-Jinja goldens of templates the check compared, rendered by the family it chose."""
    families = {r.template: (r.family, r.policy) for r in rows if r.family != "none"}
    out = []
    for file in sorted((corpus / "goldens").rglob("*.json")):
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("validation", {}).get("status") != "PASS" or "expected" not in data:
            continue
        ref = data["template_ref"] if "#" in data["template_ref"] else data["template_ref"] + "#default"
        if ref not in families:
            continue
        family, policy = families[ref]
        verdict, why = golden_one(data, family, policy)
        out.append(Golden(str(file.relative_to(corpus / "goldens")), family, verdict, why))
    return out


def table(
    verdicts: list[tuple[str, str]], columns: tuple[str, ...] = ("agrees", "differs", "not comparable")
) -> list[str]:
    """``(family, verdict)`` pairs counted per family."""
    lines = [f"{'family':18} " + " ".join(f"{c[:8]:>8}" for c in columns)]
    for family in sorted({f for f, _ in verdicts}):
        counts = Counter(v for f, v in verdicts if f == family)
        lines.append(f"{family:18} " + " ".join(f"{counts[c]:>8}" for c in columns))
    return lines


OUTCOMES = ("passed", "warning", "failed", "skipped", "error")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", nargs="?", default=str(SHARED / "corpus"))
    parser.add_argument(
        "--tokenizer", default=str(LLAMA3_TOKENIZER), help="tokenizer directory (Llama 3.1's)"
    )
    parser.add_argument("--examples", type=int, default=10, help="drawn conversations per template (10)")
    parser.add_argument("--sample", type=int, default=0, help="print N failed templates in full")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the --sample draw")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    start = time.perf_counter()
    rows = survey(corpus, args.examples, Path(args.tokenizer))
    checked = goldens(corpus, rows)
    elapsed = time.perf_counter() - start
    for row in sorted(rows, key=lambda r: (r.outcome, r.family, r.template)):
        print(f"{row.outcome:8} {row.family:18} {row.template}  {' '.join(row.causes) or row.why()[:120]}")
    print("\ntemplates by outcome:\n" + "\n".join(table([(r.family, r.outcome) for r in rows], OUTCOMES)))
    causes = Counter(c for r in rows for c in r.causes)
    print("\ncauses (templates):\n" + "\n".join(f"  {n:4} {c}" for c, n in causes.most_common()))
    skips = Counter(r.why().split(" (it writes")[0] for r in rows if r.outcome == "skipped")
    print("\nskipped because:\n" + "\n".join(f"  {n:4} {why[:140]}" for why, n in skips.most_common()))
    failed = [r for r in rows if r.outcome == "failed"]
    print(f"\n{len(failed)} of {len(rows)} templates fail the reference check")
    for row in sorted(
        random.Random(args.seed).sample(failed, min(args.sample, len(failed))), key=lambda r: r.template
    ):
        print(f"\n===== {row.template} ({row.family})\n{row.result.message}")
    print()
    for golden in sorted(checked, key=lambda g: (g.family, g.verdict, g.golden)):
        print(f"{golden.family:18} {golden.verdict:15} {golden.golden}  {golden.why}")
    print("\ngoldens:\n" + "\n".join(table([(g.family, g.verdict) for g in checked])))
    print(f"\n{len(rows)} templates and {len(checked)} goldens in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
