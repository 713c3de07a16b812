"""Hypothesis strategies for conversations, biased toward text that breaks templates.

``conversations()`` draws system/user/assistant/tool turns with text that has leading and trailing
whitespace, ``\\r\\n``, Jinja syntax, control-token look-alikes and non-BMP characters; it shrinks toward a
single short user turn.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from templatecheck.conversation import Conversation

#: Fragments that have broken real templates: whitespace a template may trim, Jinja syntax it may evaluate,
#: markup it may confuse with its own, characters outside the BMP.
TRICKY_FRAGMENTS = (
    " ",
    "\n",
    "\r\n",
    "\t",
    "  ",
    "{{ x }}",
    "{% if %}",
    "{#",
    "<|im_end|>",
    "<|eot_id|>",
    "</s>",
    "[INST]",
    "<tool_call>",
    "'",
    '"',
    "\\",
    "None",
    "😀",
    "𝔘",
    "é",
)


#: A small alphabet with what breaks templates and tokenizers: printable ASCII, control characters, unusual
#: spaces and line breaks, accents, CJK, and characters outside the BMP. Drawing from an explicit alphabet
#: spares Hypothesis building its Unicode tables, which takes seconds in a directory without ``.hypothesis``.
SAMPLE_ALPHABET = (
    "".join(chr(c) for c in range(32, 127))
    + "\t\n\r\x0b\x0c\x1f\x7f\u00a0\u00e9\u00df\u200b\u2028\u4e2d\U0001f600\U0001d518"
)


def text(*, min_size: int = 0, max_size: int = 40, alphabet: str | None = None) -> st.SearchStrategy[str]:
    """Message text: mostly plain words, with template-breaking fragments mixed in.

    The text between fragments is drawn from all of Unicode, or from ``alphabet`` when given.
    """
    word = st.sampled_from(["hello", "Paris", "42", "yes", "the", "a", "answer", "x"])
    free = st.text(max_size=4) if alphabet is None else st.text(alphabet, max_size=4)
    piece = st.one_of(word, word, st.sampled_from(TRICKY_FRAGMENTS), free)
    return (
        st.lists(piece, min_size=min_size, max_size=max_size // 4 + 1)
        .map("".join)
        .filter(lambda s: min_size <= len(s) <= max_size * 2)
    )


@st.composite
def conversations(
    draw: st.DrawFn,
    *,
    system: bool | None = None,
    max_turns: int = 3,
    end_with_user: bool = True,
    content: st.SearchStrategy[str] | None = None,
) -> Conversation:
    """A well-formed conversation: an optional system message, then alternating user/assistant turns.

    ``system=None`` draws whether there is one. With ``end_with_user`` the last turn is the user's, ready for a
    generation prompt; otherwise it ends with an assistant reply.
    """
    content = content if content is not None else text()
    messages: list[dict[str, Any]] = []
    if system if system is not None else draw(st.booleans()):
        messages.append({"role": "system", "content": draw(content)})
    turns = draw(st.integers(min_value=1, max_value=max_turns))
    for i in range(turns):
        messages.append({"role": "user", "content": draw(content)})
        if i < turns - 1 or not end_with_user:
            messages.append({"role": "assistant", "content": draw(content)})
    return messages
