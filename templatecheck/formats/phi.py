"""Microsoft's Phi-3 format: ``<|system|>``, ``<|user|>``, ``<|assistant|>`` turns ended by ``<|end|>``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from templatecheck.formats.base import Evidence, Format, Free, Messages, Tools, no_tools, roles, text
from templatecheck.render import PINNED_CLOCK


def render_phi3(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """Phi-3 and Phi-3.5 instruct models.

    Source: the "Chat Format" section of the Phi-3 / Phi-3.5 model cards (microsoft/Phi-3-mini-4k-instruct,
    microsoft/Phi-3.5-mini-instruct): per message ``<|{role}|>\\n{text}<|end|>\\n`` for the system, user and
    assistant roles; the generation prompt is ``<|assistant|>\\n``. The format writes no BOS (the tokenizer
    adds it) and trims nothing. An EOS closing a conversation rendered without the generation prompt (a
    training sequence, as Phi-3.5's template writes it) is the template's (:data:`EOS_AT_END`).

    Not defined (:class:`Unsupported`): tools; other roles; non-text content (Phi-3 vision's images).
    """
    no_tools(tools, messages, "phi3")
    roles(messages, ("system", "user", "assistant"), "phi3")
    out = [f"<|{m['role']}|>\n{text(m, 'phi3')}<|end|>\n" for m in messages]
    out.append("<|assistant|>\n" if add_generation_prompt else variables.get("eos_at_end", ""))
    return "".join(out)


def detect_phi3(evidence: Evidence) -> str | None:
    if evidence.writes("<|user|>", "<|end|>"):
        return "the template writes <|user|> and <|end|>"
    if evidence.writes("<|assistant|>", "<|end|>"):
        return "the template writes <|assistant|> and <|end|>"
    if not evidence.templates and {"<|user|>", "<|end|>", "<|assistant|>"} <= evidence.tokens:
        return "the tokenizer has <|user|>, <|assistant|> and <|end|>"
    return None


#: Phi-3.5's template ends a conversation rendered without the generation prompt with EOS (a training sequence).
EOS_AT_END = Free("eos_at_end", r"<\|end\|>\n({eos})$", "EOS at the end of a conversation")

PHI3 = Format(
    "phi3",
    render_phi3,
    "Phi-3 / 3.5: <|user|> ... <|end|> turns",
    detect=detect_phi3,
    aliases=("phi3.5",),
    free=(EOS_AT_END,),
)
