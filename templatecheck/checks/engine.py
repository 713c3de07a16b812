"""Engine layer: the template through the other Jinja engines that serve it, against transformers' rendering.

One check per engine (``minijinja``, ``hfjs``), not one check with a row per engine: each engine is installed
on its own and serves its own users (Text Generation Inference; transformers.js and the Hub's widgets), so each
is skipped on its own with its install command, a baseline can accept one engine's differences without the
other's, and each cause's key says whose users it breaks. Beside them, ``portability`` is the static lint
(the syntax tree only, no render): constructs known not to survive an engine, also in branches the sampled
conversations never reach.

A difference is reported once per root cause: its group (what differs) and the template line that makes it,
with the smallest conversation that shows it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import jinja2.nodes

from templatecheck import conversation as conv
from templatecheck.capabilities import probe
from templatecheck.causes import Cause, defect, policy
from templatecheck.checks.base import check
from templatecheck.engines import (
    ENGINES,
    FAILS,
    LOOP,
    METHODS,
    PRINTS,
    RULES,
    WHITESPACE,
    Engine,
    Hit,
    Rule,
    scan,
)
from templatecheck.model import Subject
from templatecheck.render import RenderError, parse_template
from templatecheck.result import Finding, Layer, note, skipped
from templatecheck.sample import minimize, sample
from templatecheck.text import diff, visible

#: What differs between transformers' rendering and an engine's, each with its severity by rule and the fix
#: when no construct of the template names a better one.
GROUPS: dict[str, tuple[bool, str, str]] = {
    # group: (fails, why, fix)
    "fails": (True, "cannot parse or run the template on a valid conversation: every such request fails", "write the construct the engine names in a portable form (see `portability`)"),
    "string_method": (True, "lacks a Python string or dict method the template calls: the request fails or prints other text", "use a Jinja filter or test instead of the Python method"),
    "loop_variable": (True, "lacks a `loop` attribute the template reads: the request fails or prints other text", "use `loop.index0`, `loop.first`, `loop.last` or `loop.previtem`, which every engine has"),
    "raise_exception": (True, "refuses a conversation transformers renders, or renders one transformers refuses: clients see another contract", "raise only on input every engine sees the same way (roles, missing fields)"),
    "printing": (True, "prints a value (None, a boolean, a list or dict) in other text than Python does: the model reads a prompt it was not trained on", "print text of your own (`'yes' if x else 'no'`), or `|tojson` for lists and dicts"),
    "other": (True, "renders other text than transformers: the model reads a prompt it was not trained on", "find the construct at the named line in the engine's documentation, and write it another way"),
    "whitespace": (False, "renders the same text with other whitespace: the prompt differs only in spaces and newlines, which the model may or may not tolerate", "trim explicitly with `{%-`/`-%}` and `{{-`/`-}}` instead of relying on trim_blocks/lstrip_blocks"),
    "tojson": (False, "serializes JSON with other spacing or escaping (`\\u003c` for `<`): the same data in other characters", "nothing portable serializes identically; keep JSON inputs free of `<`, `>`, `&`, `'` where it matters"),
}  # fmt: skip


def _causes(engine: Engine) -> dict[str, Cause]:
    made = {}
    for group, (fails, why, _) in GROUPS.items():
        text = f"{engine.title} ({engine.serves}) {why}"
        made[group] = (defect if fails else policy)(f"{engine.name}.{group}", text)
    return made


ENGINE_CAUSES: dict[str, dict[str, Cause]] = {engine.name: _causes(engine) for engine in ENGINES}

UNSUPPORTED = policy(
    "portability.unsupported",
    "a construct another engine cannot run; the engine checks fail when a sampled conversation reaches it, "
    "the lint names it before any user's conversation does, also in branches the sample does not reach",
)
PRINTS_DIFFERENTLY = policy(
    "portability.prints_differently",
    "a construct another engine prints in other text (a boolean as `true`, `loop.depth` as nothing)",
)
UNTRIMMED = policy(
    "portability.untrimmed_blocks",
    "block tags that rely on trim_blocks/lstrip_blocks, which Text Generation Inference does not set: its "
    "users' prompts get extra newlines and indentation",
)


# ------------------------------------------------------------------------------------------ the conversations


@dataclass(frozen=True)
class Case:
    """One conversation compared, with its generation prompt flag."""

    conversation: conv.Conversation
    add_generation_prompt: bool


def cases(subject: Subject) -> list[Case]:
    """The plain conversations with and without the generation prompt, then the suite's drawn sample."""
    plain = [Case(c, flag) for c in conv.PLAIN.values() for flag in (False, True)]
    count = max(1, subject.options.examples)
    drawn = sample(probe(subject).support, end_with_user=True, count=count)
    return plain + [Case(c, True) for c in drawn if _exact_in_json(c)]


