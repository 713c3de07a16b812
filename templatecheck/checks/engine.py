"""Engine layer: the template through the other Jinja engines that serve it, against transformers' rendering.

One check per engine (``minijinja``, ``hfjs``), not one check with a row per engine: each engine is installed
on its own and serves its own users (Text Generation Inference; transformers.js and the Hub's widgets), so each
is skipped on its own with its install command, a baseline can accept one engine's differences without the
other's, and each cause's key says whose users it breaks. Beside them, ``portability`` is the static lint
(the syntax tree only, no render): constructs known not to survive an engine, also in branches the sampled
conversations never reach.

A difference is reported once per root cause: its group (what differs) and the template line that makes it,
with the smallest conversation that shows it. A difference whose root cause another check owns and reports on
the template (:data:`FOREIGN`: HTML-escaped tool JSON, a dict printed as a Python repr, block tags the lint
names) is a note naming that cause, not a second failure.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2.nodes

from templatecheck import conversation as conv
from templatecheck.capabilities import CALL_IDS, probe
from templatecheck.causes import Cause, defect, policy
from templatecheck.checks.base import ahead_of, check, owner_reports
from templatecheck.checks.template import LIST_REPR
from templatecheck.checks.tools import (
    DEFINITIONS_REPR,
    HTML_ESCAPED,
    HTML_ESCAPED_FIX,
    markup_filters,
)
from templatecheck.engines import (
    ENGINES,
    FAILS,
    LATER,
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
from templatecheck.render import RenderError, nodes_of, parse_template
from templatecheck.result import Finding, Layer, note, skipped
from templatecheck.sample import minimize, sample
from templatecheck.text import common_prefix, diff, visible

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


@dataclass(frozen=True)
class Foreign:
    """A group of differences whose root cause another check owns, which reports it: the owner's causes it may
    be (the first that the conversation holds and the owner reports on the template), what differs, the fix,
    and the engine's own group it is reported as when the owner reports none of them."""

    causes: tuple[Cause, ...]
    why: str
    fix: str
    fallback: str


#: Differences whose root cause another check owns. The template's own defects, which a template-layer check
#: reports (there the engine renders what the template means and transformers renders the defect), and block
#: tags the ``portability`` lint names: each is noted as the owner's cause (the owner reports it, once; see
#: :mod:`templatecheck.checks`), one note whatever the number of lines.
FOREIGN: dict[str, Foreign] = {
    "html_escaped": Foreign(
        (HTML_ESCAPED,),
        "renders as plain text what transformers HTML-escapes (`&#34;` for a quote, `&lt;` for `<`: a string "
        "joined to Markup)",
        HTML_ESCAPED_FIX,
        "other",
    ),
    # `|string` of a dict or list: a Python repr in transformers, an error in @huggingface/jinja; rendering the
    # value as JSON fixes both
    "repr": Foreign(
        (LIST_REPR, DEFINITIONS_REPR),
        "cannot print a dict or list with `|string`, which transformers prints as a Python repr",
        "render a value that is not a string with | tojson, or its text parts",
        "fails",
    ),
    # the same value printed: a Python repr in transformers, JSON in the engine
    "repr_printed": Foreign(
        (LIST_REPR,),
        "prints a dict or list other than the Python repr transformers prints",
        "render a value that is not a string with | tojson, or its text parts",
        "printing",
    ),
    "untrimmed": Foreign(
        (UNTRIMMED,),
        GROUPS["whitespace"][1].split(":")[0] + " where a block tag relies on trim_blocks/lstrip_blocks",
        GROUPS["whitespace"][2],
        "whitespace",
    ),
}


def _holds(subject: Subject, cause: Cause, conversation: conv.Conversation) -> bool:
    """Whether ``conversation`` holds what makes ``cause`` (list content, tools)."""
    if cause is LIST_REPR:
        return any(isinstance(m.get("content"), list) for m in conversation)
    if cause is DEFINITIONS_REPR:
        return subject.client_tools(conversation) is not None
    return True


