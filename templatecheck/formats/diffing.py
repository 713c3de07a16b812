"""A minimal diff of two renderings over the pieces a person reads: control tokens, entities, words, characters.

difflib's ``SequenceMatcher`` pairs the longest common block first, so a repeated token (every turn's
``<|im_end|>``) can end up aligned with another turn's; a shortest edit script (Myers) keeps each turn with
its own. Edits are then slid together (``␤`` → ``␠`` after a header, not an insertion there and a deletion two
newlines later), and, for telling moved text apart, joined into blocks across short equal runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher

# Control tokens and tags, HTML entities, JSON escapes, words, and any other single character. A backslash is
# an escape only with what JSON escapes after it: text that ends with one before a control token (``c\<|eot_id|>``)
# keeps the token whole, or the diff would cut it and name the wrong part of the turn.
_ATOM = re.compile(
    r"<[|｜][^<>|｜\s]{1,48}[|｜]>|<</?SYS>>|</?[A-Za-z_:]{1,32}>|\[/?[A-Z_]{2,32}\]|&#?\w{1,8};"  # noqa: RUF001
    r'|\\u[0-9a-fA-F]{4}|\\["\\/bfnrt]|\w+|\s|.',
    re.S,
)
#: Differing ranges ``(i1, i2, j1, j2)``: ``reference[i1:i2]`` is written ``template[j1:j2]``.
Ranges = list[tuple[int, int, int, int]]


def atoms(text: str) -> list[str]:
    """``text`` cut into the pieces a diff compares: control tokens, entities, words, single characters."""
    return _ATOM.findall(text)


def opcodes(ref: str, tpl: str) -> tuple[Ranges, Ranges]:
    """The differing ``(i1, i2, j1, j2)`` character ranges of a minimal diff over :func:`atoms`, and the same
    ranges joined into blocks (see :func:`_blocks`)."""
    a, b = atoms(ref), atoms(tpl)
    start_a, start_b = offsets(a), offsets(b)
    ranges = _slid(edits(a, b), a, b)

    def chars(found: Ranges) -> Ranges:
        return [(start_a[i1], start_a[i2], start_b[j1], start_b[j2]) for i1, i2, j1, j2 in found]

    return chars(ranges), chars(_blocks(ranges))


def _slid(
    ranges: list[tuple[int, int, int, int]], a: Sequence[str], b: Sequence[str]
) -> list[tuple[int, int, int, int]]:
    """Each pure deletion or insertion slid back over equal atoms that repeat it, then adjacent ranges
    joined: of the shortest scripts, the one whose edits sit together (``␤`` → ``␠`` after a header, not an
    insertion there and a deletion two newlines later)."""
    out: list[tuple[int, int, int, int]] = []
    for i1, i2, j1, j2 in ranges:
        low_i, low_j = (out[-1][1], out[-1][3]) if out else (0, 0)
        if j1 == j2:
            while i1 > low_i and j1 > low_j and a[i1 - 1] == a[i2 - 1]:
                i1, i2, j1, j2 = i1 - 1, i2 - 1, j1 - 1, j2 - 1
        elif i1 == i2:
            while i1 > low_i and j1 > low_j and b[j1 - 1] == b[j2 - 1]:
                i1, i2, j1, j2 = i1 - 1, i2 - 1, j1 - 1, j2 - 1
        if out and out[-1][1] == i1 and out[-1][3] == j1:
            out[-1] = (out[-1][0], i2, out[-1][2], j2)
        else:
            out.append((i1, i2, j1, j2))
    return out


def _blocks(ranges: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Edits joined across the short equal runs between them (shorter than the edits on both sides), as
    diff-match-patch's semantic cleanup does: a moved turn is one deletion and one insertion, not a dozen
    edits around the newlines and control tokens the two places happen to share."""
    out = list(ranges)
    changed = True
    while changed:
        changed = False
        for k in range(len(out) - 1):
            (i1, i2, j1, j2), (k1, k2, l1, l2) = out[k], out[k + 1]
            gap = k1 - i2
            if gap < min(max(i2 - i1, j2 - j1), max(k2 - k1, l2 - l1)):
                out[k : k + 2] = [(i1, k2, j1, l2)]
                changed = True
                break
    return out


#: Beyond this many edits a minimal diff costs more than it tells: the comparison falls back to difflib's.
MAX_EDITS = 400


def edits(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int, int, int]]:
    """The differing ranges ``(i1, i2, j1, j2)`` of a shortest edit script from ``a`` to ``b`` (Myers' greedy
    algorithm, O((N+M)·D)): repeated tokens (every turn's ``<|im_end|>``) stay aligned with their own turn,
    where difflib's longest-block heuristic can pair them with another turn's."""
    n, m = len(a), len(b)
    trace: list[dict[int, int]] = []
    v = {1: 0}
    for d in range(min(n + m, MAX_EDITS) + 1):
        trace.append(dict(v))
        for k in range(-d, d + 1, 2):
            x = v[k + 1] if k == -d or (k != d and v[k - 1] < v[k + 1]) else v[k - 1] + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x, y = x + 1, y + 1
            v[k] = x
            if x >= n and y >= m:
                return _ranges(_backtrack(trace, x, y))
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    return [(i1, i2, j1, j2) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


def _backtrack(trace: list[dict[int, int]], x: int, y: int) -> list[tuple[str, int, int]]:
    """The edit script, first edit first: ``("del", i, j)`` drops ``a[i]``, ``("ins", i, j)`` adds ``b[j]``."""
    script = []
    for d in range(len(trace) - 1, 0, -1):
        v = trace[d]
        k = x - y
        down = k == -d or (k != d and v[k - 1] < v[k + 1])
        prev_k = k + 1 if down else k - 1
        prev_x = v[prev_k]
        prev_y = prev_x - prev_k
        while x > prev_x and y > prev_y:
            x, y = x - 1, y - 1
        script.append(("ins", x, prev_y) if down else ("del", prev_x, y))
        x, y = prev_x, prev_y
    return script[::-1]


def _ranges(script: list[tuple[str, int, int]]) -> list[tuple[int, int, int, int]]:
    """Adjacent edits merged into ranges ``(i1, i2, j1, j2)``."""
    out: list[list[int]] = []
    for op, i, j in script:
        i2, j2 = (i + 1, j) if op == "del" else (i, j + 1)
        if out and out[-1][1] == i and out[-1][3] == j:
            out[-1][1], out[-1][3] = i2, j2
        else:
            out.append([i, i2, j, j2])
    return [(r[0], r[1], r[2], r[3]) for r in out]


def offsets(pieces: Sequence[str]) -> list[int]:
    out, at = [0], 0
    for piece in pieces:
        at += len(piece)
        out.append(at)
    return out


__all__ = ["MAX_EDITS", "Ranges", "atoms", "edits", "opcodes"]
