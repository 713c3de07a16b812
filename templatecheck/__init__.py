"""templatecheck: chat-template conformance tests for language models.

``pytest --model PATH_OR_ID`` runs the suite; this package is the library underneath it. Importing it loads
neither torch nor transformers.
"""

from __future__ import annotations

from templatecheck.errors import TemplatecheckError
from templatecheck.model import Model, ModelRef, Subject, Template, load_model, read_templates
from templatecheck.render import PINNED_CLOCK, Limits, Rendered, Renderer, RenderError
from templatecheck.result import CheckResult, Finding, Layer, Outcome

__version__ = "0.1.0"

__all__ = [
    "PINNED_CLOCK",
    "CheckResult",
    "Finding",
    "Layer",
    "Limits",
    "Model",
    "ModelRef",
    "Outcome",
    "RenderError",
    "Rendered",
    "Renderer",
    "Subject",
    "Template",
    "TemplatecheckError",
    "__version__",
    "load_model",
    "read_templates",
]
