"""What the generation layer costs, against a plain ``model.generate`` over the same batches.

    python benchmarks/bench_generation.py [MODEL_DIR] [--device DEVICE] [--template NAME] [--repeats N]
                                          (default: fixtures/tiny-chatml, its default template)

1. Loads the weights, timed apart: loading is not part of the verdict.
2. Time to verdict: one evaluation of the template, which every generation check reads: rendering and
   tokenizing the prompts of every variant, batched greedy generation, the likelihood pass, scoring.
3. Our batched greedy loop alone against ``model.generate(do_sample=False)`` over exactly the same rows,
   batches (left-padded, grouped by length), token budget and stop set; both must produce the same tokens.
   Generated tokens count each row up to and including its stop token.
4. ``pytest --model MODEL_DIR --tc-generate`` end to end in a subprocess, beside the same run without
   ``--tc-generate``.
Prints the figures and their ratios; best of ``--repeats`` for the in-process numbers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from templatecheck import probe  # noqa: E402
from templatecheck.model import Subject, load_model  # noqa: E402
from templatecheck.options import Options  # noqa: E402


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def generate_baseline(lm: probe.Loaded, plan: probe.Plan) -> list[list[int]]:
    """``model.generate`` over the batches our loop uses, each reply cut after its first stop token."""
    out: list[list[int]] = [[] for _ in plan.rows]
    for batch in probe._batches([len(r) for r in plan.rows]):
        ids, mask = probe._left_pad([plan.rows[i] for i in batch], plan.pad, lm.device)
        budget = max(plan.budgets[i] for i in batch)
        with torch.inference_mode():
            generated = lm.module.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=budget,
                do_sample=False,
                eos_token_id=list(plan.stop),
                pad_token_id=plan.pad,
            )
        for i, row in zip(batch, generated[:, ids.shape[1] :].tolist(), strict=True):
            row = row[: plan.budgets[i]]
            end = next((j + 1 for j, t in enumerate(row) if t in plan.stop), len(row))
            out[i] = row[:end]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", default=str(ROOT / "fixtures" / "tiny-chatml"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--template", default="default")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = load_model(args.model)
    subject = Subject(model, model.templates[args.template], Options(generate=True, device=args.device))
    start = time.perf_counter()
    lm = probe.load(model, args.device)
    load_s = time.perf_counter() - start
    _ = model.tokenizer

    def verdict() -> probe.Evaluation:
        return probe.run(probe.plan(subject), lm, model.tokenizer)

    verdict()  # warm-up: first calls of the kernels and of transformers' mask code
    verdict_s, evaluation = best_of(verdict, args.repeats)
    plan = probe.plan(subject)
    ours_s, ours = best_of(
        lambda: probe.greedy(lm, plan.rows, plan.budgets, plan.stop, plan.pad), args.repeats
    )
    generate_baseline(lm, plan)
    theirs_s, theirs = best_of(lambda: generate_baseline(lm, plan), args.repeats)
    same = ours == theirs
    tokens = sum(len(r) for r in ours)
    batches = len(probe._batches([len(r) for r in plan.rows]))

    def wall(extra: list[str]) -> float:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--model", args.model]
        command += extra + (["--tc-device", args.device] if args.device else [])
        begin = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
        return time.perf_counter() - begin

    static_run = min(wall([]) for _ in range(2))
    generate_run = min(wall(["--tc-generate"]) for _ in range(2))

    def show(label: str, value: str) -> None:
        print(f"{label:<44}{value}")

    print(f"model: {args.model} [{args.template}] on {lm.device} ({str(lm.dtype).removeprefix('torch.')}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"rows: {len(plan.rows)} prompts ({len(plan.variants)} distinct variants x {len(plan.probes)} probes"
          f" + {len(plan.tool_probes)} tool probes) in {batches} batches; {tokens} tokens generated")  # fmt: skip
    show("weights loading (not in the verdict):", f"{load_s * 1000:8.0f} ms")
    show(f"time to verdict (best of {args.repeats}):", f"{verdict_s * 1000:8.0f} ms   "
         f"shipped template: {evaluation.shipped.correct}/{len(plan.probes)} correct")  # fmt: skip
    show("our batched greedy loop:", f"{ours_s * 1000:8.0f} ms  {tokens / ours_s:8.0f} tokens/s")
    show("model.generate, same batches:", f"{theirs_s * 1000:8.0f} ms  {tokens / theirs_s:8.0f} tokens/s")
    show("ratio model.generate / our loop:", f"{theirs_s / ours_s:8.2f}x   same tokens: {same}")
    show("ratio time to verdict / our loop:", f"{verdict_s / ours_s:8.2f}x")
    show("pytest --model, static layers only:", f"{static_run:8.1f} s")
    show("pytest --model --tc-generate, end to end:", f"{generate_run:8.1f} s")


if __name__ == "__main__":
    main()
