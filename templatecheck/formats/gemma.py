"""Google's Gemma turn format: ``<start_of_turn>user`` / ``<start_of_turn>model`` and ``<end_of_turn>``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from templatecheck.formats.base import Evidence, Format, Messages, Tools, Unsupported, no_tools, roles, text
from templatecheck.render import PINNED_CLOCK


def _turns(messages: Messages, bos_token: str, add_generation_prompt: bool, family: str, prefix: str) -> str:
    out = [bos_token]
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise Unsupported(f"{family} defines alternating user/model turns starting with the user")
        role = "model" if expected == "assistant" else "user"
        content = text(message, family).strip()
        out.append(f"<start_of_turn>{role}\n{prefix if i == 0 else ''}{content}<end_of_turn>\n")
    if add_generation_prompt:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def render_gemma(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """Gemma and Gemma 2 instruction-tuned models.

    Source: Google's "Gemma formatting and system instructions" page (ai.google.dev/gemma/docs/formatting)
    and the Gemma model cards: ``<bos>``, then per turn ``<start_of_turn>{user|model}\\n{text}<end_of_turn>\\n``
    (the assistant's role is ``model``); the generation prompt is ``<start_of_turn>model\\n``. Message text is
    stripped, as in the instruct templates Google publishes.

    Not defined (:class:`Unsupported`): the system role ("the system role or a system turn is not
    supported"); turns that do not alternate user/model from the user; tools; non-text content.
    """
    no_tools(tools, messages, "gemma")
    roles(messages, ("user", "assistant"), "gemma")
    return _turns(messages, bos_token, add_generation_prompt, "gemma", "")


def render_gemma3(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """Gemma 3 instruction-tuned models.

    Source: Google's Gemma 3 prompt-format documentation (ai.google.dev/gemma/docs/core/prompt-structure)
    and model card: turns as Gemma's; there is still no system turn, and system instructions are written
    at the start of the first user turn, followed by a blank line.

    Not defined (:class:`Unsupported`): a system message anywhere but first; turns that do not alternate
    user/model; tools; non-text content (images).
    """
    no_tools(tools, messages, "gemma3")
    roles(messages, ("system", "user", "assistant"), "gemma3")
    prefix = ""
    if messages and messages[0]["role"] == "system":
        prefix, messages = text(messages[0], "gemma3") + "\n\n", messages[1:]
    return _turns(messages, bos_token, add_generation_prompt, "gemma3", prefix)


def detect_gemma(evidence: Evidence) -> str | None:
    if evidence.model_type.startswith("gemma3"):
        return None
    found = evidence.confirms("<start_of_turn>", "<end_of_turn>")
    if found:
        return found
    if not evidence.templates and "<start_of_turn>" in evidence.tokens:
        return "the tokenizer has <start_of_turn>"
    return None


def detect_gemma3(evidence: Evidence) -> str | None:
    if evidence.model_type.startswith("gemma3") and evidence.writes("<start_of_turn>"):
        return f"config.json model_type {evidence.model_type!r} and the template writes <start_of_turn>"
    return None


GEMMA = Format(
    "gemma",
    render_gemma,
    "Gemma / Gemma 2: <start_of_turn>user|model, no system role",
    detect=detect_gemma,
    aliases=("gemma2",),
    strips_text=True,
)
GEMMA3 = Format(
    "gemma3",
    render_gemma3,
    "Gemma 3: Gemma turns, system text in the first user turn",
    detect_gemma3,
    strips_text=True,
)
