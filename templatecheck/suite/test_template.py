"""Template layer: what the chat template renders."""

from templatecheck.checks import template
from templatecheck.plugin import CheckRunner


def test_renders(tc: CheckRunner) -> None:
    tc.run(template.renders)


def test_generation_prompt(tc: CheckRunner) -> None:
    tc.run(template.generation_prompt)