#: The largest integer every engine's JSON numbers hold exactly (JavaScript's, a double's 53-bit mantissa).
_EXACT = 2**53


def _exact_in_json(value: object) -> bool:
    """Whether ``value`` holds no integer past :data:`_EXACT`: such a number prints otherwise in an engine whose
    numbers are doubles (``1.1e+23``), a difference of the number's type, not of the template."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_EXACT <= value <= _EXACT
    if isinstance(value, dict):
        return all(_exact_in_json(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_exact_in_json(v) for v in value)
    return True


def render_pairs(
    subject: Subject, engine: Engine, batch: list[Case]
) -> list[tuple[str | RenderError, str | RenderError]]:
    """For each case, transformers' rendering and the engine's (each a text or its error)."""
    out: list[tuple[str | RenderError, str | RenderError]] = [("", "")] * len(batch)
    renderer, source = subject.model.renderer, subject.template.source
    for flag in (False, True):
        chosen = [i for i, c in enumerate(batch) if c.add_generation_prompt is flag]
        if not chosen:
            continue
        conversations = [batch[i].conversation for i in chosen]
        ours = subject.render_each(conversations, add_generation_prompt=flag)
        calls = subject.calls(conversations, add_generation_prompt=flag)
        theirs = engine.render_many(
            source,
            [renderer.context(source, c, keep_none=engine.keeps_none) for c in calls],
            renderer.limits,
            renderer.clock,
        )
        for i, a, b in zip(chosen, ours, theirs, strict=True):
            out[i] = (a, b)
    return out


# ------------------------------------------------------------------------------------------ the classifier

#: Not a portability rule (both engines have ``tojson``), only where a ``tojson`` difference comes from.
TOJSON = Rule("|tojson", ("minijinja",), PRINTS, GROUPS["tojson"][2], "", "")


def construct_hits(source: str) -> list[Hit]:
    """The lint's constructs in the template, and its ``tojson`` filters (where JSON differences come from)."""
    tree = parse_template(source)
    filters = [
        Hit(TOJSON, f.lineno, "|tojson") for f in tree.find_all(jinja2.nodes.Filter) if f.name == "tojson"
    ]
    return scan(tree, source) + filters


@dataclass(frozen=True)
class Difference:
    """One root cause seen on one conversation: the group, the template line (0: unknown), the construct."""

    group: str
    line: int
    construct: str
    fix: str
    detail: str


_UNICODE = re.compile(r"\\u([0-9a-fA-F]{4})")
_LINE = re.compile(r"\(in [^:()]*:(\d+)\)")


#: The pieces a diff aligns: words, and single other characters (a character-level diff of long renderings
#: costs quadratic time; words align the same differences at a fraction of it).
_PIECES = re.compile(r"\w+|\W")


def _diff(ours: str, theirs: str) -> list[tuple[int, int, str, str]]:
    """Where two texts differ: (start, end in ours, our text, theirs), from a diff of the words and other
    characters between their common prefix and suffix (capped, so a huge rendering costs a bounded diff)."""
    start = 0
    while start < min(len(ours), len(theirs)) and ours[start] == theirs[start]:
        start += 1
    end = 0
    while end < min(len(ours), len(theirs)) - start and ours[-1 - end] == theirs[-1 - end]:
        end += 1
    a, b = ours[start : len(ours) - end][:4000], theirs[start : len(theirs) - end][:4000]
    pa, pb = _PIECES.findall(a), _PIECES.findall(b)
    ia, ib = _offsets(pa), _offsets(pb)
    matcher = difflib.SequenceMatcher(None, pa, pb, autojunk=False)
    return [
        (start + ia[i1], start + ia[i2], a[ia[i1] : ia[i2]], b[ib[j1] : ib[j2]])
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
        if op != "equal"
    ]


def _offsets(pieces: list[str]) -> list[int]:
    """The character offset of each piece, and the end."""
    offsets = [0]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    return offsets


_SPACE = re.compile(r"\s+")  # str.isspace's characters, as re's \s is for str patterns


def _runs(text: str) -> list[tuple[int, int, str]]:
    """Each run of whitespace of ``text``: (visible characters before it, where it starts, the run)."""
    found, removed = [], 0
    for match in _SPACE.finditer(text):
        found.append((match.start() - removed, match.start(), match.group()))
        removed += len(match.group())
    return found


