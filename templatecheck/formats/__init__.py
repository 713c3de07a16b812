"""Reference formats: one small renderer per model family, and the registry the ``reference`` check reads.

A reference renderer builds the text its family's published format prescribes, in plain Python, from the
inputs a chat template receives. :func:`register` adds a format of your own; registered formats take part
in detection before the built-in ones, and ``--tc-reference NAME`` selects one by name::

    from templatecheck.formats import Format, register

    def render_acme(messages, *, add_generation_prompt=False, tools=None, bos_token="", eos_token="",
                    now=PINNED_CLOCK, **variables):
        \"\"\"Acme chat: <|acme:role|>text<|acme:end|>. Source: the Acme model card.\"\"\"
        ...

    register(Format("acme", render_acme, "Acme chat", detect=lambda e: "acme tokens" if e.writes("<|acme") else None))
"""

from __future__ import annotations

from templatecheck.errors import TemplatecheckError
from templatecheck.formats.base import Evidence, Format, Free, ReferenceRenderer, Unsupported
from templatecheck.formats.chatml import CHATML, CHATML_PLAIN, QWEN25
from templatecheck.formats.gemma import GEMMA, GEMMA3
from templatecheck.formats.llama import LLAMA2, LLAMA3, LLAMA31
from templatecheck.formats.mistral import (
    MISTRAL_V1,
    MISTRAL_V3,
    MISTRAL_V3_TEKKEN,
    MISTRAL_V7,
    MISTRAL_V7_TEKKEN,
)
from templatecheck.formats.phi import PHI3
from templatecheck.formats.zephyr import ZEPHYR

#: The word that switches the reference comparison off (``--tc-reference none``).
NONE = "none"

#: Built-in formats in detection order: the more specific before the more general (Qwen 2.5 before ChatML,
#: Llama 3.1 before Llama 3, Llama 2 before Mistral v1, whose templates share ``[INST]``).
BUILTIN: tuple[Format, ...] = (
    QWEN25,
    CHATML,
    CHATML_PLAIN,
    LLAMA31,
    LLAMA3,
    LLAMA2,
    MISTRAL_V7,
    MISTRAL_V7_TEKKEN,
    MISTRAL_V3,
    MISTRAL_V3_TEKKEN,
    MISTRAL_V1,
    GEMMA3,
    GEMMA,
    PHI3,
    ZEPHYR,
)

_REGISTERED: dict[str, Format] = {}


def register(fmt: Format, *, replace: bool = False) -> Format:
    """Add a reference format; it is detected before the built-in ones. Returns ``fmt``.

    A name (or alias) already in use is an error unless ``replace=True``, which replaces the format of that
    name (a built-in one included).
    """
    for name in (fmt.name, *fmt.aliases):
        if name == NONE:
            raise TemplatecheckError(
                f"format name {name!r} is reserved (--tc-reference none switches the check off)"
            )
        taken = _find(name)
        if taken is not None and not replace:
            raise TemplatecheckError(
                f"a reference format named {name!r} is already registered ({taken.summary}); "
                "pass replace=True to replace it, or choose another name"
            )
    for name in (fmt.name, *fmt.aliases):
        taken = _find(name)
        if taken is not None and taken.name in _REGISTERED:
            del _REGISTERED[taken.name]
    _REGISTERED[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    """Remove a format added with :func:`register` (built-in formats cannot be removed)."""
    _REGISTERED.pop(name, None)


def formats() -> list[Format]:
    """Every format, in detection order: registered ones (latest first), then the built-in ones."""
    registered = list(reversed(_REGISTERED.values()))
    shadowed = {n for f in registered for n in (f.name, *f.aliases)}
    return registered + [f for f in BUILTIN if not ({f.name, *f.aliases} & shadowed)]


def names() -> list[str]:
    """Every format name, sorted (aliases not included)."""
    return sorted(f.name for f in formats())


def _find(name: str) -> Format | None:
    return next((f for f in formats() if name == f.name or name in f.aliases), None)


def get(name: str) -> Format:
    """The format called ``name`` (or with that alias); an unknown name is an error that lists the known ones."""
    found = _find(name)
    if found is None:
        raise TemplatecheckError(
            f"--tc-reference {name!r}: no such reference format; known: {', '.join(names())} "
            f"(or '{NONE}' to skip the comparison); register your own with templatecheck.formats.register"
        )
    return found


__all__ = [
    "BUILTIN",
    "NONE",
    "Evidence",
    "Format",
    "Free",
    "ReferenceRenderer",
    "Unsupported",
    "formats",
    "get",
    "names",
    "register",
    "unregister",
]
