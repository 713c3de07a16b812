"""Engine layer: the same template through the other Jinja engines that serve it, and the static lint."""

from templatecheck.checks import engine
from templatecheck.plugin import CheckRunner


def test_minijinja(tc: CheckRunner) -> None:
    tc.run(engine.minijinja)


def test_hfjs(tc: CheckRunner) -> None:
    tc.run(engine.hfjs)


def test_portability(tc: CheckRunner) -> None:
    tc.run(engine.portability)
