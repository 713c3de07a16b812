"""What the render bounds cost a normal template: bounded against unbounded rendering, in the same run.

    python benchmarks/bench_bounds.py

Renders the bundled templates and the real templates of ../shared/models (when present) three ways: with
templatecheck's default bounds; with templatecheck's bounds switched off (the size guards stay compiled in,
inactive); and with transformers' own sandbox (the unbounded baseline). Best of several rounds each.
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
from templatecheck.render import Limits, Renderer, RenderError  # noqa: E402


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
    bounded = Renderer(special_tokens=special)
    off = Renderer(special_tokens=special, limits=Limits(seconds=None, max_output_chars=None))
    totals = [0.0, 0.0, 0.0]
    print(f"{'template':36} {'bounded µs':>11} {'bounds off µs':>14} {'transformers µs':>16} {'ratio':>6}")
    for name, source in sources().items():
        times = [0.0, 0.0, 0.0]
        for i in range(3):
            times = [
                min(t, x) if i else x
                for t, x in zip(
                    times,
                    (
                        per_render(bounded, source, 200),
                        per_render(off, source, 200),
                        per_transformers_render(source, special, 200),
                    ),
                    strict=True,
                )
            ]
        totals = [a + b for a, b in zip(totals, times, strict=True)]
        b, o, t = times
        print(f"{name:36} {b * 1e6:11.1f} {o * 1e6:14.1f} {t * 1e6:16.1f} {b / t:6.2f}")
    b, o, t = totals
    print(f"{'all':36} {b * 1e6:11.1f} {o * 1e6:14.1f} {t * 1e6:16.1f} {b / t:6.2f}")
    print("ratio = bounded / transformers' unbounded sandbox, both with their message preparation")


if __name__ == "__main__":
    main()
