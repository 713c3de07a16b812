"""The render bounds do not slow a normal template (benchmarks/bench_bounds.py gives the precise figures)."""

from __future__ import annotations

import statistics
import time

from templatecheck.conversation import SYSTEM_USER_ASSISTANT
from templatecheck.render import Limits, Renderer
from tests.conftest import fixture_model


def test_bounded_rendering_costs_about_the_same_as_unbounded() -> None:
    source = fixture_model("hermes-3-tiny").templates["default"].source
    bounded = Renderer(special_tokens={"bos_token": "<s>"})
    unbounded = Renderer(
        special_tokens={"bos_token": "<s>"}, limits=Limits(seconds=None, max_output_chars=None)
    )

    def per_render(renderer: Renderer) -> float:
        start = time.perf_counter()
        for _ in range(200):
            renderer.render(source, SYSTEM_USER_ASSISTANT, add_generation_prompt=True)
        return (time.perf_counter() - start) / 200

    ratios = [per_render(bounded) / per_render(unbounded) for _ in range(15)]  # interleaved rounds
    assert statistics.median(ratios) < 1.5, ratios
