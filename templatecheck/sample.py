"""Deterministic samples of hypothesis conversations, and shrinking of a failing one.

A check evaluates its property over a sample drawn once per process (hypothesis' generation phase with a
derandomized seed, no example database: the same run gives the same verdict, which a CI gate needs). The
sample is shared by every check and template with the same :class:`~templatecheck.strategies.Support`, so the
cost of drawing is paid once. When a conversation fails, :func:`minimize` shrinks it to a short readable one
that fails the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from templatecheck.conversation import Conversation, describe, well_formed
from templatecheck.result import Finding
from templatecheck.strategies import Support, conversations


@lru_cache(maxsize=64)
def _draw(support: Support, end_with_user: bool, count: int) -> tuple[Conversation, ...]:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    drawn: list[Conversation] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(conversations(support=support, end_with_user=end_with_user))
    def collect(conversation: Conversation) -> None:
        drawn.append(conversation)

    collect()
    return tuple(drawn)


def sample(support: Support, *, end_with_user: bool = True, count: int = 100) -> list[Conversation]:
    """``count`` conversations (fewer if hypothesis exhausts the space), the same on every call; a fresh copy."""
    return copy.deepcopy(list(_draw(support, end_with_user, count)))


def minimize(
    conversation: Conversation, failure: Callable[[Conversation], Any], budget: int = 300
) -> Conversation:
    """The smallest conversation found that fails with the same key as ``conversation``.

    ``failure(c)`` returns a key for how ``c`` fails (``None`` when it does not); a candidate is kept only when
    it fails with the original key. Tries dropping whole turns and messages (keeping the conversation well
    formed), then shortening each message's text.
    """
    key = failure(conversation)
    best = copy.deepcopy(conversation)
    tries = 0

    def keeps(candidate: Conversation) -> bool:
        nonlocal tries
        tries += 1
        try:
            return bool(failure(candidate) == key)
        except Exception:
            return False

    improved = True
    while improved and tries < budget:
        improved = False
        for size in (4, 3, 2, 1):  # drop whole turns first, then single messages
            for i in range(len(best) - size + 1):
                candidate = best[:i] + best[i + size :]
                if well_formed(candidate) and keeps(candidate):
                    best, improved = candidate, True
                    break
            if improved:
                break
        if improved:
            continue
        for i, message in enumerate(best):
            for shorter in _shorter(message.get("content")):
                candidate = [*best[:i], {**message, "content": shorter}, *best[i + 1 :]]
                if tries < budget and keeps(candidate):
                    best, improved = candidate, True
                    break
            if improved:
                break
    return best


def _shorter(content: Any) -> list[Any]:
    """Simpler versions of a message's content: shorter strings, or the text of a one-part list."""
    if (
        isinstance(content, list)
        and len(content) == 1
        and isinstance(content[0], dict)
        and "text" in content[0]
    ):
        return [content[0]["text"]]
    if not isinstance(content, str) or len(content) <= 1:
        return []
    half = len(content) // 2
    options = ["x", content[:half], content[half:], content[1:], content[:-1]]
    return [o for o in dict.fromkeys(options) if len(o) < len(content)]


@dataclass(frozen=True)
class Problem:
    """How one conversation fails a property: ``key`` names the kind (shrinking keeps it), ``finding`` says it."""

    key: str
    finding: Finding


def counterexamples(
    conversations: list[Conversation], judge: Callable[[Conversation], Problem | None], *, limit: int = 3
) -> list[Finding]:
    """Judge each conversation; for each kind of problem (up to ``limit``), its first case, shrunk, as a finding
    that shows the conversation."""
    findings: list[Finding] = []
    seen: set[str] = set()

    def key_of(conversation: Conversation) -> str | None:
        problem = judge(conversation)
        return problem.key if problem is not None else None

    for conversation in conversations:
        problem = judge(conversation)
        if problem is None or problem.key in seen:
            continue
        seen.add(problem.key)
        small = minimize(conversation, key_of)
        final = judge(small) or problem
        findings.append(
            Finding(final.finding.outcome, f"{final.finding.message}\nconversation:\n{describe(small)}")
        )
        if len(seen) >= limit:
            break
    return findings
