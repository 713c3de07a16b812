"""Which real chat templates agree with their family's reference format, and where the others differ.

    python benchmarks/reference_corpus.py [CORPUS_DIR] [--examples N]     (default: ../shared/corpus)

1. Templates: for every template of the corpus (``templates/*.json``) whose family is detected from its
   text, the template and the family's reference render the same sample the ``reference`` check uses (text
   only: a corpus template has no tokenizer). A Mistral template of v3 or v7 is compared with both the
   SentencePiece and the Tekken variant, and reported under the one it agrees with more.
2. Goldens: every golden (``goldens/**/*.json``) that the corpus reproduced with plain Jinja (validation
   ``PASS``), of a template of a known family, rendered by the reference with the golden's own inputs
   (messages, tools, BOS/EOS, extra variables, date) and compared with the golden's expected text.

Prints one line per template and per golden (agrees, differs with the first differing text, or not
comparable and why), a table per family for each, and the time taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.formats import Evidence, Format, Unsupported, get  # noqa: E402
from templatecheck.formats.compare import Case, Comparison, cases, comparable, compare  # noqa: E402
from templatecheck.formats.detect import detect  # noqa: E402
from templatecheck.render import Renderer, RenderError  # noqa: E402

#: BOS/EOS per family for templates whose corpus entry does not state them.
SPECIAL = {
    "chatml": ("", "<|im_end|>"),
    "qwen2.5": ("", "<|im_end|>"),
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "gemma": ("<bos>", "<eos>"),
    "gemma3": ("<bos>", "<eos>"),
    "phi3": ("<s>", "<|endoftext|>"),
    "zephyr": ("<s>", "</s>"),
}
MISTRAL_SPECIAL = ("<s>", "</s>")


@dataclass(frozen=True)
class Row:
    """One corpus template compared with one format."""

    template: str
    family: str
    comparison: Comparison

    @property
    def verdict(self) -> str:
        if self.comparison.broken:
            return "broken"
        if not self.comparison.compared:
            return "not comparable"
        return "differs" if self.comparison.differences else "agrees"

    def why(self) -> str:
        """The first differing lines of the easiest-to-read difference."""
        if self.verdict != "differs":
            return self.comparison.skipped_summary() if self.verdict == "not comparable" else ""
        first = min(self.comparison.differences, key=lambda d: d.size)
        ref, tpl = first.reference, first.template
        at = next(
            (i for i, (a, b) in enumerate(zip(ref, tpl, strict=False)) if a != b), min(len(ref), len(tpl))
        )
        return f"{first.case.name}: reference {ref[max(0, at - 25) : at + 25]!r} / template {tpl[max(0, at - 25) : at + 25]!r}"


def templates(corpus: Path) -> Iterator[tuple[str, str, str | None, str | None]]:
    """``(label, source, bos, eos)`` for every template of the corpus."""
    for file in sorted((corpus / "templates").glob("*.json")):
        entry = json.loads(file.read_text(encoding="utf-8"))
        named = (
            entry["chat_template"]
            if isinstance(entry["chat_template"], dict)
            else {"default": entry["chat_template"]}
        )
        for name, source in named.items():
            yield f"{file.stem}#{name}", source, entry.get("bos_token"), entry.get("eos_token")


def _evidence(source: str) -> Evidence:
    """What detection can tell from a template alone: the control tokens it writes are the tokenizer's."""
    controls = {"[INST]", "[SYSTEM_PROMPT]"} if "[SYSTEM_PROMPT]" in source else set()
    if any(t in source for t in ("[AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]")):
        controls.add("[INST]")
    return Evidence(tokens=frozenset(controls), templates=(source,), tokenizer_kind="sentencepiece")


def candidates(source: str) -> list[Format]:
    found = detect(_evidence(source)).format
    if found is None:
        return []
    if found.name in ("mistral-v3", "mistral-v7"):
        return [found, get(found.name + "-tekken")]
    return [found]


