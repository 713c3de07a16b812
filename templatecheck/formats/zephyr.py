"""Hugging Face H4's Zephyr format: ``<|system|>``, ``<|user|>``, ``<|assistant|>`` turns ended by EOS."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from templatecheck.formats.base import Evidence, Format, Messages, Tools, Unsupported, no_tools, roles, text
from templatecheck.render import PINNED_CLOCK


def render_zephyr(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """Zephyr 7B (alpha, beta) and models trained with the alignment-handbook recipe.

    Source: the HuggingFaceH4/zephyr-7b-beta model card ("Intended uses & limitations": the prompt it shows)
    and the alignment-handbook's chat format: per message ``<|{role}|>\\n{text}{eos}\\n``, ``eos`` being the
    tokenizer's EOS (``</s>``); the generation prompt is ``<|assistant|>\\n``. No BOS in the text (the
    tokenizer adds it); nothing trimmed.

    Not defined (:class:`Unsupported`): tools; other roles; non-text content; a tokenizer without EOS.
    """
    no_tools(tools, messages, "zephyr")
    roles(messages, ("system", "user", "assistant"), "zephyr")
    if not eos_token:
        raise Unsupported("zephyr ends every turn with the tokenizer's EOS, and none was given")
    out = [f"<|{m['role']}|>\n{text(m, 'zephyr')}{eos_token}\n" for m in messages]
    if add_generation_prompt:
        out.append("<|assistant|>\n")
    return "".join(out)


def detect_zephyr(evidence: Evidence) -> str | None:
    if evidence.writes("<|assistant|>", "eos_token") and not evidence.writes("<|end|>"):
        return "the template writes <|assistant|> and ends turns with eos_token"
    return None


ZEPHYR = Format("zephyr", render_zephyr, "Zephyr: <|user|> ... </s> turns", detect=detect_zephyr)