# ------------------------------------------------------------------------------------------ the conversations


@dataclass(frozen=True)
class Case:
    """One conversation compared, with its generation prompt flag."""

    conversation: conv.Conversation
    add_generation_prompt: bool


def cases(subject: Subject) -> list[Case]:
    """The plain conversations with and without the generation prompt, then the suite's drawn sample, less its
    conversations with a tool result given as an object: no host of these engines sends one (TGI's messages
    and the OpenAI form take text), and what transformers does with one is the ``tools`` check's hazard.
    The same for every engine: chosen once per template."""
    key = ("engine cases", *subject.template.key, subject.options.examples)
    if key not in subject.model.cache:
        subject.model.cache[key] = tuple(_cases(subject))
    return list(subject.model.cache[key])


def _cases(subject: Subject) -> list[Case]:
    plain = [Case(c, flag) for c in conv.PLAIN.values() for flag in (False, True)]
    count = max(1, subject.options.examples)
    drawn = sample(probe(subject).support, end_with_user=True, count=count)
    exchange = [Case(c, True) for c in _tool_exchange(subject)]
    return plain + exchange + [Case(c, True) for c in drawn if _exact_in_json(c) and not _object_result(c)]


#: Text of a tool call's arguments and of its result with the characters JSON encoders escape otherwise
#: (an apostrophe, angle brackets, an ampersand), as a search query or a web page holds them.
WIRE_TEXT = ("rock 'n' roll <live> & more", "it's <b>sunny</b> & warm")


def _tool_exchange(subject: Subject) -> list[conv.Conversation]:
    """For a template that renders tool calls, one tool exchange as a client sends it, with :data:`WIRE_TEXT`
    in the call's arguments and its result: every such template is compared on it, whatever the sample draws."""
    caps = probe(subject)
    if not caps.tool_calls:
        return []
    query, result = WIRE_TEXT
    arguments: object = {"query": query} if caps.object_arguments else json.dumps({"query": query})
    call = {"id": CALL_IDS[0], "type": "function", "function": {"name": "search", "arguments": arguments}}
    turns: conv.Conversation = [
        conv.user("Find it"),
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ]
    if caps.tool_role:
        turns.append({"role": "tool", "tool_call_id": CALL_IDS[0], "name": "search", "content": result})
    return [[*turns, conv.assistant("Found it."), conv.user("Thanks")]]


def _object_result(conversation: conv.Conversation) -> bool:
    """Whether a tool message of ``conversation`` has content that is neither text nor a list of parts."""
    return any(m.get("role") == "tool" and isinstance(m.get("content"), dict) for m in conversation)


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
    """For each case, transformers' rendering and the engine's (each a text or its error); the engine's are
    those sent ahead (:func:`send_ahead`) where the same were."""
    out: list[tuple[str | RenderError, str | RenderError]] = [("", "")] * len(batch)
    renderer, source = subject.model.renderer, subject.template.source
    for flag, chosen, contexts in _requests(subject, engine, batch):
        ours = subject.render_each([batch[i].conversation for i in chosen], add_generation_prompt=flag)
        ahead = LATER.take(_ahead_key(subject, engine, flag))
        theirs = (
            ahead[1]
            if ahead is not None and ahead[0] == contexts
            else engine.render_many(source, contexts, renderer.limits, renderer.clock)
        )
        for i, a, b in zip(chosen, ours, theirs, strict=True):
            out[i] = (a, b)
    return out


def _requests(
    subject: Subject, engine: Engine, batch: list[Case]
) -> list[tuple[bool, list[int], list[dict[str, Any]]]]:
    """The engine's requests for ``batch``: per value of ``add_generation_prompt``, the cases' indices and the
    variables each renders with."""
    renderer, source = subject.model.renderer, subject.template.source
    requests = []
    for flag in (False, True):
        chosen = [i for i, c in enumerate(batch) if c.add_generation_prompt is flag]
        if chosen:
            calls = subject.calls([batch[i].conversation for i in chosen], add_generation_prompt=flag)
            contexts = [renderer.context(source, c, keep_none=engine.keeps_none) for c in calls]
            requests.append((flag, chosen, contexts))
    return requests