def _space_runs(ours: str, theirs: str) -> list[tuple[int, str, str]]:
    """Where two texts that differ only in whitespace differ: (position in ours, our run, theirs) for each
    run of whitespace between the same two visible characters that is not the same in both."""
    mine = {before: (start, run) for before, start, run in _runs(ours)}
    other = {before: run for before, _, run in _runs(theirs)}
    found: list[tuple[int, str, str]] = []
    spaces = 0  # whitespace characters of ours before the position reached
    for before in sorted(mine.keys() | other.keys()):
        start, run = mine.get(before, (before + spaces, ""))
        if run != other.get(before, ""):
            found.append((start, run, other.get(before, "")))
        spaces += len(run)
    return found


def _squeezed(text: str) -> str:
    return _SPACE.sub("", text)


def _segments(ours: str, theirs: str) -> list[tuple[int, str, str]]:
    """Where two renderings differ: (position in ours, our text, theirs). When they differ only in
    whitespace, the runs of whitespace that differ; otherwise the diff is of the texts without whitespace (a
    newline more would misalign the rest), its positions mapped back into ours."""
    squeezed, other = _squeezed(ours), _squeezed(theirs)
    if squeezed == other:
        return _space_runs(ours, theirs)
    kept = [i for i, c in enumerate(ours) if not c.isspace()]
    kept.append(len(ours))
    return [(kept[at], mine, theirs_) for at, _, mine, theirs_ in _diff(squeezed, other)]


def _printed(text: str) -> str:
    return text.lower().replace("'", '"').replace("none", "")


def group_of(ours: str, at: int, mine: str, theirs: str) -> str:
    """What one differing segment is: whitespace, tojson, printing or other."""
    if not mine.strip() and not theirs.strip():
        before = ours[:at].rstrip(" ")[-1:]
        spaces_only = "\n" not in mine + theirs
        return (
            "tojson"
            if spaces_only and before in (":", ",") and '"' in ours[max(0, at - 40) : at]
            else "whitespace"
        )
    if _UNICODE.sub(lambda m: chr(int(m.group(1), 16)), mine) == _UNICODE.sub(
        lambda m: chr(int(m.group(1), 16)), theirs
    ):
        return "tojson"
    if _printed(mine) == _printed(theirs):
        return "printing"
    return "other"


def _literal_line(source: str, context: str) -> int:
    """The template line whose text holds the longest tail (3+ characters) of ``context``; 0 when none."""
    for size in range(min(len(context), 40), 2, -1):
        at = source.find(context[-size:])
        if at >= 0:  # the line of the tail's last character: where the template was when the texts parted
            return source.count("\n", 0, at + size - 1) + 1
    return 0


def _nearest(hits: list[Hit], line: int, keep: Callable[[Hit], bool]) -> Hit | None:
    chosen = [h for h in hits if keep(h)]
    return min(chosen, key=lambda h: abs(h.line - line), default=None) if chosen else None


_PRINTING = [r for r in RULES if r.effect == PRINTS]


def differences(source: str, hits: list[Hit], engine: Engine, ours: str, theirs: str) -> list[Difference]:
    """The root causes of one pair of renderings: one per group, each at the line that makes it."""
    found: dict[str, Difference] = {}
    spaced = _squeezed(ours) == _squeezed(theirs)
    for at, mine, other in _segments(ours, theirs):
        group = group_of(ours, at, mine, other)
        if spaced and group not in ("whitespace", "tojson"):
            group = "whitespace"  # only whitespace differs; the diff aligned repeated text another way
        if group in found:
            continue
        line = _literal_line(source, ours[:at])
        shown = f"at character {at}: transformers {visible(mine)!r}, {engine.title} {visible(other)!r}"
        hit = None
        if group == "tojson":
            hit = _nearest(hits, line, lambda h: h.rule is TOJSON)
        elif group == "whitespace" and engine.name == "minijinja":
            hit = _nearest(hits, line, lambda h: h.rule.effect == WHITESPACE)
        elif group == "other":
            hit = _nearest(hits, line, lambda h: h.rule in _PRINTING and engine.name in h.rule.engines)
            if hit is not None:
                group = "loop_variable" if hit.rule in LOOP.values() else "printing"
        line = hit.line if hit is not None else line
        construct = hit.written if hit is not None else _source_line(source, line)
        fix = hit.rule.portable if hit is not None else GROUPS[group][2]
        found.setdefault(group, Difference(group, line, construct, fix, shown))
    return list(found.values())


