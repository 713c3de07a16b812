"""What the suite sees change between successive versions of one model's template.

    python benchmarks/vendor_pairs.py [CORPUS_DIR] [--examples N] [--layers template,engine] [--only MODEL]

The corpus keeps older revisions of llama.cpp's copies of vendors' templates (``NAME@llamacpp-hist*.json``,
each with the date of the commit that last touched it in ``llamacpp_revision``) beside the current one
(``NAME@llamacpp.json``). For every model with two or more versions, ordered by that date (the current one
last), each consecutive pair is run through the same checks as ``benchmarks/corpus_causes.py`` (the
template's own control tokens and BOS/EOS added to a small tokenizer; by default every layer a ``pytest
--model`` run has without ``--tc-generate``: template, tokenizer, reference and engine), and the script
prints, per pair, the findings (cause key, outcome, first line) that only the older and only the newer version has, and those both have that read otherwise (the same cause with another
text: a forced prefix that changed, say). A pair with no difference is a fix (or a regression) the suite did
not see, unless the two versions render the same: for such a pair the script renders the suite's fixed
conversations (the plain ones and the wire shapes, with and without the generation prompt) on both and says
on how many the renderings differ (the plain ones also with each switch the two versions read, such as
``enable_thinking``, on and off; none: a change transformers users never see on them, such as a
reformatting, a workaround for another engine, or a branch those conversations do not reach). Read the others
one by one. An exception escaping a check is an error of ours: the script exits 1.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import re
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus_causes import _model, tokenizer_dir  # noqa: E402

from templatecheck.capabilities import switched, switches  # noqa: E402
from templatecheck.checks import REGISTRY  # noqa: E402
from templatecheck.conversation import PLAIN, WEATHER_TOOL, WIRE, Conversation  # noqa: E402
from templatecheck.model import Subject  # noqa: E402
from templatecheck.options import Options  # noqa: E402
from templatecheck.render import RenderError  # noqa: E402
from templatecheck.result import Layer, Outcome  # noqa: E402

_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
Findings = dict[tuple[str, str], str]  # (cause, outcome) -> the first line of one such finding


Version = tuple[str, Path, str, dict[str, Any]]  # (date, file, template name, entry)


def versions(folder: Path) -> dict[str, list[Version]]:
    """Chains of versions of one llama.cpp template file (``model id: file``), oldest first: the older
    revisions by the date ``llamacpp_revision`` gives (on one day, ``-hist-3`` before ``-hist-2``), the current
    file (``@llamacpp`` or ``@llamacpp-N``) last; only chains of two or more."""
    found: dict[str, list[Version]] = defaultdict(list)
    for file in sorted(folder.glob("*@llamacpp*.json")):
        tag = file.stem.partition("@")[2]
        if not re.fullmatch(r"llamacpp(-\d+)?|llamacpp-hist(-\d+)?", tag):
            continue
        entry = json.loads(file.read_text(encoding="utf-8"))
        lines = _revisions(entry)
        for name in sources(entry):
            line = lines[0] if len(lines) == 1 else next((x for x in lines if f"-{name}.jinja" in x), None)
            if line is None:
                continue
            date = _DATE.search(line)
            when = "current" if "hist" not in tag else (date.group(1) if date else "0000")
            found[f"{entry.get('model_id', file.stem)}: {line.partition(':')[0]}"].append(
                (when, file, name, entry)
            )
    return {
        k: sorted(v, key=lambda x: (x[0] == "current", x[0], -_number(x[1])))
        for k, v in found.items()
        if len(v) > 1
    }


def _masked(line: str) -> str:
    """A finding's first line without its counts (``157 of 165 renderings``), which differ with the sample."""
    return re.sub(r"\d+", "#", line)


def _number(file: Path) -> int:
    """The N of ``@llamacpp-hist-N`` (1 for ``@llamacpp-hist``): among revisions of one day, the higher is older."""
    found = re.search(r"-hist-(\d+)$", file.stem)
    return int(found.group(1)) if found else 1


def _revisions(entry: dict[str, Any]) -> list[str]:
    text = entry.get("llamacpp_revision")
    try:
        value = ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        value = [text]
    return [str(x) for x in value] if isinstance(value, list) else [str(value)]


def sources(entry: dict[str, Any]) -> dict[str, str]:
    """The entry's templates by name (``default`` for a single one)."""
    named = entry.get("chat_template")
    return (
        {"default": named}
        if isinstance(named, str)
        else {str(k): str(v) for k, v in dict(named or {}).items()}
    )


def subject_of(name: str, source: str, entry: dict[str, Any], options: Options, into: Path) -> Subject:
    """One template under test, with a tokenizer that fits it (see ``corpus_causes.tokenizer_dir``)."""
    model = _model(tokenizer_dir(source, entry, into), name, source)
    return Subject(model, model.templates[name], options)