def send_ahead(subject: Subject, engine: Engine) -> None:
    """Send the engine's renders of the template's cases to the background (:data:`~templatecheck.engines.LATER`),
    to be made while this process waits on another check's work; :func:`render_pairs` takes them."""
    if engine.missing() is not None:
        return
    renderer, source = subject.model.renderer, subject.template.source
    for flag, _, contexts in _requests(subject, engine, cases(subject)):

        def work(contexts: list[dict[str, Any]] = contexts) -> tuple[list[dict[str, Any]], list[Any]]:
            return contexts, engine.render_many(source, contexts, renderer.limits, renderer.clock)

        LATER.send(_ahead_key(subject, engine, flag), work)


def _ahead_key(subject: Subject, engine: Engine, flag: bool) -> tuple[Any, ...]:
    """What the engine's request for the template's cases with ``add_generation_prompt=flag`` is sent ahead
    under (besides its contexts, which the taker compares)."""
    renderer = subject.model.renderer
    return (engine.name, subject.template.source, renderer.clock, renderer.limits, flag)


# ------------------------------------------------------------------------------------------ the classifier

#: Not a portability rule (both engines have ``tojson``), only where a ``tojson`` difference comes from.
TOJSON = Rule("|tojson", ("minijinja",), PRINTS, GROUPS["tojson"][2], "", "")


#: Not a portability rule either: the filters that make Markup, where transformers' HTML escaping comes from.
MARKUP = Rule("|safe", (), PRINTS, HTML_ESCAPED_FIX, "", "")
#: Nor ``trim``: Python's ``str.strip`` also strips the separators ``\x1c``-``\x1f`` and ``\x85``, which the
#: other engines keep; only text that begins or ends with such a character renders otherwise.
TRIM = Rule(
    "|trim",
    (),
    PRINTS,
    "nothing to change in the template: only text that begins or ends with such a separator renders otherwise",
    "",
    "",
)


def _unusual(text: str) -> bool:
    """Whether whitespace that differs holds a character besides space, tab and newline (what ``trim`` does)."""
    return any(c not in " \t\n\r" for c in text)


@lru_cache(maxsize=256)
def construct_hits(source: str) -> tuple[Hit, ...]:
    """The lint's constructs in the template, its ``tojson`` filters (where JSON differences come from) and
    the filters that make Markup (where HTML escaping comes from); kept per source, as several checks ask."""
    tree = parse_template(source)
    filters = [
        Hit(TOJSON, f.lineno, "|tojson") for f in nodes_of(tree, jinja2.nodes.Filter) if f.name == "tojson"
    ]
    markup = [Hit(MARKUP, line, name) for line, name in markup_filters(source)]
    trims = [Hit(TRIM, f.lineno, "|trim") for f in nodes_of(tree, jinja2.nodes.Filter) if f.name == "trim"]
    return tuple(scan(tree, source) + filters + markup + trims)


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
    start = common_prefix(ours, theirs)
    end = common_prefix(ours[start:][::-1], theirs[start:][::-1])
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
    """Where two texts that differ only in whitespace differ: for each run of whitespace between the same two
    visible characters that is not the same in both, (position in ours, our part, theirs), the parts the
    two runs do not share at their ends."""
    mine = {before: (start, run) for before, start, run in _runs(ours)}
    other = {before: run for before, _, run in _runs(theirs)}
    found: list[tuple[int, str, str]] = []
    spaces = 0  # whitespace characters of ours before the position reached
    for before in sorted(mine.keys() | other.keys()):
        start, run = mine.get(before, (before + spaces, ""))
        spaces += len(run)
        theirs_run = other.get(before, "")
        if run != theirs_run:
            head = common_prefix(run, theirs_run)
            tail = common_prefix(run[head:][::-1], theirs_run[head:][::-1])
            found.append(
                (start + head, run[head : len(run) - tail], theirs_run[head : len(theirs_run) - tail])
            )
    return found


