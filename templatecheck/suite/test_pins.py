"""Pins: each template's renderings and token ids of a fixed probe set against golden files (``--tc-pin-dir``)."""

from templatecheck.checks import Check
from templatecheck.plugin import CheckRunner


def test_pins(pin_check: Check, tc: CheckRunner) -> None:
    tc.run(pin_check)
