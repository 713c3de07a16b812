"""Seeded regressions of real templates: does each one show up as a cause the unmodified template lacks?

    python benchmarks/seeded_regressions.py [MODELS_DIR] [--examples N] [--only NAME] [--verbose]

MODELS_DIR defaults to ../shared/models. Each regression edits one real template (a changed separator, a
dropped end-of-turn token, a moved system prompt, mangled tool arguments or results, replies closed by the
wrong token) or the generation config (a missing stop token). The static checks (template, tokenizer and
reference layers) run on the unmodified model and on each regression; a regression is caught when some
check fails it with a cause key that the unmodified template has in none of its findings. A regression whose
edit does not apply (the template changed upstream) is an error of this script: it exits 1.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from templatecheck.checks import REGISTRY  # noqa: E402
from templatecheck.model import Model, Subject, Template, load_model  # noqa: E402
from templatecheck.options import Options  # noqa: E402
from templatecheck.result import Layer, Outcome  # noqa: E402

STATIC = (Layer.TEMPLATE, Layer.TOKENIZER, Layer.REFERENCE)


@dataclass(frozen=True)
class Regression:
    """One seeded bug: ``old`` replaced by ``new`` in a template, or a generation-config change."""

    name: str
    model: str
    template: str
    what: str
    old: str = ""
    new: str = ""
    generation_config: dict[str, Any] | None = None


L31, HERMES, MISTRAL, L3 = (
    "llama-3.1-8b-instruct",
    "hermes-3-llama-3.1-8b",
    "mistral-7b-instruct-v0.3",
    "llama-3-8b-instruct-original",
)
_L31_TURN = "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>'"
_CHATML_TURN = "'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'"

REGRESSIONS = [
    # Llama 3.1 8B Instruct
    Regression("l31-separator", L31, "default", "one newline after a header instead of two",
               _L31_TURN, _L31_TURN.replace("\\n\\n'+", "\\n'+")),
    Regression("l31-no-eot", L31, "default", "turns lose <|eot_id|>", _L31_TURN, _L31_TURN.replace(" + '<|eot_id|>'", "")),
    Regression("l31-system-moved", L31, "default", "the system prompt after the conversation",
               '{{- system_message }}\n{{- "<|eot_id|>" }}', '{{- "<|eot_id|>" }}'),
    Regression("l31-tool-args", L31, "default", "tool-call arguments written as {}",
               "{{- tool_call.arguments | tojson }}", '{{- "{}" }}'),
    Regression("l31-tool-result", L31, "default", "tool results dropped",
               "{{- message.content | tojson }}", '{{- "" }}'),
    Regression("l31-wrong-close", L31, "default", "assistant turns closed by <|end_of_text|>", _L31_TURN,
               _L31_TURN.replace("+ '<|eot_id|>'", "+ ('<|end_of_text|>' if message.role == 'assistant' else '<|eot_id|>')")),
    Regression("l31-stop", L31, "default", "<|eot_id|> missing from the stop set",
               generation_config={"bos_token_id": 128000, "eos_token_id": [128001, 128008]}),
    # Hermes 3
    Regression("hermes-separator", HERMES, "default", "a colon after the role", _CHATML_TURN,
               _CHATML_TURN.replace("role'] + '\n'", "role'] + ':\n'")),
    Regression("hermes-no-im-end", HERMES, "default", "turns lose <|im_end|>", _CHATML_TURN,
               _CHATML_TURN.replace(" + '<|im_end|>'", "")),
    Regression("hermes-system-moved", HERMES, "default", "system messages rendered after the others",
               "{% for message in messages %}",
               "{% for message in (messages|rejectattr('role', 'equalto', 'system')|list) + "
               "(messages|selectattr('role', 'equalto', 'system')|list) %}"),
    Regression("hermes-wrong-close", HERMES, "default", "assistant turns closed by <|end_of_text|>", _CHATML_TURN,
               _CHATML_TURN.replace("+ '<|im_end|>'", "+ ('<|end_of_text|>' if message['role'] == 'assistant' else '<|im_end|>')")),
    Regression("hermes-stop", HERMES, "default", "<|im_end|> missing from the stop set",
               generation_config={"bos_token_id": 128000, "eos_token_id": 128001}),
    Regression("hermes-tool-args", HERMES, "tool_use", "tool-call arguments written as {}",
               "{{- tool_call.arguments|tojson }}", "{{- '{}' }}"),
    Regression("hermes-tool-name", HERMES, "tool_use", "tool-call names upper-cased",
               "{{- tool_call.name }}", "{{- tool_call.name|upper }}"),
    Regression("hermes-tool-result", HERMES, "tool_use", "tool results cut to 5 characters",
               "{{- '<tool_response>\n' }}\n        {{- message.content }}",
               "{{- '<tool_response>\n' }}\n        {{- message.content[:5] }}"),
    # Mistral 7B Instruct v0.3
    Regression("mistral-separator", MISTRAL, "default", "no space after [INST]", "{{- '[INST] ' }}", "{{- '[INST]' }}"),
    Regression("mistral-no-eos", MISTRAL, "default", "replies lose </s>",
               "{{- eos_token }}\n        {%- set ns.prev_tool=false %}", "{%- set ns.prev_tool=false %}"),
    Regression("mistral-system-moved", MISTRAL, "default", "the system prompt in the first user turn",
               "(ns.index == ns.max_idx_user) and system_message != ''", "(ns.index == 0) and system_message != ''"),
    Regression("mistral-tool-args", MISTRAL, "default", "tool-call arguments written as {}",
               "\"arguments\": ' + arguments + ', \"id\"", "\"arguments\": {}, \"id\""),
    Regression("mistral-tool-result", MISTRAL, "default", "tool results emptied",
               "{'content': tool_content, 'call_id': tool_id}", "{'content': '', 'call_id': tool_id}"),
    Regression("mistral-wrong-close", MISTRAL, "default", "replies closed by [/INST] instead of </s>",
               "{{- eos_token }}\n        {%- set ns.prev_tool=false %}",
               "{{- '[/INST]' }}\n        {%- set ns.prev_tool=false %}"),
    Regression("mistral-stop", MISTRAL, "default", "</s> missing from the stop set",
               generation_config={"bos_token_id": 1, "eos_token_id": 3}),
    # Llama 3 8B Instruct, as first released
    Regression("l3-separator", L3, "default", "a space after a header",
               "'<|end_header_id|>\n\n'+ message['content']", "'<|end_header_id|> \n\n'+ message['content']"),
    Regression("l3-no-eot", L3, "default", "turns lose <|eot_id|>", "| trim + '<|eot_id|>' %}", "| trim %}"),
    Regression("l3-no-bos", L3, "default", "BOS no longer written",
               "{% set content = bos_token + content %}", "{% set content = content %}"),
]  # fmt: skip


def causes(model: Model, template: str, options: Options) -> dict[str, list[tuple[str, Outcome, str]]]:
    """``cause -> [(check, outcome, first line)]`` of every finding of the static checks."""
    subject = Subject(model, model.templates[template], options)
    found: dict[str, list[tuple[str, Outcome, str]]] = {}
    for check in REGISTRY.values():
        if check.layer not in STATIC:
            continue
        for finding in check(subject).findings:
            if finding.cause:
                first = finding.message.strip().split("\n", 1)[0]
                found.setdefault(finding.cause, []).append((check.name, finding.outcome, first))
    return found


def seeded(base: Model, regression: Regression) -> Model:
    """A copy of ``base`` with the regression applied (a fresh cache: nothing learnt of the original)."""
    model = replace(base, cache={})
    if regression.generation_config is not None:
        model.generation_config = copy.deepcopy(regression.generation_config)
        return model
    original = base.templates[regression.template]
    if regression.old not in original.source:
        raise SystemExit(
            f"{regression.name}: the edit does not apply ({regression.old!r} not in the template)"
        )
    edited = original.source.replace(regression.old, regression.new)
    model.templates = {
        **base.templates,
        regression.template: Template(regression.template, edited, "<seeded>"),
    }
    return model


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="?", default=str(ROOT.parent / "shared" / "models"))
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    options = Options(examples=args.examples)
    chosen = [r for r in REGRESSIONS if not args.only or r.name in args.only]
    bases: dict[str, Model] = {}
    originals: dict[tuple[str, str], dict[str, list[tuple[str, Outcome, str]]]] = {}
    caught = 0
    start = time.perf_counter()
    print("| regression | what | caught by (new cause keys) |\n|---|---|---|")
    for regression in chosen:
        if regression.model not in bases:
            bases[regression.model] = load_model(str(Path(args.models) / regression.model))
        base = bases[regression.model]
        key = (regression.model, regression.template)
        if key not in originals:
            originals[key] = causes(base, regression.template, options)
        after = causes(seeded(base, regression), regression.template, options)
        new = {
            cause: hits
            for cause, hits in after.items()
            if cause not in originals[key] and any(o is Outcome.FAILED for _, o, _ in hits)
        }
        caught += bool(new)
        shown = ", ".join(f"`{c}`" for c in sorted(new)) or "**missed**"
        print(f"| {regression.name} | {regression.what} | {shown} |")
        if args.verbose:
            for cause, hits in sorted(new.items()):
                for check, outcome, first in hits:
                    print(f"    {cause} [{check}, {outcome.value}]: {first[:150]}")
    print(
        f"\ncaught {caught} of {len(chosen)} ({time.perf_counter() - start:.0f} s, examples={args.examples})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