def _squeezed(text: str) -> str:
    return _SPACE.sub("", text)


def _segments(
    ours: str, theirs: str, squeezed_pair: tuple[str, str] | None = None
) -> list[tuple[int, str, str]]:
    """Where two renderings differ: (position in ours, our text, theirs). When they differ only in
    whitespace, the runs of whitespace that differ; otherwise the diff is of the texts without whitespace
    (``squeezed_pair``, made here when not given: a newline more would misalign the rest), its positions
    mapped back into ours."""
    squeezed, other = squeezed_pair or (_squeezed(ours), _squeezed(theirs))
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


#: The HTML escapes Python's Jinja writes for the characters of a string joined to Markup.
_ENTITY = re.compile(r"&(?:#34|#39|quot|amp|lt|gt);")


def markup_escaped(ours: str, at: int, mine: str, theirs: str) -> bool:
    """Whether transformers' text at ``at`` (``mine``) lies inside HTML escapes (``&#34;``) of the characters
    the engine writes there (``theirs``): Python's Jinja escapes a string joined to Markup (``'...' + x|safe``),
    which the other engines do not do."""
    end = at + len(mine)
    spans = [m for m in _ENTITY.finditer(ours, max(0, at - 6), end + 6) if m.start() < end and at < m.end()]
    if not mine or not spans or spans[0].start() > at or spans[-1].end() < end:
        return False
    return set(theirs) <= {html.unescape(m.group()) for m in spans}


def _literal_line(source: str, context: str) -> int:
    """The template line whose text holds the longest tail (3+ characters) of ``context``; 0 when none."""
    return _tail_line(source, context[-40:])


@lru_cache(maxsize=4096)
def _tail_line(source: str, context: str) -> int:
    for size in range(len(context), 2, -1):
        at = source.find(context[-size:])
        if at >= 0:  # the line of the tail's last character: where the template was when the texts parted
            return source.count("\n", 0, at + size - 1) + 1
    return 0


def _nearest(hits: Sequence[Hit], line: int, keep: Callable[[Hit], bool]) -> Hit | None:
    chosen = [h for h in hits if keep(h)]
    return min(chosen, key=lambda h: abs(h.line - line), default=None) if chosen else None


_PRINTING = [r for r in RULES if r.effect == PRINTS]


def reprs(conversation: conv.Conversation) -> list[str]:
    """The Python reprs transformers prints for the conversation's dict tool results and list contents."""
    values = [m.get("content") for m in conversation]
    return [repr(v) for v in values if isinstance(v, (dict, list))]


def _inside(ours: str, at: int, texts: list[str]) -> bool:
    """Whether position ``at`` of ``ours`` lies inside an occurrence of one of ``texts``."""
    for text in texts:
        start = ours.find(text)
        while start >= 0:
            if start <= at < start + len(text):
                return True
            start = ours.find(text, start + 1)
    return False