def survey_one(label: str, source: str, bos: str | None, eos: str | None, examples: int) -> Row | None:
    formats = candidates(source)
    if not formats:
        return None
    renderer = Renderer(special_tokens={})
    sample = cases(examples, tool_calls="tools" in source or "tool_calls" in source)
    rows = []
    for fmt in formats:
        default_bos, default_eos = SPECIAL.get(fmt.name, MISTRAL_SPECIAL)
        special = {
            "bos_token": bos if bos is not None else default_bos,
            "eos_token": eos if eos is not None else default_eos,
        }

        def render(case: Case, special: dict[str, str] = special) -> str:
            tools = [dict(t) for t in case.tools] if case.tools else None
            messages = [dict(m) for m in case.messages]
            return renderer.render(
                source, messages, add_generation_prompt=case.add_generation_prompt, tools=tools, **special
            ).text

        rows.append(Row(label, fmt.name, compare(fmt, render, sample, special)))
    return min(rows, key=lambda r: (len(r.comparison.differences) - r.comparison.compared, r.family))


def survey(corpus: Path, examples: int = 20) -> list[Row]:
    """Every corpus template whose family is detected, compared with that family's reference."""
    rows = []
    for label, source, bos, eos in templates(corpus):
        try:
            row = survey_one(label, source, bos, eos, examples)
        except RenderError:
            continue
        if row is not None:
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Golden:
    """One golden rendered by its template's reference."""

    golden: str
    family: str
    verdict: str  # "agrees", "differs", "not comparable"
    why: str = ""


def _template_source(corpus: Path, ref: str) -> str:
    stem, _, variant = ref.partition("#")
    entry = json.loads((corpus / "templates" / f"{stem}.json").read_text(encoding="utf-8"))["chat_template"]
    return str(entry[variant or "default"] if isinstance(entry, dict) else entry)


def golden_one(data: dict[str, Any], family: str) -> tuple[str, str]:
    """``(verdict, why)`` for one golden rendered by ``family``'s reference."""
    if "tool_use" in data["template_ref"].partition("#")[2] and not data.get("tools"):
        return (
            "not comparable",
            "a tool_use template rendered without tools (transformers selects it only with tools)",
        )
    date = data.get("strftime_now_date")
    bos = data.get("bos_token") or ""
    try:
        rendered = get(family).render(
            data["messages"],
            add_generation_prompt=bool(data.get("add_generation_prompt")),
            tools=data.get("tools"),
            bos_token=bos,
            eos_token=data.get("eos_token") or "",
            **({"now": datetime.fromisoformat(date)} if date else {}),
            **(data.get("extra_context") or {}),
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
    """The plain-Jinja goldens of templates whose family the survey found, rendered by that family."""
    families = {r.template: r.family for r in rows}
    out = []
    for file in sorted((corpus / "goldens").rglob("*.json")):
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("validation", {}).get("status") != "PASS" or "expected" not in data:
            continue
        ref = data["template_ref"] if "#" in data["template_ref"] else data["template_ref"] + "#default"
        if ref not in families:
            continue
        verdict, why = golden_one(data, families[ref])
        out.append(Golden(str(file.relative_to(corpus / "goldens")), families[ref], verdict, why))
    return out


def table(verdicts: list[tuple[str, str]]) -> list[str]:
    """``(family, verdict)`` pairs counted per family."""
    lines = [f"{'family':18} {'agree':>5} {'differ':>6} {'n/c':>4}"]
    for family in sorted({f for f, _ in verdicts}):
        count = {
            v: sum(1 for f, w in verdicts if f == family and w == v)
            for v in ("agrees", "differs", "not comparable")
        }
        lines.append(f"{family:18} {count['agrees']:>5} {count['differs']:>6} {count['not comparable']:>4}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument(
        "--examples", type=int, default=20, help="drawn conversations per template (default 20)"
    )
    args = parser.parse_args()
    corpus = Path(args.corpus)
    start = time.perf_counter()
    rows = survey(corpus, args.examples)
    checked = goldens(corpus, rows)
    elapsed = time.perf_counter() - start
    for row in sorted(rows, key=lambda r: (r.family, r.verdict, r.template)):
        print(f"{row.family:18} {row.verdict:15} {row.template}  {row.why()}")
    print("\ntemplates:\n" + "\n".join(table([(r.family, r.verdict) for r in rows])))
    print()
    for golden in sorted(checked, key=lambda g: (g.family, g.verdict, g.golden)):
        print(f"{golden.family:18} {golden.verdict:15} {golden.golden}  {golden.why}")
    print("\ngoldens:\n" + "\n".join(table([(g.family, g.verdict) for g in checked])))
    print(f"\n{len(rows)} templates and {len(checked)} goldens compared in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
