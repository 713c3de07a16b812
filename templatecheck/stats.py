"""Exact tests on paired outcomes: is one prompt variant better than another on the same probes?"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

#: Family-wise significance level of the generation layer's comparisons (Bonferroni-corrected per test).
ALPHA = 0.05


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(comb(n, i) for i in range(k, n + 1)) / (1 << n)


@dataclass(frozen=True)
class McNemar:
    """The exact one-sided McNemar test of "B is right more often than A" on paired right/wrong outcomes.

    Only the discordant pairs count: under the null hypothesis each is equally likely to favour A or B, so
    the p-value is the binomial tail of B's wins among them (the exact form of the sign test).
    """

    only_a: int
    only_b: int

    @classmethod
    def of(cls, a: list[bool], b: list[bool]) -> McNemar:
        if len(a) != len(b):
            raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
        pairs = list(zip(a, b, strict=True))
        return cls(sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs))

    @property
    def p(self) -> float:
        return binomial_tail(self.only_b, self.only_a + self.only_b)

    def significant(self, comparisons: int = 1) -> bool:
        """B is better at level ALPHA, Bonferroni-corrected for ``comparisons`` tests run together."""
        return self.p < ALPHA / max(1, comparisons)
