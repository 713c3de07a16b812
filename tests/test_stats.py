"""The exact paired test behind template_sensitivity."""

from __future__ import annotations

from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from templatecheck.stats import ALPHA, McNemar, binomial_tail


def test_binomial_tail_known_values() -> None:
    assert binomial_tail(0, 0) == 1.0
    assert binomial_tail(1, 1) == 0.5
    assert binomial_tail(8, 8) == 1 / 256
    assert binomial_tail(3, 4) == 5 / 16
    assert binomial_tail(5, 4) == 0.0


@given(st.integers(0, 60), st.integers(0, 60))
def test_binomial_tail_is_a_probability_that_falls_with_k(k: int, n: int) -> None:
    p = binomial_tail(k, n)
    assert 0.0 <= p <= 1.0
    assert binomial_tail(k + 1, n) <= p
    assert p == pytest.approx(sum(comb(n, i) for i in range(max(k, 0), n + 1)) / 2**n)


def test_mcnemar_counts_only_discordant_pairs() -> None:
    shipped = [True, True, False, False, True, False]
    variant = [True, False, True, True, True, False]
    test = McNemar.of(shipped, variant)
    assert (test.only_a, test.only_b) == (1, 2)
    assert test.p == binomial_tail(2, 3)


def test_a_clear_win_is_significant_even_after_correction() -> None:
    win = McNemar.of([False] * 21 + [True] * 3, [True] * 24)
    assert win.only_b == 21 and win.p == 0.5**21
    assert win.significant(comparisons=7)


def test_small_or_balanced_differences_are_not() -> None:
    assert not McNemar(0, 0).significant()
    assert McNemar(0, 0).p == 1.0
    assert not McNemar(3, 5).significant()
    # 5 wins and no loss: p = 1/32 passes a single test at 0.05 but not a correction for 7 variants
    assert McNemar(0, 5).significant(comparisons=1)
    assert not McNemar(0, 5).significant(comparisons=7)
    assert ALPHA == 0.05


def test_unequal_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="equal lengths, got 2 and 1"):
        McNemar.of([True, False], [True])
