"""Generation layer: what the weights say about the template (run with --tc-generate)."""

from templatecheck.checks import generation
from templatecheck.plugin import CheckRunner


def test_stops(tc: CheckRunner) -> None:
    tc.run(generation.stops)


def test_clean_start(tc: CheckRunner) -> None:
    tc.run(generation.clean_start)


def test_probe_accuracy(tc: CheckRunner) -> None:
    tc.run(generation.probe_accuracy)


def test_template_sensitivity(tc: CheckRunner) -> None:
    tc.run(generation.template_sensitivity)


def test_tool_call(tc: CheckRunner) -> None:
    tc.run(generation.tool_call)
