"""What the generation layer measured: pure values, no torch.

:mod:`templatecheck.probe` builds a :class:`Plan` (every prompt of an evaluation and its tokens) and runs it
into an :class:`Evaluation` (one :class:`Scores` per prompt variant, one :class:`Reply` per probe); the
generation checks read only these values, so their verdicts are tested without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from templatecheck.probeset import Call, Probe
from templatecheck.toolcalls import CallFormat
from templatecheck.variants import Variant


@dataclass(frozen=True)
class Reply:
    """A greedy reply to one probe under one variant."""

    probe: Probe
    #: The generated tokens; the stop token is the last one when the reply stopped.
    ids: tuple[int, ...]
    #: What a chat client shows: the tokens before the stop token, special tokens removed, stripped.
    text: str
    #: The same tokens with special tokens kept.
    raw: str
    stopped: bool
    correct: bool
    #: Mean log-probability per token (nats) of the expected answer; ``None`` for tool items.
    loglik: float | None = None
    #: The tool call parsed from the reply, for tool items.
    call: Call | None = None


@dataclass(frozen=True)
class Scores:
    """One variant's replies to the probe set."""

    variant: Variant
    replies: tuple[Reply, ...]
    #: Other variants whose prompts are identical to these, so they were not run again.
    same_as: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.replies)

    @property
    def stopped(self) -> int:
        return sum(r.stopped for r in self.replies)

    @property
    def loglik(self) -> float:
        values = [r.loglik for r in self.replies if r.loglik is not None]
        return sum(values) / len(values) if values else float("nan")

    @property
    def outcomes(self) -> list[bool]:
        return [r.correct for r in self.replies]


@dataclass(frozen=True)
class Evaluation:
    """Everything the generation checks read about one template of one model."""

    stop: tuple[int, ...]
    stop_source: str
    budget: int
    #: The shipped template first, then each variant that prompts differently.
    scores: tuple[Scores, ...]
    #: Tool items under the shipped template; ``None`` when the template renders no tools or calls.
    tools: Scores | None
    call_format: CallFormat | None
    #: Probes the shipped template cannot render, with the error: left out of every comparison.
    unrendered: tuple[str, ...] = ()
    #: Wall time of generation and likelihoods (weights loading excluded), and tokens generated.
    seconds: float = 0.0
    generated: int = 0
    device: str = ""
    dtype: str = ""

    @property
    def shipped(self) -> Scores:
        return self.scores[0]


@dataclass(frozen=True)
class Plan:
    """The prompts of one evaluation and their tokens, before any forward pass."""

    #: The answer items the shipped template renders, and those it cannot (with the error).
    probes: tuple[Probe, ...]
    unrendered: tuple[str, ...]
    #: Each distinct prompt set, the shipped one first, with the variants that render the same prompts.
    variants: tuple[tuple[Variant, tuple[str, ...]], ...]
    same: dict[str, tuple[str, ...]]
    #: Tool items and their prompts, when the template renders tools and calls.
    tool_probes: tuple[Probe, ...]
    call_format: CallFormat | None
    stop: tuple[int, ...]
    stop_source: str
    pad: int
    budget: int
    #: Every row to generate from: the variants' prompts in order, then the tool prompts.
    rows: tuple[tuple[int, ...], ...]
    budgets: tuple[int, ...]
    #: The expected answers' tokens for the variants' rows.
    answers: tuple[tuple[int, ...], ...]
