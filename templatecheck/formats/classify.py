"""What differs between a template's rendering and its reference: every difference, sorted into one group.

A rendering that differs from the reference is split into its differing pieces (hunks of a diff over control
tokens, words and single characters), and each piece is named by where it lies in the reference and what
changed there:

- **where**: the reference is laid out by rendering the conversation's prefixes (message *k* spans the text
  that message *k* adds), with each message's text located inside its span; what lies before the text is
  the turn's header, what follows it the end of the turn, what follows the last message the generation
  prompt; the text that tool definitions add is found by rendering the conversation without them;
- **what**: whitespace only (a separator, or the message text's edge whitespace), a BOS/EOS token, an
  HTML or JSON escape of the same text, a system prompt's text, words the other side does not have.

Four differences are root causes other checks own, and are named with their keys: a rendering without the
generation prompt that already ends with it (``generation_prompt.always_added``), tool JSON escaped as HTML
(``tools.html_escaped``), a tool result that is a string written as a JSON string again
(``tools.result_reencoded``), and a system prompt that is not misplaced but left out
(``content_fidelity.system_dropped``).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from templatecheck.formats.base import Unsupported
from templatecheck.formats.compare import Case, Difference, Reference, Render, comparable
from templatecheck.formats.diffing import Ranges, atoms, offsets, opcodes
from templatecheck.render import RenderError
from templatecheck.text import visible


@dataclass(frozen=True)
class Group:
    """A kind of difference: its name (``reference.<name>`` is its cause), what differs, why that severity."""

    name: str
    #: What differs, as the first words of a finding: ``the end of a turn``.
    what: str
    #: Why the severity (the docs table shows it).
    why: str
    #: The change that fixes it in the template.
    fix: str
    #: A deliberate choice (a warning) rather than a defect.
    policy: bool = False


#: Every group, in the order findings are reported.
GROUPS: tuple[Group, ...] = (
    Group(
        "header",
        "the turn header (or generation prompt)",
        "the model was trained on the format's role headers; another header is a prompt it never saw",
        "write each role's header, and the generation prompt, exactly as the format does (the diff shows it)",
    ),
    Group(
        "separator",
        "the whitespace between a header, the text and the next turn",
        "a missing or extra newline between control tokens changes the token ids of every turn",
        "write the format's separators (the diff shows the whitespace, ␤ a newline)",
    ),
    Group(
        "end_of_turn",
        "the end of a turn",
        "without the format's end-of-turn token the model does not learn, or is not told, where a turn ends",
        "close every message with the format's end-of-turn token",
    ),
    Group(
        "bos_eos",
        "the BOS/EOS placement",
        "a BOS or EOS token where the format has none (or none where it has one) changes the sequence the "
        "model was trained on",
        "write bos_token and eos_token only where the format does",
    ),
    Group(
        "system_placement",
        "the place of the system prompt",
        "the format fixes where the system prompt goes; elsewhere (or dropped) the model reads it as "
        "something else",
        "write the system prompt where the format puts it, in every conversation",
    ),
    Group(
        "tool_definitions",
        "the rendering of tool definitions",
        "the model was trained on the tool definitions in the format's own place and encoding",
        "write the tool definitions as the format does",
    ),
    Group(
        "tool_call_encoding",
        "the encoding of tool calls",
        "tool calls written otherwise than the format writes them are not the calls the model learnt to "
        "make and read",
        "encode each tool call as the format does (names, JSON arguments, tags)",
    ),
    Group(
        "tool_result_encoding",
        "the encoding of tool results",
        "tool results written otherwise than the format writes them are not where the model learnt to read "
        "them",
        "write tool results in the format's role and tags",
    ),
    Group(
        "escaping",
        "the escaping of text",
        "escaped text (HTML entities, \\u escapes) is other text to the model than the characters it stands for",
        "write the characters themselves (tojson, no HTML escaping, ensure_ascii=False)",
    ),
    Group(
        "whitespace",
        "the whitespace of message text",
        "the format keeps message text as it is; trimming or changing its whitespace loses the user's text",
        "write message text unchanged (no trim)",
    ),
    Group(
        "trimming",
        "the trimming of message text",
        "the format trims message text (the model never saw edge whitespace), but keeping the user's "
        "whitespace is a deliberate, legal choice",
        "trim message text as the format does ('| trim'), if the model should see what it saw in training",
        policy=True,
    ),
    Group(
        "empty_message",
        "the rendering of an empty message",
        "an empty message carries no text: leaving it out, or writing the separators of a non-empty one, is a "
        "deliberate choice many templates make, which differs from the format only when a client sends one",
        "render an empty message as the format does: its turn with nothing between header and end",
        policy=True,
    ),
    Group(
        "final_turn_open",
        "the end of the final message (left open)",
        "a rendering without the generation prompt that leaves only the final message open, every earlier turn "
        "closed, is a continuation convention (the prompt ends where the model goes on writing that message); "
        "whoever trains on whole conversations must close the final turn themselves",
        "close the final message as every other (continue_final_message=True is how a caller leaves it open)",
        policy=True,
    ),
    Group(
        "content",
        "the text",
        "the template writes text the format does not have, or leaves out text it has",
        "write exactly the format's text (the diff shows the words that differ)",
    ),
)
BY_NAME = {group.name: group for group in GROUPS}

#: Differences whose root cause another check owns: the key of that cause.
ALWAYS_ADDED = "generation_prompt.always_added"
HTML_ESCAPED = "tools.html_escaped"
RESULT_REENCODED = "tools.result_reencoded"
SYSTEM_DROPPED = "content_fidelity.system_dropped"
#: The group of a final turn left open; an end-of-turn difference elsewhere in the comparison makes it that
#: (see :func:`final_open_alone`).
FINAL_OPEN = "final_turn_open"

#: A system prompt shorter than this is not looked for in differing text (it would match by chance).
MIN_SYSTEM = 4
_SYSTEM_HEADER = re.compile(r"(?:^|[>\]])system\b|<\|system\|>|<</?SYS>>|\[/?SYSTEM_PROMPT\]")
_WORD = re.compile(r"[A-Za-z]{2,}")
#: Words that name a role in a header (a difference made of them is a header's).
ROLE_WORDS = frozenset(
    {"user", "assistant", "system", "model", "tool", "ipython", "human", "bot", "function", "developer"}
)
_CONTROL = re.compile(r"<[|｜][^<>|｜\s]{1,48}[|｜]>|\[/?[A-Z_]{2,32}\]|</?[a-z_]{1,32}>")  # noqa: RUF001


@dataclass(frozen=True)
class Hunk:
    """One differing piece: its group (or another check's cause key), both sides' text, where it is."""

    group: str
    reference: str
    template: str
    #: Offset in the reference rendering, and in the template's.
    at: int
    at_template: int

    def describe(self, reference_text: str) -> str:
        """``reference '␤␤' / template '␤' after '...<|end_header_id|>'``, whitespace visible."""
        before = visible(reference_text[max(0, self.at - 30) : self.at])
        return f"reference {visible(self.reference)!r} / template {visible(self.template)!r} after {before!r}"


def hunks(difference: Difference, reference: Reference, render_template: Render | None = None) -> list[Hunk]:
    """Every differing piece of one rendering, each with its group (see the module docstring).

    With ``render_template``, a difference that goes away when the conversation's empty messages get text is
    an ``empty_message`` difference, whatever its pieces look like; so is a piece in the turn of an empty
    message whose filling takes differences away.
    """
    ref, tpl = difference.reference, difference.template
    prompt = _unasked_prompt(difference, reference)
    if prompt is not None and tpl == ref + prompt:
        return [Hunk(ALWAYS_ADDED, "", prompt, len(ref), len(ref))]
    if _final_left_open(difference):
        return [Hunk(FINAL_OPEN, ref[len(tpl) :], "", len(tpl), len(tpl))]
    layout = Layout.of(difference, reference)
    ranges, blocks = opcodes(ref, tpl)
    emptied = _emptied(difference, reference, render_template, len(ranges)) if render_template else {}
    empty = bool(emptied) and all(emptied.values())
    blank = any(not t.strip() for t in layout.system_texts)
    # A moved turn is one block, unless the diff joined its two places into one (the text between them is
    # short in words: a system prompt of few long words); then the edits themselves are the blocks.
    moved = (_moved(ref, tpl, blocks, blank) or _moved(ref, tpl, ranges, blank)) if layout.has_system else []
    found = []
    cuts = (set(offsets(atoms(ref))), set(offsets(atoms(tpl))))
    for n, (e1, e2, f1, f2) in enumerate(ranges):
        room = (ranges[n + 1][0] if n + 1 < len(ranges) else len(ref)) - e2
        i1, i2, j1, j2 = layout.settled((e1, e2, f1, f2), tpl, cuts, room)  # moved text is found as diffed
        a, b = ref[i1:i2], tpl[j1:j2]
        span = layout.span_of(i1, i2)
        if empty or (span is not None and emptied.get(span.index - layout.offset) is not None):
            group = "empty_message"
        elif prompt is not None and tpl.endswith(prompt) and j2 > len(tpl) - len(prompt) and i1 == i2:
            group = ALWAYS_ADDED  # the generation prompt, at the end, although it was not asked for
        elif any(m1 <= e1 and e2 <= m2 and n1 <= f1 and f2 <= n2 for m1, m2, n1, n2 in moved):
            group = "system_placement"
        else:
            group = layout.group(a, b, i1, i2, j1, j2)
        if group == "system_placement" and layout.drops_system():
            group = SYSTEM_DROPPED  # not placed elsewhere: left out, which content_fidelity reports
        found.append(Hunk(group, a, b, i1, j1))
    return found


def final_open_alone(pieces: Sequence[Sequence[Hunk]], *, convention: bool = True) -> list[list[Hunk]]:
    """The pieces of every differing rendering of one comparison, a final turn left open read as the end of a
    turn when another rendering misses an end of turn elsewhere (a template that closes no turn leaves the
    final one open too, and that is one root cause, not a convention), or when not ``convention`` (a
    comparison that has no such group)."""
    convention = convention and not any(p.group == "end_of_turn" for found in pieces for p in found)
    return [
        [p if convention or p.group != FINAL_OPEN else replace(p, group="end_of_turn") for p in found]
        for found in pieces
    ]


def _moved(ref: str, tpl: str, blocks: Ranges, blank_system: bool) -> Ranges:
    """The blocks that move text: what the template leaves out in one place and writes in another (the same
    text, whitespace aside, found where the other side's block is). In a conversation with a system message,
    that is the system prompt, or the turns around it, moving; whitespace alone counts only when a system
    prompt is blank (its separators are all that can move)."""
    deleted = [block for block in blocks if block[1] > block[0]]
    inserted = [block for block in blocks if block[3] > block[2]]
    out: Ranges = []
    for d in deleted:
        others = [n for n in inserted if n != d]
        twin = next((n for n in others if _found_in(ref[d[0] : d[1]], tpl, n[2], n[3], blank_system)), None)
        twin = twin or next(
            (n for n in others if _found_in(tpl[n[2] : n[3]], ref, d[0], d[1], blank_system)), None
        )
        if twin is not None:
            out += [d, twin]
    return out


def _found_in(text: str, other: str, start: int, end: int, whitespace: bool) -> bool:
    """``text`` (whitespace aside; with ``whitespace``, whitespace of two characters or more as it is)
    occurs in ``other`` over ``[start, end)``."""
    needle = text.strip() or (text if whitespace and len(text) >= 2 else "")
    if not needle:
        return False
    at = other.find(needle)
    while at >= 0:
        if at < end and start < at + len(needle):
            return True
        at = other.find(needle, at + 1)
    return False


#: What an empty message's text becomes to tell whether a difference is about emptiness.
FILLER = "x"


def _emptied(
    difference: Difference, reference: Reference, render_template: Render, count: int
) -> dict[int, bool]:
    """For each empty message (its index in the conversation) whose filling with text takes differences away:
    whether it takes all of them away (together with the other empty messages)."""
    case = difference.case
    empty = [i for i, m in enumerate(case.messages) if m.get("content") == "" and not m.get("tool_calls")]
    found: dict[int, bool] = {}
    for chosen in [*([empty] if len(empty) > 1 else []), *([i] for i in empty)]:
        left = _left_when_filled(case, chosen, reference, render_template)
        if left is None:
            continue
        if len(chosen) > 1 and left == 0:
            return dict.fromkeys(empty, True)
        if left < count:
            found[chosen[0]] = left == 0
    return found


def _left_when_filled(
    case: Case, chosen: Sequence[int], reference: Reference, render_template: Render
) -> int | None:
    """How many differing pieces remain when the ``chosen`` messages get text (``None``: not renderable)."""
    filled = Case(
        case.name,
        tuple({**m, "content": FILLER} if i in chosen else m for i, m in enumerate(case.messages)),
        case.add_generation_prompt,
        case.tools,
    )
    try:
        theirs = comparable(render_template(filled), reference.bos)
        ours = reference.render(
            reference.messages(filled), add_generation_prompt=case.add_generation_prompt, tools=case.tools
        )
    except (RenderError, Unsupported):
        return None
    return 0 if theirs == ours else len(opcodes(ours, theirs)[0])


def _final_left_open(difference: Difference) -> bool:
    """Without the generation prompt, the template's rendering is the reference's without the end of the final
    turn: what follows is control tokens and whitespace only (no text of a message)."""
    ref, tpl = difference.reference, difference.template
    if difference.case.add_generation_prompt or not tpl.strip() or not ref.startswith(tpl) or ref == tpl:
        return False
    return not _without_controls(ref[len(tpl) :]).strip()


def _unasked_prompt(difference: Difference, reference: Reference) -> str | None:
    """The generation prompt the reference writes for this conversation, when it was not asked for (a
    template that writes it anyway has the ``generation_prompt.always_added`` bug)."""
    case = difference.case
    if case.add_generation_prompt:
        return None
    try:
        prompted = reference.render(difference.messages, add_generation_prompt=True, tools=case.tools)
    except Exception:  # Unsupported (or a format's bug, reported by the comparison)
        return None
    ref = difference.reference
    return prompted[len(ref) :] if prompted.startswith(ref) and len(prompted) > len(ref) else None


# ------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Span:
    """The reference text one message adds."""

    start: int
    end: int
    message: Mapping[str, Any]
    #: The message's place among the messages the reference rendered.
    index: int = 0


@dataclass(frozen=True)
class Layout:
    """Where each message, its text and the tool definitions lie in the reference rendering."""

    reference: str
    spans: tuple[Span, ...]
    #: The text the tool definitions add (ranges in the reference).
    tool_ranges: tuple[tuple[int, int], ...]
    #: Texts of the messages of the conversation, located anywhere in the reference (for formats whose
    #: prefixes are not prefixes of the whole: a system prompt written into the last user turn).
    texts: tuple[tuple[int, int, Mapping[str, Any]], ...]
    #: System prompt texts long enough to look for, stripped.
    systems: tuple[str, ...]
    #: The conversation has a system message.
    has_system: bool
    #: What the template writes for a conversation without a system message ("" when nothing).
    injected: str
    #: The system messages' texts as given (whitespace included).
    system_texts: tuple[str, ...]
    #: The text of every message of the conversation (its string content).
    contents: tuple[str, ...]
    #: Tool results' text as a JSON string again (what a template that re-encodes them writes).
    reencoded: tuple[str, ...]
    template: str
    strips_text: bool
    special: tuple[str, ...]
    eos: str
    bos: str
    #: The conversation has tool definitions, calls or results.
    tools: bool

    #: How many messages the reference rendered before the conversation's own (a default system prompt).
    offset: int = 0

    @classmethod
    def of(cls, difference: Difference, reference: Reference) -> Layout:
        messages = list(difference.messages)
        ref = difference.reference
        return cls(
            reference=ref,
            spans=tuple(_spans(difference, reference) or _spans_without_tools(difference, reference)),
            tool_ranges=tuple(_tool_ranges(difference, reference)),
            texts=tuple(_texts(ref, messages, reference.fmt.strips_text)),
            systems=tuple(
                str(m["content"]).strip()
                for m in messages
                if m.get("role") == "system"
                and isinstance(m.get("content"), str)
                and len(m["content"].strip()) >= MIN_SYSTEM
            ),
            has_system=any(m.get("role") == "system" for m in difference.case.messages),
            injected=reference.policy.injected,
            system_texts=tuple(
                str(m.get("content")) for m in difference.case.messages if m.get("role") == "system"
            ),
            contents=tuple(
                m["content"] for m in difference.case.messages if isinstance(m.get("content"), str)
            ),
            reencoded=tuple(
                json.dumps(m["content"], ensure_ascii=False)
                for m in messages
                if m.get("role") in ("tool", "ipython") and isinstance(m.get("content"), str)
            ),
            template=difference.template,
            strips_text=reference.fmt.strips_text,
            special=tuple(t for t in reference.special.values() if t),
            eos=reference.special.get("eos_token", ""),
            bos=reference.special.get("bos_token", ""),
            tools=bool(difference.case.tools) or any(_is_tool_message(m) for m in messages),
            offset=len(messages) - len(difference.case.messages),
        )

    # ---------------------------------------------------------------------------------------- grouping

    def drops_system(self) -> bool:
        """A system message's text is not in the template's rendering as often as the conversation holds it
        (a user turn may repeat it; a blank one: its turn differs, and there is no text to find it by)."""

        def held(text: str) -> int:
            return sum(content.count(text) for content in self.contents)

        stripped = [t.strip() for t in self.system_texts]
        return any(not t or self.template.count(t) < held(t) for t in stripped)

    def settled(
        self, edit: tuple[int, int, int, int], template: str, cuts: tuple[set[int], set[int]], room: int
    ) -> tuple[int, int, int, int]:
        """Where a pure deletion or insertion is read: of the places it can equally be (text that repeats
        right after it: ``<|im_end|><|im_end|>`` with one dropped, ``␤`` + ``␍␤`` with ``␤␍`` dropped), one
        that does not cut a message's text at its edge, outside the text when it can be, and at the edge of a
        text that has edge whitespace there when it can be (where trimming shows); else the first.

        The diff puts an ambiguous edit as early as it can, which may be inside the text both sides copy (a
        message that ends with the token the template leaves out, a trimmed ``\r\n`` read as the newline
        before it): the same root cause would then be named by the part of the turn it happens to touch.
        Only places that cut no control token or word (``cuts``: both sides' atom boundaries) and stay
        within the equal text that follows (``room`` characters) count.
        """
        i1, i2, j1, j2 = edit
        if (i1 == i2) == (j1 == j2):
            return edit  # a replacement (or nothing): one place
        ref, deletion = self.reference, i1 < i2
        size = (i2 - i1) if deletion else (j2 - j1)
        side, first, after = (ref, i1, i2) if deletion else (template, j1, j2)
        reach = 0
        while reach < room and side[first + reach] == side[after + reach]:
            reach += 1
        places = range(reach + 1)
        whole = [
            k for k in places if {i1 + k, i1 + k + (size if deletion else 0)} <= cuts[0]
            and {j1 + k, j1 + k + (0 if deletion else size)} <= cuts[1]
        ]  # fmt: skip

        def cost(k: int) -> tuple[bool, bool, bool, int]:
            start, end = i1 + k, i1 + k + (size if deletion else 0)
            cut = any(a < start < b < end or start < a < end < b for a, b, _ in self.texts)
            inside = any(a < end and start < b if start < end else a < start < b for a, b, _ in self.texts)
            edge = any(
                (a in (start, end) and _lead(m) != "") or (b in (start, end) and _trail(m) != "")
                for a, b, m in self.texts
            )
            return cut, inside, not edge, k

        k = min(whole or [0], key=cost)
        return (i1 + k, i2 + k, j1 + k, j2 + k)

    def group(self, a: str, b: str, i1: int, i2: int, j1: int, j2: int) -> str:
        """The group of the piece ``a`` (reference ``[i1:i2]``) that the template writes as ``b``."""
        in_tools = self._in_tools(i1, i2)
        span = self.span_of(i1, i2)
        tool_message = span is not None and _is_tool_message(span.message)
        text = self._text_at(i1, i2)
        if _escaped(a, b):
            tool_json = in_tools or tool_message or (self.tools and text is None and not self.spans)
            return HTML_ESCAPED if _html(a, b) and tool_json else "escaping"
        if self._reencoded(j1, j2):
            return RESULT_REENCODED
        if any(system in a or system in b for system in self.systems):
            return "system_placement"
        if self.has_system and self._writes_default(j1, j2):
            return "system_placement"  # the template took the system message for none and wrote its default
        if self.has_system and (_SYSTEM_HEADER.search(a) or _SYSTEM_HEADER.search(b)):
            return "system_placement"  # a system turn (or <<SYS>> block) written or left out here
        if in_tools:
            return "tool_definitions"
        if span is not None and tool_message:
            return "tool_call_encoding" if span.message.get("tool_calls") else "tool_result_encoding"
        if not a.strip() and not b.strip():
            return self._whitespace(text, span, a, b, i1, i2)
        at_end = self._ends_turn(span, i1)
        if _only(a, b, self.special):
            bos = bool(self.bos) and self.bos in a + b and not (self.eos and self.eos in a + b)
            return "end_of_turn" if at_end and not bos else "bos_eos"
        if text is not None and text[0] < i1 and i2 < text[1]:
            return "content"
        if any(w.lower() not in ROLE_WORDS for w in _WORD.findall(_without_controls(a + " " + b))):
            return "content"  # words, not a role's name: text the other side does not have
        return "end_of_turn" if at_end else "header"

    def _ends_turn(self, span: Span | None, i1: int) -> bool:
        """``i1`` lies in the end of a turn: after the message's text in its span (after the header, when the
        text is empty: from the span's last control token on); without a span, right after a text."""
        if span is None:
            return self._after_text(i1)
        located = [end for start, end, message in self.texts if message is span.message]
        if located:
            return i1 >= located[0]
        controls = list(_CONTROL.finditer(self.reference, span.start, span.end))
        if not controls or self.reference[controls[-1].end() : span.end].strip():
            return False  # the span does not end with a control token: no end of turn to tell
        return i1 >= controls[-1].start()

    def _whitespace(
        self, text: tuple[int, int] | None, span: Span | None, a: str, b: str, i1: int, i2: int
    ) -> str:
        if text is not None and text[0] < i1 and i2 < text[1]:
            return "whitespace"  # inside the message text
        edge, kept = self._edge_whitespace(i1, i2)
        blank = str(span.message.get("content") or "") if span is not None else ""
        if edge is None and span is not None and blank and not blank.strip():
            kept = not self.strips_text and blank in self.reference[span.start : span.end]
            edge = blank  # a message of whitespace only: all of it is edge
        if edge is not None and b and not a and b in edge and not kept:
            return "trimming"  # the template keeps edge whitespace that the format trims
        if edge is not None and a and not b and a in edge and kept:
            return "whitespace"  # the template trims edge whitespace that the format keeps
        return "separator"

    def _edge_whitespace(self, i1: int, i2: int) -> tuple[str | None, bool]:
        """The leading or trailing whitespace of the message whose located text touches ``[i1, i2]``, and
        whether the reference writes it (the text was found with its edges)."""
        ref = self.reference
        for start, end, message in self.texts:
            content = str(message.get("content") or "")
            kept = end - start == len(content)
            if i1 <= start and not ref[i2:start].strip() and _lead(message):  # before the text
                return _lead(message), kept
            if i2 >= end and not ref[end:i1].strip() and _trail(message):  # after the text
                return _trail(message), kept
        return None, False

    def _in_tools(self, i1: int, i2: int) -> bool:
        return any(_overlaps(i1, i2, a, b) for a, b in self.tool_ranges)

    def span_of(self, i1: int, i2: int) -> Span | None:
        """The span of the message that ``[i1, i2)`` lies in."""
        for span in self.spans:
            if span.start <= i1 < span.end or (i1 == i2 == span.end and span is self.spans[-1]):
                return span
        return None

    def _text_at(self, i1: int, i2: int) -> tuple[int, int] | None:
        for start, end, _ in self.texts:
            if start <= i1 and i2 <= end:
                return start, end
        return None

    def _after_text(self, i1: int) -> bool:
        """``i1`` lies after a message's text and before the next control token that ends the turn."""
        ends = [end for _, end, _ in self.texts if end <= i1]
        if not ends:
            return False
        gap = self.reference[max(ends) : i1]
        return _CONTROL.search(gap) is None

    def _writes_default(self, j1: int, j2: int) -> bool:
        default = self.injected.strip()
        at = self.template.find(default) if len(default) >= MIN_SYSTEM else -1
        return at >= 0 and _overlaps(j1, j2, at, at + len(default), edges=True)

    def _reencoded(self, j1: int, j2: int) -> bool:
        for encoded in self.reencoded:
            at = self.template.find(encoded)
            if at >= 0 and _overlaps(j1, j2, at, at + len(encoded), edges=True):
                return True
        return False


def _spans(difference: Difference, reference: Reference) -> list[Span]:
    """Each message's span, from the reference renderings of the conversation's prefixes, where those are
    prefixes of the whole rendering (a format that moves text into a later turn has no span there)."""
    messages, ref, case = list(difference.messages), difference.reference, difference.case
    bounds: list[int | None] = []
    for k in range(len(messages) + 1):
        try:
            prefix = reference.render(messages[:k], add_generation_prompt=False, tools=case.tools)
        except Exception:  # Unsupported, or a format that fails on a prefix: no span there
            bounds.append(None)
            continue
        bounds.append(len(prefix) if ref.startswith(prefix) else None)
    spans = []
    for k, message in enumerate(messages):
        start, end = bounds[k], bounds[k + 1]
        if start is not None and end is not None and start < end:
            spans.append(Span(start, end, message, k))
    return spans


def _texts(
    ref: str, messages: Sequence[Mapping[str, Any]], strips: bool
) -> list[tuple[int, int, Mapping[str, Any]]]:
    """Each message's text located in the reference, in order where it can be, else anywhere."""
    found = []
    cursor = 0
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            continue
        for text in (content.strip(), content) if strips else (content, content.strip()):
            at = ref.find(text, cursor)
            if at < 0:
                at = ref.find(text)
            if at >= 0:
                found.append((at, at + len(text), message))
                cursor = max(cursor, at + len(text))
                break
    return found


def _spans_without_tools(difference: Difference, reference: Reference) -> list[Span]:
    """The spans of the conversation rendered without its tool definitions, moved past the text the
    definitions add: for a format that writes them before the last user turn (Mistral), whose prefixes with
    tools are not prefixes of the whole."""
    case = difference.case
    if not case.tools:
        return []
    try:
        bare = reference.render(
            difference.messages, add_generation_prompt=case.add_generation_prompt, tools=None
        )
    except Exception:  # Unsupported, or a format that fails without tools
        return []
    plain = Difference(
        Case(case.name, case.messages, case.add_generation_prompt), bare, "", difference.messages
    )
    added = [(i1, (j2 - j1) - (i2 - i1)) for i1, i2, j1, j2 in opcodes(bare, difference.reference)[0]]

    def moved(at: int) -> int:
        return at + sum(n for where, n in added if where < at)

    return [Span(moved(sp.start), moved(sp.end), sp.message, sp.index) for sp in _spans(plain, reference)]


def _tool_ranges(difference: Difference, reference: Reference) -> list[tuple[int, int]]:
    """The ranges of the reference that its tool definitions add."""
    case = difference.case
    if not case.tools:
        return []
    try:
        bare = reference.render(
            difference.messages,
            add_generation_prompt=case.add_generation_prompt,
            tools=None,
        )
    except Exception:  # Unsupported, or a format that fails without tools
        return []
    return [(j1, j2) for _, _, j1, j2 in opcodes(bare, difference.reference)[0] if j2 > j1]


def _lead(message: Mapping[str, Any]) -> str:
    """The leading whitespace of a message's text."""
    content = str(message.get("content") or "")
    return content[: len(content) - len(content.lstrip())]


def _trail(message: Mapping[str, Any]) -> str:
    """The trailing whitespace of a message's text."""
    content = str(message.get("content") or "")
    return content[len(content.rstrip()) :]


def _is_tool_message(message: Mapping[str, Any]) -> bool:
    return bool(message.get("tool_calls")) or message.get("role") in ("tool", "ipython")


def _overlaps(i1: int, i2: int, a: int, b: int, *, edges: bool = False) -> bool:
    """``[i1, i2)`` meets ``[a, b)``; an empty range (an insertion) meets the range it lies strictly in (an
    insertion at a boundary belongs to what precedes or follows), or on its edges with ``edges``."""
    if i1 == i2:
        return a <= i1 <= b if edges else a < i1 < b
    return i1 < b and a < i2


def _escaped(a: str, b: str) -> bool:
    """One side is the other with HTML entities or JSON ``\\u`` escapes for some of its characters."""
    return a != b and (_html(a, b) or _unicode_escaped(a, b) or _unicode_escaped(b, a))


def _html(a: str, b: str) -> bool:
    return a != b and (("&" in b and html.unescape(b) == a) or ("&" in a and html.unescape(a) == b))


def _unicode_escaped(plain: str, escaped: str) -> bool:
    if "\\u" not in escaped:
        return False
    try:
        return bool(json.loads(f'"{escaped}"') == plain)
    except ValueError:
        return False


def _only(a: str, b: str, special: Sequence[str]) -> bool:
    """Both sides are made of BOS/EOS tokens (and whitespace) only."""
    if not special:
        return False
    pattern = "|".join(re.escape(t) for t in sorted(special, key=len, reverse=True))
    rest = [re.sub(pattern, "", side).strip() for side in (a, b)]
    return not any(rest) and any(re.search(pattern, side) for side in (a, b))


def _without_controls(text: str) -> str:
    return _CONTROL.sub(" ", text)


__all__ = [
    "ALWAYS_ADDED",
    "BY_NAME",
    "FINAL_OPEN",
    "GROUPS",
    "HTML_ESCAPED",
    "RESULT_REENCODED",
    "SYSTEM_DROPPED",
    "Group",
    "Hunk",
    "final_open_alone",
    "hunks",
]
