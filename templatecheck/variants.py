"""Prompt variants the generation layer compares with the shipped template: the same probes, prompted otherwise.

A variant is a function from a probe to the prompt text (tokenized as ``apply_chat_template`` tokenizes:
without adding special tokens). The family renderers here are deliberately small and private (plain ChatML and
Llama-3 headers); the reference formats of ``templatecheck/formats/`` can replace them without changing the
checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from templatecheck import conversation as conv
from templatecheck.probeset import Probe
from templatecheck.render import RenderError

if TYPE_CHECKING:
    from templatecheck.model import Subject

#: The system prompt of the "+ system prompt" variants: the usual default of ChatML-family templates.
DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Variant:
    """One way of prompting: its name, what the prompt is, and what it means when it beats the shipped one."""

    name: str
    about: str
    verdict: str
    render: Callable[[Probe], str]


def _chatml(messages: conv.Conversation, bos: str) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return f"{bos}{turns}<|im_start|>assistant\n"


def _llama3(messages: conv.Conversation, bos: str) -> str:
    turns = "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in messages
    )
    return f"{bos}{turns}<|start_header_id|>assistant<|end_header_id|>\n\n"


@dataclass(frozen=True)
class _Family:
    name: str
    about: str
    markers: tuple[str, ...]
    render: Callable[[conv.Conversation, str], str]


_FAMILIES = (
    _Family("chatml", "ChatML: <|im_start|>role␤ … <|im_end|>", ("<|im_start|>", "<|im_end|>"), _chatml),
    _Family(
        "llama-3",
        "Llama-3 headers: <|start_header_id|>role<|end_header_id|>␤␤ … <|eot_id|>",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        _llama3,
    ),
)


def with_system(messages: conv.Conversation) -> conv.Conversation:
    """``messages`` with the default system prompt first, unless they have a system message."""
    if messages and messages[0].get("role") == "system":
        return messages
    return [conv.system(DEFAULT_SYSTEM), *messages]


def variants(subject: Subject) -> list[Variant]:
    """The shipped prompt first, then its variants: with a default system prompt, with BOS removed or
    doubled (or added, if the template writes none), and the formats of the other families whose control
    tokens the tokenizer has, each with and without the default system prompt. The families are left out
    when the shipped prompts carry tool definitions (a ``tool_use`` template): their renderers write none."""
    tokenizer = subject.model.tokenizer
    bos = str(tokenizer.bos_token) if tokenizer.bos_token_id is not None else ""

    def shipped(probe: Probe) -> str:
        tools = {"tools": list(probe.tools)} if probe.tools else {}
        return subject.render(probe.conversation, add_generation_prompt=True, **tools)

    try:
        writes_bos = bool(bos) and subject.render(conv.USER_ONLY, add_generation_prompt=True).startswith(bos)
    except RenderError:
        writes_bos = False
    lead = bos if writes_bos else ""
    system = f"the system prompt {DEFAULT_SYSTEM!r} added where the conversation has none"
    found = [
        Variant("shipped", f"the template {subject.template.name!r} as shipped", "", shipped),
        Variant(
            "shipped + system prompt",
            f"the shipped template, {system}",
            "the model expects a system prompt that the template does not write",
            lambda p: shipped(_system_probe(p)),
        ),
    ]
    if writes_bos:
        found.append(
            Variant(
                "shipped without BOS",
                f"the shipped prompt without its leading {bos}",
                f"the model was trained without {bos} at the start, which the template writes",
                lambda p: shipped(p).removeprefix(bos),
            )
        )
    if bos:
        twice = " twice" if writes_bos else ""
        found.append(
            Variant(
                "shipped with double BOS" if writes_bos else "shipped with BOS",
                f"the shipped prompt with {'another' if writes_bos else 'a'} {bos} in front",
                f"the model was trained with {bos}{twice} at the start, which the template does not write",
                lambda p: bos + shipped(p),
            )
        )
    if _offers_tools(shipped):
        return found  # the family renderers write no tool definitions: no fair comparison
    vocabulary = tokenizer.get_vocab()
    for family in _FAMILIES:
        if not all(marker in vocabulary for marker in family.markers):
            continue
        verdict = f"the model was trained on a different format: {family.about}"

        def plain(p: Probe, f: _Family = family) -> str:
            return f.render(p.conversation, lead)

        def system_first(p: Probe, f: _Family = family) -> str:
            return f.render(with_system(p.conversation), lead)

        found.append(Variant(family.name, family.about, verdict, plain))
        found.append(
            Variant(f"{family.name} + system prompt", f"{family.about}, {system}", verdict, system_first)
        )
    return found


def _offers_tools(shipped: Callable[[Probe], str]) -> bool:
    """Whether the shipped prompts carry tool definitions even without tools (a ``tool_use`` template)."""
    try:
        return conv.WEATHER_TOOL["function"]["name"] in shipped(Probe("plain", tuple(conv.USER_ONLY), "x"))
    except RenderError:
        return False


def _system_probe(probe: Probe) -> Probe:
    return replace(probe, messages=tuple(with_system(probe.conversation)))
