"""Settings of one run that checks read (from pytest options, the CLI or library callers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Options:
    """What the user asked for; every field has the default a plain ``pytest --model`` run uses."""

    #: Hypothesis examples per property check (hypothesis' own default budget).
    examples: int = 100
    #: Reference family to compare with: a registered family name, ``"none"``, or ``None`` to detect it.
    reference: str | None = None
    #: Run the generation layer (loads weights; needs torch).
    generate: bool = False
    #: Device for the generation layer: ``None`` picks CUDA when available, else CPU.
    device: str | None = None
    #: Token budget of each greedy generation of the generation layer.
    max_new_tokens: int = 16
    #: A user probe file added to the built-in probe set of the generation layer.
    probe_file: str | None = None
    #: Consumer paths whose hazards fail instead of warn (``--tc-consumer``; see :data:`templatecheck.causes.CONSUMERS`).
    consumers: tuple[str, ...] = ()
    #: Extra template variables passed to every render, as ``apply_chat_template``'s keyword arguments are
    #: (``--tc-template-var NAME=VALUE``): ``date_string``, ``enable_thinking``, ``tools_in_user_message``, ...
    template_vars: dict[str, Any] = field(default_factory=dict)
    #: The original model a GGUF file is compared with (``--tc-compare-to``: a directory or a Hub id).
    compare_to: str | None = None