def findings_of(subject: Subject, layers: set[Layer]) -> Findings:
    """The failed and warning findings of the checks of ``layers`` on one template, by cause and outcome."""
    name = subject.template.name
    found: Findings = {}
    for check in REGISTRY.values():
        if check.layer not in layers:
            continue
        try:
            result = check(subject)
        except Exception:
            raise RuntimeError(
                f"error of ours in {check.name} on {name}:\n{traceback.format_exc()}"
            ) from None
        for f in result.findings:
            if f.outcome in (Outcome.FAILED, Outcome.WARNING):
                key = (f.cause or check.name, f.outcome.value)
                found.setdefault(key, f.message.split("\n")[0][:150])
    return found


def renderings(subject: Subject, names: Sequence[str] = ()) -> list[str]:
    """The renderings of the suite's fixed conversations (an error as its text), in a fixed order: the plain
    ones without and with a tool defined, the wire shapes with their calls' arguments as JSON strings and as
    dicts, each without and with the generation prompt; then the plain ones with each of the switches
    ``names`` (the two versions' ``chat_template_kwargs`` switches, as ``renders`` sets them) on and off."""
    calls: list[tuple[Conversation, Any]] = [(m, None) for m in PLAIN.values()]
    calls += [(m, [WEATHER_TOOL]) for m in PLAIN.values()]
    for shape in WIRE:
        tools = {} if shape.tools == "called" else {"tools": None}
        calls += [(shape.messages, tools), ([_as_dicts(m) for m in shape.messages], tools)]
    found = []
    for messages, tools in calls:
        for prompt in (False, True):
            extra = tools if isinstance(tools, dict) else {"tools": tools}
            found.append(_text(subject, messages, add_generation_prompt=prompt, **extra))
    for _, other in switched(subject, names):
        found += [_text(other, m, add_generation_prompt=p) for m in PLAIN.values() for p in (False, True)]
    return found


def _text(subject: Subject, messages: Conversation, **kwargs: Any) -> str:
    try:
        return subject.render(messages, **kwargs)
    except RenderError as error:
        return f"error: {error}"


def _as_dicts(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with its calls' JSON-string arguments parsed into dicts."""
    calls = [
        {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
        for c in message.get("tool_calls") or []
    ]
    return {**message, "tool_calls": calls} if calls else message


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared" / "corpus" / "templates"))
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--layers", default="template,tokenizer,reference,engine")
    parser.add_argument("--only", action="append", default=[], help="a model id (repeatable)")
    args = parser.parse_args()
    options = Options(examples=args.examples)
    layers = {Layer(x) for x in args.layers.split(",")}
    models = {
        m: v for m, v in versions(Path(args.corpus)).items() if not args.only or m.split(":")[0] in args.only
    }
    pairs = seen = same = 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for chain_name, chain in models.items():
            for (old_date, old_file, old_name, old), (
                new_date,
                new_file,
                new_name,
                new,
            ) in itertools.pairwise(chain):
                old_source, new_source = sources(old)[old_name], sources(new)[new_name]
                if old_source == new_source:
                    continue
                pairs += 1
                older_subject = subject_of(old_name, old_source, old, options, Path(tmp) / "a")
                newer_subject = subject_of(new_name, new_source, new, options, Path(tmp) / "b")
                try:
                    before = findings_of(older_subject, layers)
                    after = findings_of(newer_subject, layers)
                except RuntimeError as error:
                    print(error)
                    return 1
                older, newer = sorted(set(before) - set(after)), sorted(set(after) - set(before))
                changed = sorted(
                    k for k in set(before) & set(after) if _masked(before[k]) != _masked(after[k])
                )
                seen += bool(older or newer or changed)
                print(f"\n## {chain_name}: {old_file.stem} ({old_date}) -> {new_file.stem} ({new_date})")
                print(
                    f"revision: {next(x for x in _revisions(new) if x.startswith(chain_name.split(': ')[-1]))[:220]}"
                )
                if not (older or newer or changed):
                    both = sorted({*switches(older_subject), *switches(newer_subject)})
                    a, b = renderings(older_subject, both), renderings(newer_subject, both)
                    differ = sum(x != y for x, y in zip(a, b, strict=True))
                    same += not differ
                    print(f"  no difference the suite sees ({differ} of {len(a)} fixed renderings differ)")
                for cause, outcome in changed:
                    print(
                        f"  changed:    {outcome:7} {cause}:\n    older: {before[cause, outcome]}\n    newer: {after[cause, outcome]}"
                    )
                for cause, outcome in older:
                    print(f"  only older: {outcome:7} {cause}: {before[cause, outcome]}")
                for cause, outcome in newer:
                    print(f"  only newer: {outcome:7} {cause}: {after[cause, outcome]}")
    elapsed = time.perf_counter() - start
    print(f"\n{pairs} pairs of {len(models)} template files, layers {args.layers}, examples={args.examples}, "
          f"{elapsed:.0f} s: the suite sees a difference in {seen}; of the {pairs - seen} others, {same} render "
          "the fixed conversations identically")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