def differences(
    source: str, hits: Sequence[Hit], engine: Engine, ours: str, theirs: str, printed: list[str] | None = None
) -> list[Difference]:
    """The root causes of one pair of renderings: one per group, each at the line that makes it; a difference
    inside one of ``printed`` (the reprs of the conversation's dicts and lists) is that value's repr."""
    found: dict[str, Difference] = {}
    squeezed = _squeezed(ours), _squeezed(theirs)
    spaced = squeezed[0] == squeezed[1]
    for at, mine, other in _segments(ours, theirs, squeezed):
        group = "html_escaped" if markup_escaped(ours, at, mine, other) else group_of(ours, at, mine, other)
        if spaced and group not in ("whitespace", "tojson"):
            group = "whitespace"  # only whitespace differs; the diff aligned repeated text another way
        elif group in ("printing", "other") and printed and _inside(ours, at, printed):
            group = "repr_printed"
        if group in found:
            continue
        line = _literal_line(source, ours[:at])
        shown = f"at character {at}: transformers {visible(mine)!r}, {engine.title} {visible(other)!r}"
        hit = None
        if group == "tojson":
            hit = _nearest(hits, line, lambda h: h.rule is TOJSON)
        elif group == "html_escaped":
            hit = _nearest(hits, line, lambda h: h.rule is MARKUP)
        elif group == "whitespace" and _unusual(mine + other):
            hit = _nearest(hits, line, lambda h: h.rule is TRIM)
            group = "trim" if hit is not None else group
        elif group == "whitespace" and engine.name == "minijinja":
            hit = _nearest(hits, line, lambda h: h.rule.effect == WHITESPACE)
            group = "untrimmed" if hit is not None else group
        elif group == "other":
            hit = _nearest(hits, line, lambda h: h.rule in _PRINTING and engine.name in h.rule.engines)
            if hit is not None:
                group = "loop_variable" if hit.rule in LOOP.values() else "printing"
        line = hit.line if hit is not None else line
        construct = hit.written if hit is not None else _source_line(source, line)
        fix = hit.rule.portable if hit is not None else _fix(group)
        found.setdefault(group, Difference(group, line, construct, fix, shown))
    return list(found.values())


#: An engine's error on ``|string`` of a dict or a list (``Unknown ObjectValue filter: string``).
_REPR = re.compile(r"Unknown (?:ObjectValue|ArrayValue) filter: string")


def failure(
    source: str, hits: Sequence[Hit], engine: Engine, error: RenderError, loop: Hit | None = None
) -> Difference:
    """The root cause of an engine's error on a conversation transformers renders; ``loop`` is the ``for``
    loop an error about a value that is not iterable comes from, where it was found."""
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
    hit = loop if loop is not None else pool[0] if pool else None
    if hit is None:
        hit = _named(source, error.message, line) or _not_a_number(source, error.message, line)
    group = "fails"
    if _REPR.search(error.message):
        group = "repr"
    elif (hit is not None and hit.rule in METHODS.values()) or "UnknownMethod" in error.message:
        group = "string_method"
    elif hit is not None and hit.rule in LOOP.values():
        group = "loop_variable"
    line = hit.line if hit is not None else line
    construct = hit.written if hit is not None else _source_line(source, line)
    fix = _fix(group) if group in FOREIGN else hit.rule.portable if hit is not None else _fix(group)
    return Difference(group, line, construct, fix, f"{engine.title}: {error}")


#: The filter, test or attribute an engine's error names (``Cannot apply filter "trim"``, ``unknown filter: x``).
_NAMED = re.compile(
    r'filter "(?P<filter>\w+)"|filter: (?P<filter2>\w+)|filter (?P<filter3>\w+) is unknown'
    r"|method named (?P<method>\w+)|test (?P<test>\w+) is unknown"
)
#: An engine's error on a filter of a value of another type (``Cannot apply filter "trim" to type:
#: UndefinedValue``), which Python's Jinja applies (an undefined value is ``''``, ``dict|int`` is 0).
_ON_TYPE = re.compile(r'filter "\w+" to type: (?P<kind>\w+)Value|Unknown (?P<kind2>\w+)Value filter')


#: The filters that take a list: a missing value's default before them is ``[]``.
_LIST_FILTERS = frozenset(("join", "first", "last", "map", "select", "reject", "selectattr", "rejectattr", "list", "sort", "unique", "reverse", "sum", "min", "max"))  # fmt: skip


def _named(source: str, message: str, line: int) -> Hit | None:
    """Where the template uses the filter, test or method an error message names (on ``line`` when given):
    a filter's name is looked up among the filters only (``is string`` is not ``|string``)."""
    match = _NAMED.search(message)
    if match is None:
        return None
    kind, name = next((k.rstrip("23"), v) for k, v in match.groupdict().items() if v)
    found = _named_line(source, kind, name, line)
    if found is None:
        return None
    written = {"method": f".{name}", "filter": f"|{name}", "test": f"is {name}"}[kind]
    return Hit(Rule(written, (), FAILS, _typed_fix(message, name), "", ""), found, written)


