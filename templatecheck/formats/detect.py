"""Which reference format a template follows: read from the template, the tokenizer files and ``config.json``.

Detection reads files only (``tokenizer.json``, ``tokenizer_config.json``, ``tekken.json``,
``tokenizer.model``); it imports neither transformers nor tokenizers. The template's literals decide: every
format's detector is asked, in :func:`~templatecheck.formats.formats` order, and the tokenizer's control
tokens and kind and ``config.json`` only tell variants of the family the template shows apart (Mistral
v1/v3/v7, SentencePiece or Tekken, Gemma 3). They never override the template: a template whose literals are
those of a family without a reference here (DeepSeek, GLM, Cohere, Granite, gpt-oss, reasoning ChatML, ...)
gets no reference, and the reason names the family it looks like; a template whose literals name no family
gets none either (a tokenizer of Llama 3 says nothing about a template that writes none of its headers).
Tokens alone decide only when there is no template to read (``Evidence.templates`` empty).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from templatecheck import modeldir
from templatecheck.errors import TemplatecheckError
from templatecheck.formats import BUILTIN, NONE, formats, get
from templatecheck.formats.base import Evidence, Format
from templatecheck.formats.mistral import LATER_VERSIONS

if TYPE_CHECKING:
    from templatecheck.model import Model, Template
    from templatecheck.options import Options


@dataclass(frozen=True)
class Choice:
    """The reference format chosen for a model, and why: ``how`` is shown to the user."""

    format: Format | None
    how: str

    @property
    def name(self) -> str:
        return self.format.name if self.format is not None else NONE

    def describe(self) -> str:
        """The name and the full reason: ``llama3 (detected: the template writes ...)``."""
        return f"{self.name} ({self.how})"

    def short(self) -> str:
        """The name and how it was chosen: ``llama3 (detected)``, ``llama3 (--tc-reference)``."""
        if self.how.startswith("--tc-reference"):
            return f"{self.name} ({self.how})"
        return f"{self.name} ({'detected' if self.format is not None else 'not detected'})"


def choose(model: Model, options: Options, template: Template | None = None) -> Choice:
    """The format ``--tc-reference`` names, or the one detected for ``template`` (for every template of the model
    when ``None``); ``format`` is ``None`` for none."""
    if options.reference == NONE:
        return Choice(None, "--tc-reference none")
    if options.reference is not None:
        return Choice(get(options.reference), "--tc-reference")
    return detect(evidence_of(model, template))


@dataclass(frozen=True)
class Lookalike:
    """A family whose template literals are recognisable, but which has no reference renderer here."""

    name: str
    #: Any one of these groups of literals, all written by the template, marks the family.
    literals: tuple[tuple[str, ...], ...]
    #: ... unless the template writes one of these.
    unless: tuple[str, ...] = ()

    def seen(self, evidence: Evidence) -> str | None:
        """The literals of the family that the template writes, or ``None``."""
        if any(evidence.writes(literal) for literal in self.unless):
            return None
        found = next((group for group in self.literals if evidence.writes(*group)), None)
        if found is None:
            return None
        shown = " and ".join(found)
        return shown + (f" but not {' or '.join(self.unless)}" if self.unless else "")


#: Families recognised by their template literals that no reference format describes: comparing one of them
#: with the format whose tokens its tokenizer happens to have would report the family, not a defect.
LOOKALIKES: tuple[Lookalike, ...] = (
    Lookalike("DeepSeek (V2.5, V3, R1)", (("<｜User｜>",), ("<｜Assistant｜>",))),  # noqa: RUF001
    Lookalike("GLM / ChatGLM", (("[gMASK]",), ("<|user|>", "<|observation|>"))),
    Lookalike("Cohere Command R / A", (("<|START_OF_TURN_TOKEN|>",),)),
    Lookalike("IBM Granite", (("<|start_of_role|>",),)),
    Lookalike("gpt-oss (harmony)", (("<|channel|>",), ("<|return|>",))),
    Lookalike("Gemma 4", (("<|turn>",),)),
    Lookalike("Llama 4", (("<|header_start|>",),)),
    Lookalike("Kimi K2", (("<|im_user|>",), ("<|im_middle|>",))),
    Lookalike("Seed-OSS", (("<seed:bos>",),)),
    Lookalike("MiniMax M2", (("<minimax:tool_call>",),)),
    Lookalike("Apertus", (("<|user_start|>", "<|assistant_start|>"),)),
    Lookalike("Phi-4 (<|im_sep|>)", (("<|im_sep|>",),)),
    Lookalike("Phi-4-mini (turns without newlines, <|tool|> definitions)", (("<|/tool|>",),)),
    Lookalike("Apriel (ServiceNow)", (("[BEGIN FINAL RESPONSE]",),)),
    Lookalike(
        "Functionary (MeetKai)", (("<|start_header_id|>", ">>>"), ("<|start_header_id|>", "<function="))
    ),
    Lookalike("Llama Guard, a safety classifier's prompt", (("Check if there is unsafe content",),)),
    Lookalike(
        "Mistral tokenizer v11 or later ([CALL_ID], [ARGS], [THINK], [MODEL_SETTINGS])",
        tuple((marker,) for marker in LATER_VERSIONS),
    ),
    Lookalike(
        "Mistral tokenizer v2 (tool calls and results without call ids)",
        (("[INST]", "[TOOL_RESULTS]"),),
        unless=("call_id", "[SYSTEM_PROMPT]"),
    ),
    Lookalike("reasoning ChatML (Qwen 3, QwQ, SmolLM 3: <think> blocks)", (("<|im_start|>", "<think>"),)),
)


def detect(evidence: Evidence) -> Choice:
    """The format the template's literals name (see the module docstring); tokens decide only without one."""
    builtin = [f for f in formats() if f in BUILTIN]
    registered = [f for f in formats() if f not in BUILTIN]
    if not evidence.templates:
        return _first(formats(), evidence, "no template, and no known format detected from the tokenizer")
    found = _first(registered, evidence, "")
    if found.format is not None:
        return found
    for family in LOOKALIKES:
        literals = family.seen(evidence)
        if literals:
            return Choice(
                None,
                f"the template looks like {family.name} (it writes {literals}), a family templatecheck has no "
                "reference format for; pass --tc-reference NAME to compare with one anyway",
            )
    hint = _first(formats(), replace(evidence, templates=()), "")
    told = (
        f"; the tokenizer suggests {hint.name} ({hint.how.removeprefix('detected: ')}): "
        f"--tc-reference {hint.name} compares with it"
        if hint.format is not None
        else ""
    )
    return _first(
        builtin,
        evidence,
        f"the template writes the literals of no known format{told}; pass --tc-reference NAME",
    )


