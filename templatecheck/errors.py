"""Errors that reach the user: each names the value at fault and the next step."""

from __future__ import annotations


class TemplatecheckError(Exception):
    """Bad input: an unknown model, a missing template, a malformed file, a missing optional dependency."""
