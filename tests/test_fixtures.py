"""The committed fixture models are exactly what fixtures/build.py builds."""

from __future__ import annotations

import importlib.util
import sys

from tests.conftest import FIXTURES


def test_committed_fixtures_match_a_fresh_build() -> None:
    spec = importlib.util.spec_from_file_location("fixtures_build", FIXTURES / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build
    spec.loader.exec_module(build)
    lines: list[str] = []
    assert build.check(FIXTURES, report=lines.append), "\n".join(lines) + "\nrun: python fixtures/build.py"
