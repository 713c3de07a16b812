"""ChatML with Hermes tool calls, and Qwen 2.5 (ChatML with Hermes-style tools and a default system prompt)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from templatecheck.formats.base import (
    Evidence,
    Format,
    Free,
    Messages,
    Tools,
    Unsupported,
    arguments_json,
    dumps,
    no_tools,
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
    is ``<|im_start|>assistant\\n``. ChatML writes no BOS and trims nothing. Whether EOS follows each reply,
    or the last one, is the template's (:data:`EOS_AFTER_REPLY`, :data:`EOS_AT_END`: recipes such as the
    alignment-handbook's write it).

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
        if role == "assistant":
            final = i == len(messages) - 1 and not add_generation_prompt
            eos = variables.get("eos_after_reply", "")
            out.append((eos or variables.get("eos_at_end", "")) if final else eos)
        i += 1
    if add_generation_prompt:
        out.append(f"{START}assistant\n")
    return "".join(out)


QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
#: The variable that replaces Qwen's default system prompt: the comparison passes the template's own (``""``
#: for none), a default system prompt being the template's policy.
DEFAULT = "default_system_prompt"

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
    message, else "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." (the variable
    ``default_system_prompt`` replaces that default; ``""`` writes no system turn). With tools, the
    system turn continues with a ``# Tools`` section that lists each tool's JSON schema on its own line
    inside ``<tools></tools>`` and shows the ``<tool_call>`` answer format. An assistant turn writes its text,
    then each call as ``\\n<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``. Tool results go
    back in a *user* turn, one ``<tool_response>`` block per result, consecutive results in one turn.

    Not defined (:class:`Unsupported`): non-text content; roles other than system, user, assistant, tool.
    """
    roles(messages, ("system", "user", "assistant", "tool"), "qwen2.5")
    first_is_system = bool(messages) and messages[0]["role"] == "system"
    system = text(messages[0], "qwen2.5") if first_is_system else variables.get(DEFAULT, QWEN_SYSTEM)
    if tools:
        system += QWEN_TOOLS_HEAD + "".join("\n" + dumps(t) for t in tools) + QWEN_TOOLS_TAIL
    out = [turn("system", system)] if first_is_system or system else []
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


#: What a template writes to show Hermes' tool turns: calls in ``<tool_call>`` tags, results in a ``tool`` turn.
HERMES_TOOLS = ("<tool_call>", "<tool_response>", f"{START}tool")
#: Tool formats of other ChatML models (Qwen 3 Coder's XML calls, LFM2's tool tokens, ...) that no reference
#: here describes.
OTHER_TOOLS = ("<function=", "<|tool_call_start|>", "<|tool_list_start|>")


def reads_tool_messages(evidence: Evidence) -> bool:
    """The template names tools or tool calls (so the comparison's sample has tool exchanges)."""
    return evidence.writes("tools") or evidence.writes("tool_calls")


def detect_chatml(evidence: Evidence) -> str | None:
    if any(evidence.writes(marker) for marker in NOT_PLAIN_CHATML):
        return None
    if reads_tool_messages(evidence) and not _hermes(evidence):
        return None  # its tool turns are its own: plain ChatML (below)
    found = evidence.confirms(START, END)
    if found:
        return found + (" and Hermes' tool turns" if reads_tool_messages(evidence) else "")
    if not evidence.templates and {START, END} <= evidence.tokens:
        return "the tokenizer has <|im_start|> and <|im_end|>"
    return None


def _hermes(evidence: Evidence) -> bool:
    return evidence.writes(*HERMES_TOOLS) and not any(evidence.writes(m) for m in OTHER_TOOLS)


def detect_chatml_plain(evidence: Evidence) -> str | None:
    if any(evidence.writes(marker) for marker in NOT_PLAIN_CHATML):
        return None
    found = evidence.confirms(START, END)
    if found and reads_tool_messages(evidence) and not _hermes(evidence):
        return found + ", with tool turns of its own (not Hermes' or Qwen's)"
    return None


def detect_qwen25(evidence: Evidence) -> str | None:
    if evidence.writes(START, QWEN_SYSTEM):
        return f"the template writes <|im_start|> and Qwen 2.5's default system prompt {QWEN_SYSTEM!r}"
    qwen_results = evidence.writes(START, "<tool_call>", "<tool_response>") and not evidence.writes(
        f"{START}tool"
    )
    if qwen_results and not any(evidence.writes(m) for m in OTHER_TOOLS):
        return (
            "the template writes <|im_start|>, and <tool_response> in a user turn (Qwen 2.5's tool results)"
        )
    return None


def render_chatml_plain(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """ChatML turns only, for ChatML templates whose tool turns are their own.

    Source: OpenAI's ChatML description, as :func:`render_chatml`. ChatML itself defines no tools; a model
    that writes tool calls in its own way (Qwen 3 Coder's XML calls, LFM2's tool tokens, ...) is compared on
    its plain turns only.

    Not defined (:class:`Unsupported`): tools, tool calls and tool results; non-text content.
    """
    no_tools(tools, messages, "chatml-plain")
    return render_chatml(
        messages, add_generation_prompt=add_generation_prompt, bos_token=bos_token, **variables
    )


#: Fine-tuning recipes (the alignment-handbook's, TRL's) end each ChatML reply, or the conversation's last one,
#: with the tokenizer's EOS too.
EOS_AFTER_REPLY = Free("eos_after_reply", r"<\|im_end\|>\n({eos})<\|im_start\|>", "EOS after each reply")
EOS_AT_END = Free("eos_at_end", r"<\|im_end\|>\n({eos})$", "EOS after the last reply")

CHATML = Format(
    "chatml",
    render_chatml,
    "ChatML turns; Hermes tool calls and tool responses",
    detect=detect_chatml,
    aliases=("hermes",),
    free=(EOS_AFTER_REPLY, EOS_AT_END),
)
CHATML_PLAIN = Format(
    "chatml-plain",
    render_chatml_plain,
    "ChatML turns, for a template with tool turns of its own (compared without tools)",
    detect=detect_chatml_plain,
    free=(EOS_AFTER_REPLY, EOS_AT_END),
)
QWEN25 = Format(
    "qwen2.5",
    render_qwen25,
    "ChatML with Qwen 2.5's default system prompt and Hermes-style tools",
    detect=detect_qwen25,
    aliases=("qwen",),
)
