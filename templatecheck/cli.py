"""The ``templatecheck`` command: the suite on models (``pytest --model ...``), and what a model sees.

``templatecheck MODEL [MODEL ...] [OPTIONS]`` runs the conformance suite in-process with pytest, passing every
option through (``--tc-report-md``, ``-n 2``, ``--tc-pin-dir``, ...); its exit code is pytest's.
``templatecheck render MODEL --messages FILE`` prints a rendering with control tokens and whitespace visible.

Importing this module loads neither torch nor transformers: the tokenizer loads only when a command needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from templatecheck.errors import TemplatecheckError
from templatecheck.tokens import encode

#: Exit code of bad input (a missing file, malformed JSON, an unknown model), as argparse uses it.
USAGE = 2

_HELP = """\
usage: templatecheck MODEL [MODEL ...] [pytest and templatecheck options]
       templatecheck render MODEL --messages FILE [--tc-chat-template NAME] [--add-generation-prompt] [--tokens]
       templatecheck check MODEL [--tc-chat-template NAME_OR_FILE] [--tc-examples N] [--tc-consumer NAME]
                           [--tc-template-var NAME=VALUE] [--tc-reference FAMILY] [--json]
       templatecheck checks [--markdown]
       templatecheck engines [install]
       templatecheck --version

Run the chat-template conformance suite on model directories or Hub ids (the same as
`pytest --model MODEL ...`; every pytest and templatecheck option applies, e.g. --tc-report-md report.md, -n 2),
or show what a model sees for a conversation.
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_HELP, end="")
        return 0 if args else USAGE
    if args[0] == "render":
        return render_command(args[1:])
    if args[0] == "checks":
        return checks_command(args[1:])
    if args[0] == "check":
        return check_command(args[1:])
    if args[0] == "engines":
        from templatecheck.engines import engines_command

        return engines_command(args[1:])
    if args[0] == "--version":
        from templatecheck import __version__

        print(f"templatecheck {__version__}")
        return 0
    return suite_command(args)


def _check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="templatecheck check",
        description="Run the static checks (template, tokenizer and reference layers) on one model without "
        "pytest; print each finding once, or the JSON report with --json. Exit 1 when a check fails.",
    )
    parser.add_argument(
        "model", metavar="MODEL", help="a model directory, a .gguf or a Hub id (org/name[@rev])"
    )
    from templatecheck.settings import OPTIONS

    for name in ("chat-template", "examples", "consumer", "template-var", "reference", "compare-to"):
        # the pytest option's name and settings; here also without the prefix
        parser.add_argument(f"--tc-{name}", f"--{name}", dest=name.replace("-", "_"), **OPTIONS[name])
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    return parser


def check_command(args: Sequence[str]) -> int:
    """``templatecheck check MODEL``: the static checks through a :class:`~templatecheck.session.Session`."""
    from templatecheck import settings as checked
    from templatecheck.checks import REGISTRY
    from templatecheck.report import json_report, summary_lines
    from templatecheck.result import Layer, Outcome
    from templatecheck.session import Session, provenance, settings

    parsed = _check_parser().parse_args(list(args))
    try:
        options = checked.options(vars(parsed))
        session = Session([parsed.model], options, parsed.chat_template)
        model = session.get(parsed.model)
        if isinstance(model, TemplatecheckError):
            raise model
        static = [c for c in REGISTRY.values() if c.layer is not Layer.GENERATION]
        results = [session.run(c, model, name) for name in model.templates for c in static]
    except TemplatecheckError as error:
        print(f"templatecheck: error: {error}", file=sys.stderr)
        return USAGE
    if parsed.json:
        recorded = settings(options, strict=False, baseline=None)
        print(json.dumps(json_report(results, recorded, provenance(session)), indent=2, ensure_ascii=True))
    else:
        notes = session.reference_notes(results)
        print("\n".join(summary_lines(results, notes, [parsed.model], list(REGISTRY))))
    return 1 if any(r.outcome in (Outcome.FAILED, Outcome.ERROR) for r in results) else 0


def all_causes() -> list[Any]:
    """Every cause the suite can report, in check order (the checks and the pins register them)."""
    import templatecheck.pins  # noqa: F401  (registers the pins' causes)
    from templatecheck.causes import CAUSES
    from templatecheck.checks import REGISTRY

    order = [*REGISTRY, "pins"]
    return sorted((c for c in CAUSES.values() if c.check in order), key=lambda c: order.index(c.check))


