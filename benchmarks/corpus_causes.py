"""Failed findings per cause key over a template corpus, and a seeded random sample of them to read.

    python benchmarks/corpus_causes.py [CORPUS_DIR] [--examples N] [--sample 30] [--seed S] [--out FILE]
        [--only TEMPLATE] [--check NAME]

Each corpus template is tested with a small byte-level BPE tokenizer (the one of ``fixtures/hermes-3-tiny``)
plus that template's own control tokens, added as special tokens, and with the corpus entry's BOS and EOS
when it names them: a tokenizer that fits the template, as the model's own would. Only the template and
reference layers run (the tokenizer layer would judge the stand-in tokenizer, not the template). Prints the
count of failed findings per cause, then writes the sample (template, cause, the finding's first lines) to
``--out`` for reading one by one. An exception escaping a check is an error of ours: the script exits 1.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.checks import REGISTRY  # noqa: E402
from templatecheck.checks.tokenizer import CONTROL_SHAPES  # noqa: E402
from templatecheck.model import Model, ModelRef, Subject, Template  # noqa: E402
from templatecheck.options import Options  # noqa: E402
from templatecheck.result import Layer, Outcome  # noqa: E402

BASE = ROOT / "fixtures" / "hermes-3-tiny"
LAYERS = (Layer.TEMPLATE, Layer.REFERENCE)


def entries(folder: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, source, entry)`` for every template of the corpus (named templates as ``file#name``)."""
    found = []
    for file in sorted(folder.glob("*.json")):
        entry = json.loads(file.read_text(encoding="utf-8"))
        named = entry.get("chat_template")
        named = {"default": named} if isinstance(named, str) else dict(named or {})
        found += [(f"{file.stem}#{name}", str(source), entry) for name, source in named.items()]
    return found


def tokenizer_dir(source: str, entry: dict[str, Any], into: Path) -> Path:
    """A copy of the base tokenizer with the template's control tokens and the entry's BOS/EOS added."""
    tokenizer = json.loads((BASE / "tokenizer.json").read_text())
    config = json.loads((BASE / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    known = {t["content"] for t in tokenizer["added_tokens"]}
    wanted = sorted({t for shape in CONTROL_SHAPES for t in shape.findall(source)})
    for role in ("bos_token", "eos_token"):
        value = entry.get(role)
        if isinstance(value, str) and value:
            wanted.append(value)
            config[role] = value
    next_id = max(t["id"] for t in tokenizer["added_tokens"]) + 1
    for text in dict.fromkeys(wanted):
        if text not in known:
            tokenizer["added_tokens"].append(
                {"id": next_id, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
            )  # fmt: skip
            known.add(text)
            next_id += 1
    into.mkdir(parents=True, exist_ok=True)
    (into / "tokenizer.json").write_text(json.dumps(tokenizer))
    config.pop("added_tokens_decoder", None)
    (into / "tokenizer_config.json").write_text(json.dumps(config))
    return into


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared" / "corpus" / "templates"))
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--sample", type=int, default=30)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--out", default="corpus-sample.md")
    parser.add_argument("--only", action="append", default=[], help="a template name (repeatable)")
    parser.add_argument("--check", action="append", default=[], help="run only this check (repeatable)")
    args = parser.parse_args()
    options = Options(examples=args.examples)
    failed: list[tuple[str, str, str, str]] = []
    per_cause: Counter[str] = Counter()
    warned: Counter[str] = Counter()
    errors = 0
    start = time.perf_counter()
    templates = [e for e in entries(Path(args.corpus)) if not args.only or e[0] in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, source, entry) in enumerate(templates):
            directory = tokenizer_dir(source, entry, Path(tmp) / f"t{i}")
            model = _model(directory, name, source)
            subject = Subject(model, model.templates[name], options)
            for check in REGISTRY.values():
                if check.layer not in LAYERS or (args.check and check.name not in args.check):
                    continue
                try:
                    result = check(subject)
                except Exception:
                    errors += 1
                    print(f"ERROR OF OURS in {check.name} on {name}:\n{traceback.format_exc()}")
                    continue
                for f in result.findings:
                    if f.outcome is Outcome.FAILED:
                        per_cause[f.cause] += 1
                        failed.append((name, check.name, f.cause, f.text))
                    elif f.outcome is Outcome.WARNING:
                        warned[f.cause] += 1
    elapsed = time.perf_counter() - start
    print(f"{len(templates)} templates, layers {', '.join(x.value for x in LAYERS)}, examples={args.examples}, "
          f"{elapsed:.0f} s; {len(failed)} failed findings, errors of ours: {errors}")  # fmt: skip
    print("| cause | failed | warning |\n|---|---|---|")
    for cause in sorted(set(per_cause) | set(warned), key=lambda c: (-per_cause[c], -warned[c], c)):
        print(f"| `{cause}` | {per_cause[cause]} | {warned[cause]} |")
    drawn = random.Random(args.seed).sample(failed, min(args.sample, len(failed)))
    lines = [f"# {len(drawn)} failed findings drawn at random (seed {args.seed}) of {len(failed)}", ""]
    for k, (name, check, cause, text) in enumerate(drawn, 1):
        body = "\n".join(text.split("\n")[:14])
        lines += [f"## {k}. {name} — `{cause}` ({check})", "", "```text", body, "```", ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"sample: {args.out}")
    return 1 if errors else 0


def _model(directory: Path, name: str, source: str) -> Model:
    return Model(
        ref=ModelRef(name, path=directory),
        directory=directory,
        templates={name: Template(name, source, name)},
    )


if __name__ == "__main__":
    sys.exit(main())
