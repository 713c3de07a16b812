"""What the render bounds cost a normal template: bounded against unbounded rendering, in the same run.

    python benchmarks/bench_bounds.py

Renders the bundled templates and the real templates of ../shared/models (when present) four ways: in the
render worker one render per round trip (what a single ``Subject.render`` costs) and in batches of 50
(``render_many``, what the sampled checks send); in this process with the in-process bounds only (the
watchdog and size guards, no worker); and with transformers' own sandbox (the unbounded baseline). Best of
several rounds each; ratios against transformers.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.conversation import SYSTEM_USER_ASSISTANT, WEATHER_TOOL  # noqa: E402
from templatecheck.render import (  # noqa: E402
    PINNED_CLOCK,
    Call,
    Limits,
    Renderer,
    RenderError,
    render_here,
)


def sources() -> dict[str, str]:
    found = {}
    for name in ("hermes-3-tiny", "llama-3-tiny"):
        config = json.loads((ROOT / "fixtures" / name / "tokenizer_config.json").read_text())
        entry = config["chat_template"]
        named = {"default": entry} if isinstance(entry, str) else {e["name"]: e["template"] for e in entry}
        found.update({f"{name}:{k}": v for k, v in named.items()})
    shared = ROOT.parent / "shared" / "models"
    for name in ("llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3", "hermes-3-llama-3.1-8b"):
        path = shared / name / "tokenizer_config.json"
        if path.is_file():
            entry = json.loads(path.read_text())["chat_template"]
            named = (
                {"default": entry} if isinstance(entry, str) else {e["name"]: e["template"] for e in entry}
            )
            found.update({f"{name}:{k}": v for k, v in named.items()})
    return found


def per_render(renderer: Renderer, source: str, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        with contextlib.suppress(RenderError):
            renderer.render(source, SYSTEM_USER_ASSISTANT, tools=[WEATHER_TOOL], add_generation_prompt=False)
    return (time.perf_counter() - start) / repeats


def per_batched_render(renderer: Renderer, source: str, repeats: int) -> float:
    calls = [Call(SYSTEM_USER_ASSISTANT, tools=[WEATHER_TOOL])] * 50
    start = time.perf_counter()
    for _ in range(repeats // 50):
        renderer.render_many(source, calls)
    return (time.perf_counter() - start) / (repeats // 50 * 50)


def per_local_render(renderer: Renderer, source: str, repeats: int) -> float:
    """The in-process bounds alone: the render worker's own work per render."""
    context, _ = renderer._prepare(source, Call(SYSTEM_USER_ASSISTANT, tools=[WEATHER_TOOL]))
    start = time.perf_counter()
    for _ in range(repeats):
        with contextlib.suppress(RenderError):
            render_here(source, context, seconds=2.0, max_chars=4_000_000, clock=PINNED_CLOCK)
    return (time.perf_counter() - start) / repeats


def per_transformers_render(source: str, special: dict[str, str], repeats: int) -> float:
    from transformers.utils.chat_template_utils import _compile_jinja_template, _plain_template_data

    template = _compile_jinja_template(source)
    start = time.perf_counter()
    for _ in range(repeats):
        # what apply_chat_template(tokenize=False) does around the render
        with contextlib.suppress(Exception):
            template.render(
                messages=_plain_template_data(SYSTEM_USER_ASSISTANT),
                tools=_plain_template_data([WEATHER_TOOL]),
                documents=None,
                add_generation_prompt=False,
                **_plain_template_data(special),
            )
    return (time.perf_counter() - start) / repeats


def main() -> None:
    special = {"bos_token": "<s>", "eos_token": "</s>"}
    bounded = Renderer(special_tokens=special, limits=Limits(budget_seconds=None))
    columns = ("worker 1/trip", "worker x50", "in-process", "transformers")
    totals = [0.0] * 4
    print(
        f"{'template':36} "
        + " ".join(f"{c + ' µs':>17}" for c in columns)
        + f" {'ratio 1':>8} {'ratio 50':>8}"
    )
    for name, source in sources().items():
        times: list[float] = []
        for i in range(3):
            measured = (
                per_render(bounded, source, 200),
                per_batched_render(bounded, source, 200),
                per_local_render(bounded, source, 200),
                per_transformers_render(source, special, 200),
            )
            times = [min(t, x) for t, x in zip(times, measured, strict=True)] if i else list(measured)
        totals = [a + b for a, b in zip(totals, times, strict=True)]
        print(f"{name:36} " + " ".join(f"{t * 1e6:17.1f}" for t in times) + _ratios(times))
    print(f"{'all':36} " + " ".join(f"{t * 1e6:17.1f}" for t in totals) + _ratios(totals))
    print(
        "ratio 1 / ratio 50 = the worker, one render per round trip / in batches of 50, against transformers'"
    )
    print("unbounded sandbox; both with their message preparation")


def _ratios(times: list[float]) -> str:
    return f" {times[0] / times[3]:8.2f} {times[1] / times[3]:8.2f}"


if __name__ == "__main__":
    main()