def checks_command(args: Sequence[str]) -> int:
    """``templatecheck checks``: every check with its layer and the causes it owns; ``--markdown``: the cause
    table of docs/checks.md."""
    if args not in ([], ["--markdown"]):
        print("templatecheck: error: usage: templatecheck checks [--markdown]", file=sys.stderr)
        return USAGE
    from templatecheck.causes import table
    from templatecheck.checks import REGISTRY

    causes = all_causes()
    if args:
        print(table(causes), end="")
        return 0
    for check in [*REGISTRY.values()]:
        print(f"{check.name} ({check.layer.value})")
        for c in causes:
            if c.check == check.name:
                print(f"  {c.key}  {c.severity.value}")
    print("pins (template)")
    for c in causes:
        if c.check == "pins":
            print(f"  {c.key}  {c.severity.value}")
    return 0


def suite_argv(args: Sequence[str]) -> list[str]:
    """``MODEL ... OPTIONS`` -> pytest's arguments: each leading positional argument becomes ``--model``."""
    models = []
    rest = list(args)
    while rest and not rest[0].startswith("-"):
        models.append(rest.pop(0))
    return [arg for model in models for arg in ("--model", model)] + rest


def suite_command(args: Sequence[str]) -> int:
    argv = suite_argv(args)
    if "--model" not in argv and "--tc-models-from" not in argv:
        print("templatecheck: error: name at least one MODEL (a directory or Hub id)", file=sys.stderr)
        return USAGE
    import pytest

    return int(pytest.main(argv))


# ------------------------------------------------------------------------------------------------ render


def _render_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="templatecheck render",
        description="Show what the model sees for a conversation: the rendering with control tokens and "
        "whitespace visible (␤ newline, ⇥ tab, ␠ odd space), and its token ids on request.",
    )
    parser.add_argument(
        "model", metavar="MODEL", help="a model directory, a .gguf or a Hub id (org/name[@rev])"
    )
    parser.add_argument(
        "--messages",
        required=True,
        metavar="FILE",
        help="a JSON list of messages, or an object with 'messages' (and optionally 'tools'); '-' reads stdin",
    )
    parser.add_argument(
        "--tc-chat-template",
        "--chat-template",
        dest="chat_template",
        metavar="NAME_OR_FILE",
        help="a named template of the model, or a template file",
    )
    parser.add_argument("--add-generation-prompt", action="store_true", help="end with the assistant header")
    parser.add_argument("--tokens", action="store_true", help="also list every token: [id 'piece']")
    return parser


def read_messages(name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages (and tools) of a JSON file; errors name the file and what to fix."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplatecheckError(f"--messages {name!r}: no such file; pass a JSON file of messages") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise TemplatecheckError(
            f"--messages {name!r}: cannot be read ({type(exc).__name__}); pass a UTF-8 JSON file"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplatecheckError(
            f"--messages {name!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    tools = None
    if isinstance(data, dict):
        tools = data.get("tools")
        data = data.get("messages")
    if not isinstance(data, list) or not all(isinstance(m, dict) and "role" in m for m in data):
        raise TemplatecheckError(
            f"--messages {name!r}: expected a list of messages with a 'role' each (or an object with "
            '"messages"), e.g. [{"role": "user", "content": "Hi"}]'
        )
    if tools is not None and not isinstance(tools, list):
        raise TemplatecheckError(f"--messages {name!r}: 'tools' must be a list of tool definitions")
    return data, tools


def render_command(args: Sequence[str]) -> int:
    parsed = _render_parser().parse_args(list(args))
    from templatecheck.render import RenderError

    try:
        messages, tools = read_messages(parsed.messages)
        from templatecheck.model import Subject, load_model

        model = load_model(parsed.model, chat_template=parsed.chat_template)
        template = next(iter(model.templates.values()))
        if parsed.chat_template is None and len(model.templates) > 1:
            # transformers' choice: the tool_use template when tools are passed, else the default
            name = "tool_use" if tools and "tool_use" in model.templates else "default"
            template = model.templates.get(name, template)
        subject = Subject(model, template)
        kwargs: dict[str, Any] = {"add_generation_prompt": parsed.add_generation_prompt}
        if tools is not None:
            kwargs["tools"] = tools
        text = subject.render(messages, **kwargs)
        ids = encode(model.tokenizer, text) if parsed.tokens else []
    except TemplatecheckError as error:
        print(f"templatecheck: error: {error}", file=sys.stderr)
        return USAGE
    except RenderError as error:
        print(f"templatecheck: the template does not render these messages: {error}", file=sys.stderr)
        return 1
    print(_shown(model.name, template.name, text, ids, model if parsed.tokens else None))
    return 0


def _shown(model: str, template: str, text: str, ids: list[int], tokenized: Any) -> str:
    from templatecheck.text import tokens, visible

    lines = [f"# {model}:{template} ({len(text)} characters)", visible(text)]
    if tokenized is not None:
        pieces = [tokenized.tokenizer.decode([i]) for i in ids]
        lines += [f"# {len(ids)} tokens", tokens(ids, pieces, limit=len(ids))]
    return "\n".join(lines)


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())


__all__ = ["main", "read_messages", "render_command", "suite_argv", "suite_command"]