@lru_cache(maxsize=256)
def _named_line(source: str, kind: str, name: str, line: int) -> int | None:
    """The first line (``line`` when given) where the template uses the filter, test or method ``name``."""
    tree = parse_template(source)
    nodes: list[jinja2.nodes.Node]
    if kind == "method":
        nodes = [n for n in nodes_of(tree, jinja2.nodes.Getattr) if n.attr == name]
    else:
        wanted = jinja2.nodes.Filter if kind == "filter" else jinja2.nodes.Test
        nodes = [n for n in nodes_of(tree, wanted) if n.name == name]
    lines = [n.lineno for n in nodes if not line or n.lineno == line]
    return min(lines) if lines else None


def _typed_fix(message: str, name: str) -> str:
    """The fix of a filter an engine refuses on the value's type (see :data:`_ON_TYPE`)."""
    typed = _ON_TYPE.search(message)
    if typed is None:
        return GROUPS["fails"][2]
    found = typed.group("kind") or typed.group("kind2")
    if found in ("Undefined", "Null"):
        empty = "{}" if name in ("items", "dictsort") else "[]" if name in _LIST_FILTERS else "''"
        return f"give a missing value a default before the filter: `(x or {empty})|{name}`"
    kind = {"Object": "dict", "Array": "list"}.get(found, found.lower())
    return f"apply `|{name}` only where the value can take it (the engine refuses a {kind}): test `x is string` first"


#: An engine's error on a ``for`` loop over a value that is not iterable (``got UndefinedValue``): Python's
#: Jinja iterates an undefined value as an empty list, @huggingface/jinja refuses it, and names no line.
_NOT_ITERABLE = re.compile(r"Expected iterable or object type in for loop: got (\w+)")
#: A ``for`` tag: its opening, the loop target, `` in ``, the iterable (with a loop filter), ``recursive``, the end.
_FOR_TAG = re.compile(r"(\{%[-+]?\s*for\s+)(.+?)(\s+in\s+)(.+?)(\s+recursive)?(\s*[-+]?%\})", re.S)


@dataclass(frozen=True)
class _Loop:
    """A ``for`` loop: its node, and where its iterable is written in the source."""

    node: jinja2.nodes.For
    start: int
    end: int
    written: str


def _loops(source: str) -> list[_Loop]:
    """The template's ``for`` loops that may iterate a missing value (a name, attribute or item, not
    ``messages``), with where each iterable is written; none when the tags and the syntax tree disagree."""
    nodes = nodes_of(parse_template(source), jinja2.nodes.For)
    tags = list(_FOR_TAG.finditer(source))
    lines = [source.count("\n", 0, m.start(1) + m.group(1).index("for")) + 1 for m in tags]
    if [n.lineno for n in nodes] != lines:  # a `{% for` in a string or a raw block: the spans are unknown
        return []
    kinds = (jinja2.nodes.Name, jinja2.nodes.Getattr, jinja2.nodes.Getitem)
    return [
        _Loop(n, m.start(4), m.end(4), m.group(4).split(" if ")[0].strip())
        for n, m in zip(nodes, tags, strict=True)
        if isinstance(n.iter, kinds)
        and not (isinstance(n.iter, jinja2.nodes.Name) and n.iter.name == "messages")
    ]