def failure(source: str, hits: list[Hit], engine: Engine, error: RenderError) -> Difference:
    """The root cause of an engine's error on a conversation transformers renders."""
    if error.kind == "refused":
        said = error.message.removeprefix("template refused: ")
        line = _literal_line(source, said) if said else 0
        detail = f"{engine.title} refuses: {said}"
        return Difference(
            "raise_exception", line, "raise_exception(...)", GROUPS["raise_exception"][2], detail
        )
    given = _LINE.search(error.message)
    line = int(given.group(1)) if given else 0
    breaks = [h for h in hits if engine.name in h.rule.engines and h.rule.effect == FAILS]
    named = [h for h in breaks if (h.rule.says or _name(h)) in error.message]
    pool = named or breaks
    if line:  # MiniJinja names the line: only a construct on it is the cause
        pool = [h for h in pool if h.line == line]
    hit = pool[0] if pool else None
    if hit is None:
        hit = _named(source, error.message, line)
    group = "fails"
    if (hit is not None and hit.rule in METHODS.values()) or "UnknownMethod" in error.message:
        group = "string_method"
    elif hit is not None and hit.rule in LOOP.values():
        group = "loop_variable"
    line = hit.line if hit is not None else line
    construct = hit.written if hit is not None else _source_line(source, line)
    fix = hit.rule.portable if hit is not None else GROUPS[group][2]
    return Difference(group, line, construct, fix, f"{engine.title}: {error}")


#: The filter, test or attribute an engine's error names (``Cannot apply filter "trim"``, ``unknown filter: x``).
_NAMED = re.compile(
    r'filter "(\w+)"|filter: (\w+)|filter (\w+) is unknown|method named (\w+)|test (\w+) is unknown'
)


def _named(source: str, message: str, line: int) -> Hit | None:
    """Where the template uses the filter, test or method an error message names (on ``line`` when given)."""
    match = _NAMED.search(message)
    if match is None:
        return None
    return _named_use(source, next(g for g in match.groups() if g), line)


@lru_cache(maxsize=256)
def _named_use(source: str, name: str, line: int) -> Hit | None:
    nodes: list[jinja2.nodes.Node] = [
        n for n in parse_template(source).find_all((jinja2.nodes.Filter, jinja2.nodes.Test)) if n.name == name
    ]
    nodes += [n for n in parse_template(source).find_all(jinja2.nodes.Getattr) if n.attr == name]
    nodes = [n for n in nodes if not line or n.lineno == line]
    if not nodes:
        return None
    first = min(nodes, key=lambda n: n.lineno)
    written = f".{name}" if isinstance(first, jinja2.nodes.Getattr) else f"|{name}"
    return Hit(Rule(written, (), FAILS, GROUPS["fails"][2], "", ""), first.lineno, written)


def _name(hit: Hit) -> str:
    """The name a construct goes by in an engine's error message (``find`` of ``.find(...)``)."""
    words = [w for w in re.findall(r"[A-Za-z_]+", hit.written.split("(")[0]) if len(w) >= 3]
    return words[-1] if words else "\0"


def _source_line(source: str, line: int) -> str:
    lines = source.split("\n")
    return lines[line - 1].strip()[:80] if 0 < line <= len(lines) else "(no line named)"


def compare(
    subject: Subject,
    hits: list[Hit],
    engine: Engine,
    case: Case,
    pair: tuple[str | RenderError, str | RenderError],
) -> list[Difference]:
    """The root causes one conversation shows (none when the engine agrees with transformers)."""
    ours, theirs = pair
    source = subject.template.source
    if isinstance(ours, RenderError):
        if ours.kind == "refused" and isinstance(theirs, str):
            return [
                Difference(
                    "raise_exception",
                    0,
                    "raise_exception(...)",
                    GROUPS["raise_exception"][2],
                    f"transformers: {ours}; {engine.title} renders it",
                )
            ]
        return []  # the template's own crash: `renders` reports it
    if isinstance(theirs, RenderError):
        return [failure(source, hits, engine, theirs)]
    return differences(source, hits, engine, ours, theirs) if ours != theirs else []


# -------------------------------------------------------------------------------------------------- the checks


def engine_findings(subject: Subject, engine: Engine) -> list[Finding]:
    """One finding per root cause (group and line), with the smallest conversation that shows it, and a note
    of how many conversations were compared."""
    why = engine.missing()
    if why is not None:
        return [skipped(f"{engine.title} is not available: {why}")]
    source = subject.template.source
    hits = construct_hits(source)
    batch = cases(subject)
    first: dict[tuple[str, int], tuple[Case, Difference]] = {}
    identical = 0
    for case, pair in zip(batch, render_pairs(subject, engine, batch), strict=True):
        found = compare(subject, hits, engine, case, pair)
        identical += not found
        for d in found:
            first.setdefault(_key(d), (case, d))
    findings = [_finding(subject, hits, engine, case, d) for case, d in first.values()]
    findings.append(note(f"{engine.title}: {identical} of {len(batch)} conversations render identically"))
    return findings