def _first(candidates: list[Format], evidence: Evidence, otherwise: str) -> Choice:
    for fmt in candidates:
        reason = fmt.detect(evidence) if fmt.detect is not None else None
        if reason:
            return Choice(fmt, f"detected: {reason}")
    return Choice(None, otherwise)


def evidence_of(model: Model, template: Template | None = None) -> Evidence:
    """What detection reads about ``model``: ``template``, else every template of the model."""
    tokens, kind = _tokenizer_facts(str(model.directory))
    chosen = [template] if template is not None else list(model.templates.values())
    return Evidence(
        tokens=tokens,
        templates=tuple(t.source for t in chosen),
        config=dict(model.config or {}),
        tokenizer_kind=kind,
    )


@lru_cache(maxsize=64)
def _tokenizer_facts(directory: str) -> tuple[frozenset[str], str]:
    root = Path(directory)
    tokens: set[str] = set()
    kind = "unknown"
    tokenizer = _load(root / "tokenizer.json")
    if isinstance(tokenizer, Mapping):
        tokens |= {t["content"] for t in tokenizer.get("added_tokens") or () if isinstance(t, Mapping)}
        parts = list(_types(tokenizer.get("pre_tokenizer"))) + list(_types(tokenizer.get("normalizer")))
        if "Metaspace" in parts or "Prepend" in parts:
            kind = "sentencepiece"
        elif "ByteLevel" in parts:
            kind = "bytelevel"
    config = _load(root / "tokenizer_config.json")
    if isinstance(config, Mapping):
        decoder = config.get("added_tokens_decoder") or {}
        tokens |= {t["content"] for t in decoder.values() if isinstance(t, Mapping) and "content" in t}
    if (root / "tekken.json").is_file():
        kind = "tekken"
    elif kind == "unknown" and any(root.glob("tokenizer.model*")):
        kind = "sentencepiece"
    return frozenset(tokens), kind


def _load(path: Path) -> Any:
    if not modeldir.present(path):
        return None
    try:
        return modeldir.read_json(path, modeldir.boundary(path.parent), modeldir.limit_for(path.name))
    except TemplatecheckError:
        return None  # loading the model reports unreadable files


def _types(node: Any) -> Iterator[str]:
    """Every ``type`` in a tokenizer.json component tree (``Sequence`` members included)."""
    if isinstance(node, Mapping):
        if isinstance(node.get("type"), str):
            yield node["type"]
        for value in node.values():
            yield from _types(value)
    elif isinstance(node, list):
        for value in node:
            yield from _types(value)
