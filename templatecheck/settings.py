"""Command-line values checked and parsed once, before any test runs: each bad value is one clear error."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from templatecheck.causes import CONSUMERS
from templatecheck.errors import TemplatecheckError
from templatecheck.options import Options

#: Every option of the pytest plugin but ``--model``, by its name after ``--tc-``: its argparse settings (the
#: CLI's ``check`` and ``render`` take the same). A help text says what the option does, then its default.
OPTIONS: dict[str, dict[str, Any]] = {
    "chat-template": {
        "metavar": "NAME_OR_FILE",
        "help": "test only this named template of each model, or a candidate template file (or a folder of "
        "them: *.jinja and template *.json files) with the model's tokenizer",
    },
    "report-json": {"metavar": "PATH", "help": "write every check result of the run to PATH as JSON"},
    "report-md": {
        "metavar": "PATH",
        "help": "write a Markdown report to PATH (capabilities, checks and findings per model), for a model "
        "card or a pull-request comment",
    },
    "models-from": {
        "action": "append",
        "default": [],
        "metavar": "DIR",
        "help": "add every subdirectory of DIR that holds a tokenizer_config.json or chat_template.jinja as a "
        "--model (a sweep in one session); repeatable",
    },
    "pin-dir": {
        "metavar": "DIR",
        "help": "compare each template's renderings and token ids of a fixed probe set with the pins in DIR "
        "(test_pins); a missing or different pin fails",
    },
    "update-pins": {
        "action": "store_true",
        "help": "with --tc-pin-dir: write the current renderings as the pins instead of comparing",
    },
    "strict-checks": {
        "action": "store_true",
        "help": "treat warnings of the checks as failures (pytest itself owns --strict)",
    },
    "examples": {
        "type": int,
        "default": Options.examples,
        "metavar": "N",
        "help": f"hypothesis conversations per property check (default: {Options.examples}, hypothesis' own "
        "budget)",
    },
    "render-timeout": {
        "type": float,
        "default": 2.0,
        "metavar": "SECONDS",
        "help": "wall-time bound of one template render; a render past it is a finding (default: 2)",
    },
    "reference": {
        "metavar": "FAMILY",
        "help": "compare templates with this reference format family instead of the detected one; 'none' "
        "skips the comparison (families: see README, or templatecheck.formats.names())",
    },
    "consumer": {
        "action": "append",
        "default": [],
        "metavar": "NAME",
        "help": "make this consumer path's hazards fail instead of warn: apply_chat_template, server (rendering "
        "encoded without special tokens: vLLM, SGLang, TGI) or naive (tokenizer(prompt)); repeatable",
    },
    "template-var": {
        "action": "append",
        "default": [],
        "metavar": "NAME=VALUE",
        "help": "pass a template variable to every render, as apply_chat_template's keyword arguments are "
        "(date_string, enable_thinking, ...); VALUE is read as JSON when it parses, else as a string; repeatable",
    },
    "baseline": {
        "metavar": "FILE",
        "help": "accept the findings FILE lists (by model, template and cause): they are reported, not failed; "
        "a new finding still fails",
    },
    "update-baseline": {
        "action": "store_true",
        "help": "with --tc-baseline: write every failed and warning finding of the run to FILE instead of "
        "failing",
    },
    "generate": {
        "action": "store_true",
        "help": "run the generation layer: load the weights (needs torch) and prompt the model with the probe set",
    },
    "device": {
        "metavar": "DEVICE",
        "help": "torch device of the generation layer: cpu, cuda, cuda:N, mps (default: CUDA when available, "
        "else CPU)",
    },
    "max-new-tokens": {
        "type": int,
        "default": Options.max_new_tokens,
        "metavar": "N",
        "help": f"token budget of each greedy reply of the generation layer (default: {Options.max_new_tokens}; "
        "tool calls get 64)",
    },
    "compare-to": {
        "metavar": "DIR_OR_ID",
        "help": "compare a GGUF --model with the model it was converted from (a directory or Hub id): its "
        "templates on the suite's conversations, control-token ids, BOS handling and stop set (gguf_matches_original)",
    },
    "probe-file": {
        "metavar": "PATH",
        "help": "JSON-lines probes added to the generation layer's built-in set (format: see README)",
    },
}

#: Variables the suite itself passes to every render; a --tc-template-var cannot replace them.
RESERVED = frozenset({"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"})


def parse_consumers(values: Iterable[str]) -> tuple[str, ...]:
    """``--tc-consumer`` values, each a known consumer path."""
    chosen = []
    for value in values:
        if value not in CONSUMERS:
            known = ", ".join(CONSUMERS)
            raise TemplatecheckError(f"--tc-consumer {value!r}: not a consumer path; choose from {known}")
        chosen.append(value)
    return tuple(dict.fromkeys(chosen))


def parse_template_vars(values: Iterable[str]) -> dict[str, Any]:
    """``--tc-template-var NAME=VALUE`` values; VALUE is JSON when it parses (``true``, ``3``, ``["a"]``), else
    the string itself (``date_string=26 Jul 2024``)."""
    found: dict[str, Any] = {}
    for value in values:
        name, sep, text = value.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise TemplatecheckError(
                f"--tc-template-var {value!r}: expected NAME=VALUE with NAME a template variable name, "
                "e.g. --tc-template-var date_string='26 Jul 2024'"
            )
        if name in RESERVED:
            raise TemplatecheckError(
                f"--tc-template-var {name}: the suite sets {name} itself for every render; pass another variable"
            )
        try:
            found[name] = json.loads(text)
        except (ValueError, RecursionError):
            found[name] = text
    return found


#: The longest one render may take: beyond it a run on a hostile template would take hours.
MAX_RENDER_SECONDS = 600.0


def check_render_timeout(seconds: float) -> float:
    """``--tc-render-timeout``: a finite number of seconds, above 0 and at most :data:`MAX_RENDER_SECONDS`."""
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_RENDER_SECONDS):
        raise TemplatecheckError(
            f"--tc-render-timeout {seconds!r}: give the seconds one render may take, a number above 0 and at most "
            f"{MAX_RENDER_SECONDS:g} (default 2)"
        )
    return seconds


def check_examples(examples: int) -> int:
    """``--tc-examples``: at least one conversation per property check."""
    if examples < 1:
        raise TemplatecheckError(
            f"--tc-examples {examples}: give the number of hypothesis conversations per property check, 1 or more "
            "(default 100)"
        )
    return examples


def check_report_path(option: str, value: str | None) -> None:
    """A report path that can be written (missing folders are created), checked before the run, not after it."""
    if value is None:
        return
    path = Path(value).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise TemplatecheckError(f"{option} {value}: is a directory; name the file to write")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # missing folders are created when the report is written
    if not existing.is_dir():
        raise TemplatecheckError(f"{option} {value}: {existing} is not a folder; choose another path")
    if not os.access(existing, os.W_OK):
        raise TemplatecheckError(
            f"{option} {value}: the folder {existing} is not writable; choose another path"
        )


def check_reference(name: str | None) -> str | None:
    """``--tc-reference``: a registered format family, ``none``, or not given (detect it)."""
    if name is not None:
        from templatecheck.formats import NONE, get

        if name != NONE:
            get(name)  # an unknown name is an error listing the known ones
    return name


def check_compare_to(value: str | None) -> str | None:
    """``--tc-compare-to``: a model directory, a GGUF file or a Hub id (loaded when the comparison runs)."""
    if value is not None:
        from templatecheck.model import ModelRef

        try:
            ModelRef.parse(value)
        except TemplatecheckError as error:
            raise TemplatecheckError(f"--tc-compare-to {value}: {error}") from None
    return value


def options(values: Mapping[str, Any]) -> Options:
    """The settings of a run from its option values, keyed by the options' names without the ``--tc-`` prefix
    (``examples``, ``consumer``, ``template_var``, ...; a missing key has its default), every value checked
    before any test runs: a bad one, or a combination that does nothing, is one error naming the option."""
    if values.get("update_pins") and values.get("pin_dir") is None:
        raise TemplatecheckError(
            "--tc-update-pins writes the pins of --tc-pin-dir DIR: pass --tc-pin-dir too"
        )
    if values.get("probe_file") and not values.get("generate"):
        raise TemplatecheckError(
            "--tc-probe-file adds probes to the generation layer, which runs only with --tc-generate: "
            "pass --tc-generate"
        )
    check_render_timeout(values.get("render_timeout", 2.0))
    for option in ("report_json", "report_md"):
        check_report_path("--tc-" + option.replace("_", "-"), values.get(option))
    return Options(
        examples=check_examples(values.get("examples", Options.examples)),
        reference=check_reference(values.get("reference")),
        generate=bool(values.get("generate")),
        device=values.get("device"),
        max_new_tokens=values.get("max_new_tokens", Options.max_new_tokens),
        probe_file=values.get("probe_file"),
        consumers=parse_consumers(values.get("consumer") or ()),
        template_vars=parse_template_vars(values.get("template_var") or ()),
        compare_to=check_compare_to(values.get("compare_to")),
    )


__all__ = [
    "MAX_RENDER_SECONDS",
    "OPTIONS",
    "RESERVED",
    "check_compare_to",
    "check_examples",
    "check_reference",
    "check_render_timeout",
    "check_report_path",
    "options",
    "parse_consumers",
    "parse_template_vars",
]