def _key(d: Difference) -> tuple[str, int]:
    """The root cause of a difference: its group and line; JSON escaping is the engine's, wherever the template
    serializes (one finding, whatever the number of ``|tojson``)."""
    return (d.group, 0 if d.group == "tojson" else d.line)


def _finding(subject: Subject, hits: list[Hit], engine: Engine, case: Case, d: Difference) -> Finding:
    def key(candidate: conv.Conversation) -> str | None:
        small = Case(candidate, case.add_generation_prompt)
        pair = render_pairs(subject, engine, [small])[0]
        return "yes" if any(_key(x) == _key(d) for x in compare(subject, hits, engine, small, pair)) else None

    small = minimize(case.conversation, key) if len(case.conversation) > 1 else case.conversation
    pair = render_pairs(subject, engine, [Case(small, case.add_generation_prompt)])[0]
    again = compare(subject, hits, engine, Case(small, case.add_generation_prompt), pair)
    d = next((x for x in again if _key(x) == _key(d)), d)
    where = f"line {d.line}" if d.line else "a line it does not name"
    message = f"{engine.title} {GROUPS[d.group][1].split(':')[0]}: {where}, `{d.construct}`\n{d.detail}"
    ours, theirs = pair
    if isinstance(ours, str) and isinstance(theirs, str) and ours != theirs:
        message += "\n" + diff(ours, theirs, labels=("transformers", engine.name))
    message += f"\nconversation (add_generation_prompt={case.add_generation_prompt}):\n{conv.describe(small)}"
    return ENGINE_CAUSES[engine.name][d.group](message, fix=d.fix)


@check(Layer.ENGINE, needs="renders")
def minijinja(subject: Subject) -> list[Finding]:
    """The template renders in MiniJinja as Text Generation Inference sets it up the same as in transformers,
    on the plain conversations and the drawn sample.

    Catches templates that TGI cannot parse or run (a Python method its compatibility layer lacks), that rely
    on trim_blocks/lstrip_blocks (TGI sets neither), and that print values or escape JSON differently there.
    """
    return engine_findings(subject, ENGINES[0])


@check(Layer.ENGINE, needs="renders")
def hfjs(subject: Subject) -> list[Finding]:
    """The template renders in @huggingface/jinja (transformers.js, the Hub's widgets) the same as in
    transformers, on the plain conversations and the drawn sample.

    Catches templates it cannot parse or run (Python string methods, filters and ``loop`` attributes it lacks,
    ``is in``, ``{% raw %}``), and that print ``None``, booleans, lists or dicts other than Python does.
    """
    return engine_findings(subject, ENGINES[1])


@check(Layer.ENGINE, needs="parses")
def portability(subject: Subject) -> list[Finding]:
    """The template uses no construct known not to survive another engine (the syntax tree only).

    Catches, before any conversation reaches them, Python string methods, filters, ``loop`` attributes,
    operators and statements that MiniJinja (TGI) or @huggingface/jinja cannot run or prints differently, and
    block tags that rely on trim_blocks/lstrip_blocks, which TGI does not set. One finding per construct, with
    every line it is on.
    """
    source = subject.template.source
    lines: dict[str, list[Hit]] = {}
    for hit in scan(parse_template(source), source):
        lines.setdefault(hit.rule.construct, []).append(hit)
    findings = []
    for found in lines.values():
        rule = found[0].rule
        rule_cause = {FAILS: UNSUPPORTED, PRINTS: PRINTS_DIFFERENTLY, WHITESPACE: UNTRIMMED}[rule.effect]
        at = ", ".join(str(h.line) for h in found[:8]) + (
            f" and {len(found) - 8} more" if len(found) > 8 else ""
        )
        names = " and ".join(
            {"minijinja": "MiniJinja (TGI)", "hfjs": "@huggingface/jinja"}[e] for e in rule.engines
        )
        verb = {
            FAILS: "cannot run",
            PRINTS: "prints differently",
            WHITESPACE: "renders other whitespace for",
        }[rule.effect]
        findings.append(rule_cause(f"{names} {verb} {rule.construct}: line {at}", fix=rule.portable))
    return findings


__all__ = [
    "ENGINE_CAUSES",
    "GROUPS",
    "Case",
    "Difference",
    "cases",
    "compare",
    "construct_hits",
    "differences",
    "hfjs",
    "minijinja",
    "portability",
    "render_pairs",
]