def undefined_loop(subject: Subject, engine: Engine, case: Case, error: RenderError) -> Hit | None:
    """The ``for`` loop over a missing value that ``error`` comes from, found from the syntax tree: among the
    loops that may iterate a missing value, the innermost whose iterable, replaced by ``[]``, makes the engine
    render the conversation past that error (one render per loop, only when several may)."""
    if not _NOT_ITERABLE.search(error.message):
        return None
    source = subject.template.source
    loops = _loops(source)
    if len(loops) > 1:
        renderer = subject.model.renderer
        call = subject.calls([case.conversation], add_generation_prompt=case.add_generation_prompt)[0]
        context = renderer.context(source, call, keep_none=engine.keeps_none)

        def past(loop: _Loop) -> bool:
            edited = source[: loop.start] + "[]" + source[loop.end :]
            again = engine.render_many(edited, [context], renderer.limits, renderer.clock)[0]
            return not (isinstance(again, RenderError) and again.message == error.message)

        cleared = [loop for loop in loops if past(loop)]
        inner = {id(n) for loop in cleared for n in loop.node.find_all(jinja2.nodes.For)}
        loops = [loop for loop in cleared if id(loop.node) not in inner]
    if not loops:
        return None
    loop = loops[0]
    target = _target(loop)
    written = f"for {target} in {loop.written}"
    got = _NOT_ITERABLE.search(error.message)
    if got is not None and got.group(1) in ("UndefinedValue", "NullValue"):
        fix = f"iterate an empty list where the value is missing: `{{% for {target} in ({loop.written} or []) %}}`"
    else:  # a string or a number, which Python's Jinja iterates (characters) or refuses as well
        test = "is not string" if got is not None and got.group(1) == "StringValue" else "is iterable"
        fix = f"loop only over a list or dict: guard the loop with `{{% if {loop.written} {test} %}}`"
    return Hit(Rule(written, (), FAILS, fix, "", ""), loop.node.lineno, written)


def _target(loop: _Loop) -> str:
    target = loop.node.target
    if isinstance(target, jinja2.nodes.Tuple):
        return ", ".join(t.name for t in target.items if isinstance(t, jinja2.nodes.Name))
    return target.name if isinstance(target, jinja2.nodes.Name) else "x"


#: MiniJinja's error on ``|int`` or ``|float`` of text that is not a number (Python's Jinja gives 0).
_NOT_A_NUMBER = re.compile(r"invalid float literal|invalid digit found in string")


@lru_cache(maxsize=256)
def _number_filters(source: str) -> tuple[tuple[int, str], ...]:
    """(line, name) of each ``|int`` and ``|float`` of the template, in its order; kept per source."""
    tree = parse_template(source)
    return tuple(
        (f.lineno, f.name) for f in nodes_of(tree, jinja2.nodes.Filter) if f.name in ("int", "float")
    )


def _not_a_number(source: str, message: str, line: int) -> Hit | None:
    """The ``|int`` or ``|float`` on the line an engine's not-a-number error names, with its portable form."""
    if not line or not _NOT_A_NUMBER.search(message):
        return None
    found = [name for at, name in _number_filters(source) if at == line]
    if not found:
        return None
    name = found[0]
    default = "0" if name == "int" else "0.0"
    fix = (
        f"give the filter the default Python's Jinja uses for text that is not a number: `|{name}({default})`"
    )
    return Hit(Rule(f"|{name}", (), FAILS, fix, "", ""), line, f"|{name}")


def _name(hit: Hit) -> str:
    """The name a construct goes by in an engine's error message (``find`` of ``.find(...)``)."""
    words = [w for w in re.findall(r"[A-Za-z_]+", hit.written.split("(")[0]) if len(w) >= 3]
    return words[-1] if words else "\0"


def _source_line(source: str, line: int) -> str:
    lines = source.split("\n")
    return lines[line - 1].strip()[:80] if 0 < line <= len(lines) else "(no line named)"


