"""How much the suite costs over the raw render + tokenize work it performs.

    python benchmarks/bench_suite.py [MODEL_DIR]      (default: fixtures/hermes-3-tiny)

1. Runs every check of the suite in-process on each template of the model while recording each render and
   each tokenizer call the checks make.
2. Replays exactly those calls as the raw work: ``tokenizer.apply_chat_template(..., tokenize=False)`` for the
   renders (transformers' own renderer, unbounded) and ``tokenizer(text, ...)`` for the tokenizations.
3. Times ``pytest --model MODEL_DIR`` end to end in a subprocess, beside the fixed cost every such run
   pays: a pytest session of one empty test plus the import of transformers' ``AutoTokenizer``.
Prints the figures and their ratios; best of several repeats for the in-process numbers.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.checks import REGISTRY  # noqa: E402
from templatecheck.model import Subject, load_model  # noqa: E402
from templatecheck.render import Renderer  # noqa: E402
from templatecheck.result import Layer  # noqa: E402
from templatecheck.sample import _draw, _projected  # noqa: E402
from templatecheck.worker import ForkServer  # noqa: E402


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fixtures" / "hermes-3-tiny"
    model = load_model(str(model_dir))
    tokenizer = model.tokenizer
    subjects = [Subject(model, t) for t in model.templates.values()]

    renders: list[tuple[str, Any, dict[str, Any]]] = []
    encodes: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
    applied: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    original_render_many = Renderer.render_many
    original_forked = ForkServer.run
    tokenizer_class = type(tokenizer)
    original_call = tokenizer_class.__call__
    original_apply = tokenizer_class.apply_chat_template
    inside_apply = False

    asked = 0
    made: set[Any] = set()

    def recording_render_many(self: Renderer, source: str, calls: Any, *, fresh: bool = False) -> Any:
        """Record the renders the suite makes: a call it asked for before (under the same clock) is answered
        from the renderer's memo, so it is not raw work (``asked`` counts every call)."""
        nonlocal asked
        for call in calls:
            asked += 1
            key = None if fresh else self.memo.key(source, self.clock, self.limits.max_output_chars, call)
            if key is not None and key in made:
                continue
            if key is not None:
                made.add(key)
            kwargs = {
                **call.variables,
                "add_generation_prompt": call.add_generation_prompt,
                "continue_final_message": call.continue_final_message,
                "tools": call.tools,
                "documents": call.documents,
            }
            renders.append((source, call.messages, kwargs))
        return original_render_many(self, source, calls, fresh=fresh)

    def recording_forked(self: ForkServer, arguments: Any, budget: Any) -> Any:
        """transformers' own calls run in a forked child, out of reach of the recorders: run them here once."""
        for argument in arguments:
            with contextlib.suppress(Exception):
                self.function(argument)
        return original_forked(self, arguments, budget)

    def recording_call(self: Any, text: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not inside_apply:
            encodes.append((text, args, kwargs))
        return original_call(self, text, *args, **kwargs)

    def recording_apply(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal inside_apply
        applied.append((args, kwargs))
        inside_apply = True
        try:
            return original_apply(self, *args, **kwargs)
        finally:
            inside_apply = False

    def run_checks(skip: frozenset[Layer] = frozenset()) -> None:
        """Every check (but those of ``skip``) on every template, from cold: samples are drawn and capabilities
        probed afresh."""
        _draw.cache_clear()
        _projected.cache_clear()
        model.cache.clear()
        model.renderer.memo.clear()
        for subject in subjects:
            for check in REGISTRY.values():
                if check.layer not in skip:
                    check(subject)

    Renderer.render_many = recording_render_many  # type: ignore[method-assign]
    ForkServer.run = recording_forked  # type: ignore[method-assign]
    tokenizer_class.__call__ = recording_call
    tokenizer_class.apply_chat_template = recording_apply
    run_checks()
    Renderer.render_many = original_render_many  # type: ignore[method-assign]
    ForkServer.run = original_forked  # type: ignore[method-assign]
    tokenizer_class.__call__ = original_call
    tokenizer_class.apply_chat_template = original_apply

    def raw_work() -> None:
        """The same renders through transformers' own renderer, and the same tokenizer calls."""
        for source, messages, kwargs in renders:
            # the suite's renders include templates' own failures; they cost the same here
            with contextlib.suppress(Exception):
                tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False, **kwargs)
        for text, args, kwargs in encodes:
            tokenizer(text, *args, **kwargs)
        for args, kwargs in applied:
            with contextlib.suppress(Exception):
                tokenizer.apply_chat_template(*args, **kwargs)

    raw_work()  # warm transformers' template cache as the suite's is warm
    suite_s = best_of(run_checks, 5)
    # the engine layer renders in MiniJinja and Node as well; those renders are not in the raw work replayed
    static_s = best_of(lambda: run_checks(frozenset({Layer.ENGINE})), 5)
    raw_s = best_of(raw_work, 5)

    def wall(args: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(args, cwd=ROOT, capture_output=True, check=False)
        return time.perf_counter() - start

    pytest_run = min(
        wall([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--model", str(model_dir)])
        for _ in range(3)
    )
    with tempfile.TemporaryDirectory() as empty:
        (Path(empty) / "test_one.py").write_text("def test_one():\n    pass\n")
        startup = (
            "import sys, pytest; from transformers import AutoTokenizer; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {empty!r}]))"
        )
        baseline = min(wall([sys.executable, "-c", startup]) for _ in range(3))

    print(f"model: {model_dir} ({len(subjects)} templates, {len(REGISTRY)} checks)")
    print(
        f"work per suite run: {len(renders)} renders ({asked} asked for; an equal one is answered from the "
        f"first), {len(encodes)} tokenizations, {len(applied)} apply_chat_template calls"
    )
    print(f"checks in-process:                 {suite_s * 1000:8.2f} ms")
    print(f"raw render + tokenize of the same: {raw_s * 1000:8.2f} ms")
    print(f"ratio checks / raw work:           {suite_s / raw_s:8.2f}x")
    print(f"  without the engine layer:        {static_s * 1000:8.2f} ms, {static_s / raw_s:.2f}x "
          f"(the engine layer: {(suite_s - static_s) * 1000:.0f} ms, {(suite_s - static_s) / static_s:.2f} of the rest)")  # fmt: skip
    print(f"pytest --model, end to end:        {pytest_run * 1000:8.0f} ms")
    print(f"  fixed cost (pytest session of one empty test + AutoTokenizer import): {baseline * 1000:.0f} ms")
    print(f"  suite beyond start-up:           {(pytest_run - baseline) * 1000:8.0f} ms")


if __name__ == "__main__":
    main()
