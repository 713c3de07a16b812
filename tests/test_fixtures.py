"""The committed fixture models are exactly what fixtures/build.py builds."""

from __future__ import annotations

from tests.conftest import FIXTURES, fixture_script


def test_committed_fixtures_match_a_fresh_build() -> None:
    build = fixture_script("build")
    lines: list[str] = []
    assert build.check(FIXTURES, report=lines.append), "\n".join(lines) + "\nrun: python fixtures/build.py"
