"""ChatML with Hermes tool calls, and Qwen 2.5 (ChatML with Hermes-style tools and a default system prompt)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from templatecheck.formats.base import (
    Evidence,
    Format,
    Messages,
    Tools,
    Unsupported,
    arguments_json,
    dumps,
    roles,
    text,
    tool_call,
)
from templatecheck.render import PINNED_CLOCK

START, END = "<|im_start|>", "<|im_end|>"


def turn(role: str, content: str) -> str:
    return f"{START}{role}\n{content}{END}\n"


def hermes_call(call: Mapping[str, Any]) -> str:
    """One Hermes tool call: ``{"name": ..., "arguments": ...}`` inside ``<tool_call>`` tags."""
    name, arguments = tool_call(call)
    return f'<tool_call>\n{{"name": {dumps(name)}, "arguments": {arguments_json(arguments)}}}\n</tool_call>'


def render_chatml(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """ChatML, with the Hermes function-calling turns.

    Sources: OpenAI's ChatML description (openai/openai-python ``chatml.md``: ``<|im_start|>{role}\\n{content}
    <|im_end|>`` per message) and the Hermes 2 Pro / Hermes 3 model cards ("Prompt Format for Function
    Calling", NousResearch): a call is ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` in an
    assistant turn, results go back in a ``tool`` turn as ``<tool_response>\\n...\\n</tool_response>``,
    followed by a newline before ``<|im_end|>``. Every turn ends with ``<|im_end|>\\n``; the generation prompt
    is ``<|im_start|>assistant\\n``. ChatML writes no BOS and trims nothing.

    Not defined (:class:`Unsupported`): tool definitions (``tools=``). Hermes puts the signatures inside
    ``<tools></tools>`` in a system turn, but its sources word that turn differently (the model cards,
    Hermes-Function-Calling's ``sys_prompt.yml`` and the published ``tool_use`` templates all differ), so
    the reference does not fix its wording. Non-text content.
    """
    if tools:
        raise Unsupported(
            "chatml does not fix the wording of Hermes' tool-definition system turn (its model cards and "
            "templates differ); conversations with tools= are not compared"
        )
    roles(messages, ("system", "user", "assistant", "tool"), "chatml")
    out = []
    i = 0
    while i < len(messages):
        message = messages[i]
        role = message["role"]
        if role == "tool":
            responses = []
            while i < len(messages) and messages[i]["role"] == "tool":
                responses.append(f"<tool_response>\n{text(messages[i], 'chatml')}\n</tool_response>")
                i += 1
            out.append(turn("tool", "\n".join(responses) + "\n"))
            continue
        content = text(message, "chatml")
        calls = message.get("tool_calls") or []
        if role == "assistant" and calls:
            body = "\n".join([*([content] if content else []), *(hermes_call(c) for c in calls)])
            out.append(turn("assistant", body))
        else:
            out.append(turn(role, content))
        i += 1
    if add_generation_prompt:
        out.append(f"{START}assistant\n")
    return "".join(out)


QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

QWEN_TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
QWEN_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)


def render_qwen25(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """Qwen 2.5: ChatML with a default system prompt and Hermes-style tool use.

    Source: the Qwen 2.5 model cards and Qwen's function-calling documentation (qwen.readthedocs.io,
    "Function Calling", Hermes-style tool use). The first turn is always a system turn: the caller's system
    message, else "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.". With tools, the
    system turn continues with a ``# Tools`` section that lists each tool's JSON schema on its own line
    inside ``<tools></tools>`` and shows the ``<tool_call>`` answer format. An assistant turn writes its text,
    then each call as ``\\n<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``. Tool results go
    back in a *user* turn, one ``<tool_response>`` block per result, consecutive results in one turn.

    Not defined (:class:`Unsupported`): non-text content; roles other than system, user, assistant, tool.
    """
    roles(messages, ("system", "user", "assistant", "tool"), "qwen2.5")
    first_is_system = bool(messages) and messages[0]["role"] == "system"
    system = text(messages[0], "qwen2.5") if first_is_system else QWEN_SYSTEM
    if tools:
        system += QWEN_TOOLS_HEAD + "".join("\n" + dumps(t) for t in tools) + QWEN_TOOLS_TAIL
    out = [turn("system", system)]
    rest = messages[1:] if first_is_system else messages
    for i, message in enumerate(rest):
        role = message["role"]
        content = text(message, "qwen2.5")
        if role == "tool":
            opening = "" if i > 0 and rest[i - 1]["role"] == "tool" else f"{START}user"
            closing = "" if i + 1 < len(rest) and rest[i + 1]["role"] == "tool" else f"{END}\n"
            out.append(f"{opening}\n<tool_response>\n{content}\n</tool_response>{closing}")
        elif role == "assistant" and message.get("tool_calls"):
            head = f"{START}assistant" + (f"\n{content}" if content else "")
            calls = "".join("\n" + hermes_call(c) for c in message["tool_calls"])
            out.append(f"{head}{calls}{END}\n")
        else:
            out.append(turn(role, content))
    if add_generation_prompt:
        out.append(f"{START}assistant\n")
    return "".join(out)


#: Formats built on ChatML's tokens with rules of their own, which plain ChatML does not describe: reasoning
#: blocks (Qwen 3, QwQ, SmolLM 3), Phi-4's ``<|im_sep|>``.
NOT_PLAIN_CHATML = ("<think>", "<|im_sep|>")


def detect_chatml(evidence: Evidence) -> str | None:
    if any(evidence.writes(marker) for marker in NOT_PLAIN_CHATML):
        return None
    if evidence.writes(START, END):
        return "the template writes <|im_start|> and <|im_end|>"
    if not evidence.templates and {START, END} <= evidence.tokens:
        return "the tokenizer has <|im_start|> and <|im_end|>"
    return None


def detect_qwen25(evidence: Evidence) -> str | None:
    if evidence.writes(START, QWEN_SYSTEM):
        return f"the template writes <|im_start|> and Qwen 2.5's default system prompt {QWEN_SYSTEM!r}"
    return None


CHATML = Format(
    "chatml",
    render_chatml,
    "ChatML turns; Hermes tool calls and tool responses",
    detect=detect_chatml,
    aliases=("hermes",),
)
QWEN25 = Format(
    "qwen2.5",
    render_qwen25,
    "ChatML with Qwen 2.5's default system prompt and Hermes-style tools",
    detect=detect_qwen25,
    aliases=("qwen",),
)