def compare(
    subject: Subject,
    hits: Sequence[Hit],
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
        return [failure(source, hits, engine, theirs, undefined_loop(subject, engine, case, theirs))]
    if ours == theirs:
        return []
    return differences(source, hits, engine, ours, theirs, reprs(case.conversation))


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
    serializes (one finding, whatever the number of ``|tojson``), and a foreign group is its owner's cause."""
    return (d.group, 0 if d.group == "tojson" or d.group in FOREIGN else d.line)


#: A difference of the engines' own semantics that no template can avoid, noted, not reported as a cause:
#: Python's ``|trim`` strips separators the other engines keep. Each: (what differs, the fix).
NOTED = {
    "trim": (
        "strips less with `|trim` than Python's `str.strip` (which also strips \\x1c-\\x1f and \\x85)",
        TRIM.portable,
    ),
}


def _fix(group: str) -> str:
    if group in NOTED:
        return NOTED[group][1]
    return FOREIGN[group].fix if group in FOREIGN else GROUPS[group][2]


def _why(group: str) -> str:
    """What differs, as a finding's first words."""
    if group in NOTED:
        return NOTED[group][0]
    return FOREIGN[group].why if group in FOREIGN else GROUPS[group][1].split(":")[0]


def _cause_of(subject: Subject, engine: Engine, group: str, conversation: conv.Conversation) -> Cause:
    """The cause a difference of ``group`` is reported as: the engine's; for a foreign group, the owner's
    cause that ``conversation`` holds and the owner reports here (the finding then becomes a note naming it),
    else the engine's fallback group."""
    if group not in FOREIGN:
        return ENGINE_CAUSES[engine.name][group]
    for owned in FOREIGN[group].causes:
        if _holds(subject, owned, conversation) and owner_reports(subject, owned):
            return owned
    return ENGINE_CAUSES[engine.name][FOREIGN[group].fallback]


def _finding(subject: Subject, hits: Sequence[Hit], engine: Engine, case: Case, d: Difference) -> Finding:
    def key(candidate: conv.Conversation) -> str | None:
        small = Case(candidate, case.add_generation_prompt)
        pair = render_pairs(subject, engine, [small])[0]
        return "yes" if any(_key(x) == _key(d) for x in compare(subject, hits, engine, small, pair)) else None

    small = minimize(case.conversation, key) if len(case.conversation) > 1 else case.conversation
    pair = render_pairs(subject, engine, [Case(small, case.add_generation_prompt)])[0]
    again = compare(subject, hits, engine, Case(small, case.add_generation_prompt), pair)
    d = next((x for x in again if _key(x) == _key(d)), d)
    where = f"line {d.line}" if d.line else "a line it does not name"
    message = f"{engine.title} {_why(d.group)}: {where}, `{d.construct}`\n{d.detail}"
    ours, theirs = pair
    if isinstance(ours, str) and isinstance(theirs, str) and ours != theirs:
        message += "\n" + diff(ours, theirs, labels=("transformers", engine.name))
    message += f"\nconversation (add_generation_prompt={case.add_generation_prompt}):\n{conv.describe(small)}"
    if d.group in NOTED:
        return note(f"{message}\n  ({d.fix})")
    return _cause_of(subject, engine, d.group, small)(message, fix=d.fix)


@check(Layer.ENGINE, needs="renders")
def minijinja(subject: Subject) -> list[Finding]:
    """The template renders in MiniJinja as Text Generation Inference sets it up the same as in transformers,
    on the plain conversations, a tool exchange with wire text and the drawn sample (see :func:`cases`).

    Catches templates that TGI cannot parse or run (a Python method its compatibility layer lacks), that rely
    on trim_blocks/lstrip_blocks (TGI sets neither), and that print values or escape JSON differently there.
    """
    return engine_findings(subject, ENGINES[0])


@check(Layer.ENGINE, needs="renders")
def hfjs(subject: Subject) -> list[Finding]:
    """The template renders in @huggingface/jinja (transformers.js, the Hub's widgets) the same as in
    transformers, on the plain conversations, a tool exchange with wire text and the drawn sample.

    Catches templates it cannot parse or run (Python string methods, filters and ``loop`` attributes it lacks,
    ``is in``, ``{% raw %}``), and that print ``None``, booleans, lists or dicts other than Python does.
    """
    return engine_findings(subject, ENGINES[1])


# Node renders from when round_trip starts (it waits on transformers in a child of its own), beside the
# checks after it.
ahead_of("round_trip", hfjs, lambda subject: send_ahead(subject, ENGINES[1]))


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
    "FOREIGN",
    "GROUPS",
    "Case",
    "Difference",
    "Foreign",
    "cases",
    "compare",
    "construct_hits",
    "differences",
    "hfjs",
    "minijinja",
    "portability",
    "render_pairs",
]
