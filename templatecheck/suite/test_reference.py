"""Reference layer: the template against an independent reference of the model's format family."""

from templatecheck.checks import reference
from templatecheck.plugin import CheckRunner


def test_reference(tc: CheckRunner) -> None:
    tc.run(reference.reference)


def test_mistral_common(tc: CheckRunner) -> None:
    tc.run(reference.mistral_common)
