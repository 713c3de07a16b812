"""Meta's Llama formats: Llama 2 (``[INST]`` and ``<<SYS>>``), Llama 3 (header tokens) and Llama 3.1+ (the
"Cutting Knowledge Date" system preamble and JSON tool calling with the ``ipython`` role)."""

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
    dumps,
    no_tools,
    roles,
    text,
    tool_call,
)
from templatecheck.render import PINNED_CLOCK

# --------------------------------------------------------------------------------------------------- Llama 2


def render_llama2(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """Llama 2 chat.

    Source: Meta's reference code for Llama 2 chat (meta-llama/llama ``generation.py``, ``chat_completion``)
    and the Llama 2 model card. Each user/assistant exchange is ``<s>[INST] {user} [/INST] {answer} </s>``,
    both texts stripped; a system prompt goes at the start of the first user message as
    ``<<SYS>>\\n{system}\\n<</SYS>>\\n\\n`` (the whole first user text is then stripped). The prompt ends
    after ``[/INST]``: there is no generation-prompt header.

    Not defined (:class:`Unsupported`): a system message anywhere but first; turns that do not alternate
    user/assistant starting with the user; tools; non-text content.
    """
    no_tools(tools, messages, "llama2")
    roles(messages, ("system", "user", "assistant"), "llama2")
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = text(messages[0], "llama2"), messages[1:]
    out = []
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise Unsupported(
                "llama2 defines alternating user/assistant turns after an optional system prompt"
            )
        content = text(message, "llama2")
        if expected == "user":
            if i == 0 and system is not None:
                content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
            out.append(f"{bos_token}[INST] {content.strip()} [/INST]")
        else:
            out.append(f" {content.strip()} {eos_token}")
    return "".join(out)


def detect_llama2(evidence: Evidence) -> str | None:
    if evidence.writes("[INST]", "<<SYS>>"):
        return "the template writes [INST] and <<SYS>>"
    return None


LLAMA2 = Format(
    "llama2",
    render_llama2,
    "Llama 2 chat: [INST], <<SYS>>, BOS/EOS per exchange",
    detect=detect_llama2,
    strips_text=True,
)

# --------------------------------------------------------------------------------------------------- Llama 3

HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"
EOT = "<|eot_id|>"


def header(role: str) -> str:
    return HEADER.format(role)


def render_llama3(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """Llama 3 (8B/70B Instruct, April 2024).

    Source: Meta's Llama 3 model card and prompt-format page, and the reference ``ChatFormat`` in
    meta-llama/llama3 ``llama/tokenizer.py``: ``<|begin_of_text|>``, then per message
    ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content stripped}<|eot_id|>``; the generation prompt
    is the assistant header.

    Not defined (:class:`Unsupported`): tools, tool calls and tool results (Llama 3.0 has no tool format);
    roles other than system, user, assistant; non-text content.
    """
    no_tools(tools, messages, "llama3")
    roles(messages, ("system", "user", "assistant"), "llama3")
    out = [bos_token]
    out += [header(m["role"]) + text(m, "llama3").strip() + EOT for m in messages]
    if add_generation_prompt:
        out.append(header("assistant"))
    return "".join(out)


def detect_llama3(evidence: Evidence) -> str | None:
    found = evidence.confirms("<|start_header_id|>", "<|eot_id|>")
    if found:
        return found
    if not evidence.templates and {"<|start_header_id|>", "<|eot_id|>"} <= evidence.tokens:
        return "the tokenizer has <|start_header_id|> and <|eot_id|>"
    return None


LLAMA3 = Format(
    "llama3",
    render_llama3,
    "Llama 3: header tokens, stripped content, <|eot_id|>",
    detect=detect_llama3,
    strips_text=True,
)

# -------------------------------------------------------------------------------------------- Llama 3.1+

CUSTOM_TOOLS_INTRO = (
    "Given the following functions, please respond with a JSON for a function call with its proper arguments "
    "that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


def _tool_result(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, (Mapping, list)):
        return dumps(content)
    return text(message, "llama3.1")


def _assistant_call(message: Mapping[str, Any]) -> str:
    calls = message["tool_calls"]
    if len(calls) != 1:
        raise Unsupported("llama3.1's JSON tool calling defines one call per assistant turn")
    name, arguments = tool_call(calls[0])
    if isinstance(arguments, str):
        raise Unsupported("llama3.1 writes tool-call arguments as a JSON object, not as a string")
    return header("assistant") + f'{{"name": {dumps(name)}, "parameters": {dumps(arguments)}}}' + EOT


def render_llama31(
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    """Llama 3.1, 3.2 (text) and 3.3.

    Source: Meta's Llama 3.1 / 3.2 prompt-format pages ("Model Cards & Prompt formats", llama.com) and
    model cards; details of the tool turns as in the instruct templates Meta publishes with the models.
    Headers and ``<|eot_id|>`` as Llama 3, content stripped. A system turn always comes first:
    ``Environment: ipython\\n`` when tools are given, then ``Cutting Knowledge Date: December 2023\\n``,
    ``Today Date: {date}\\n\\n`` and the system message. The date is free (:data:`TODAY`): the one the
    template writes, else ``date_string`` when the caller passes one, else today's date from the clock as
    ``%d %b %Y`` (``15 Jan 2026``; Meta's own ``llama-models`` code writes the month in full). Custom tools (JSON tool calling) go into the first user turn: an instruction,
    each tool as indented JSON, then the user's text. A call is
    ``{"name": ..., "parameters": {...}}`` as the assistant turn; a tool result is an ``ipython`` turn.

    Not defined (:class:`Unsupported`): built-in tools (``builtin_tools``: brave_search, wolfram_alpha,
    code_interpreter with ``<|python_tag|>``); several calls in one turn; tools without a first user
    message; roles other than system, user, assistant, tool/ipython; non-text content.
    """
    if variables.get("builtin_tools"):
        raise Unsupported("llama3.1 reference does not define built-in tools (<|python_tag|>, <|eom_id|>)")
    roles(messages, ("system", "user", "assistant", "tool", "ipython"), "llama3.1")
    system = ""
    if messages and messages[0]["role"] == "system":
        system, messages = text(messages[0], "llama3.1").strip(), messages[1:]
    date = variables.get("date_string") or now.strftime("%d %b %Y")
    out = [bos_token, header("system")]
    if tools:
        out.append("Environment: ipython\n")
    out.append(f"Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n{system}{EOT}")
    if tools:
        if not messages or messages[0]["role"] != "user":
            raise Unsupported("llama3.1 puts tool definitions into the first user message; there is none")
        listed = "".join(dumps(t, indent=4) + "\n\n" for t in tools)
        first, messages = messages[0], messages[1:]
        out.append(header("user") + CUSTOM_TOOLS_INTRO + listed + text(first, "llama3.1").strip() + EOT)
    for message in messages:
        role = message["role"]
        if role in ("tool", "ipython"):
            out.append(header("ipython") + _tool_result(message) + EOT)
        elif message.get("tool_calls"):
            out.append(_assistant_call(message))
        else:
            out.append(header(role) + text(message, "llama3.1").strip() + EOT)
    if add_generation_prompt:
        out.append(header("assistant"))
    return "".join(out)


def detect_llama31(evidence: Evidence) -> str | None:
    if evidence.writes("<|start_header_id|>", "Cutting Knowledge Date"):
        return "the template writes <|start_header_id|> and the 'Cutting Knowledge Date' preamble"
    if not evidence.templates and {"<|start_header_id|>", "<|eom_id|>", "<|python_tag|>"} <= evidence.tokens:
        return "the tokenizer has <|start_header_id|>, <|eom_id|> and <|python_tag|> (Llama 3.1+)"
    return None


#: The date of the preamble is the caller's or the template's: Meta's templates hard-code ``26 Jul 2024`` unless
#: ``date_string`` is passed, others write today's date from ``strftime_now``.
TODAY = Free("date_string", r"Today Date: (\d{1,2} [A-Z][a-z]+ \d{4})\n", "date of the system preamble")

LLAMA31 = Format(
    "llama3.1",
    render_llama31,
    "Llama 3.1/3.2/3.3: Cutting Knowledge preamble, Today Date, ipython tools",
    detect=detect_llama31,
    aliases=("llama3.2", "llama3.3"),
    strips_text=True,
    free=(TODAY,),
)
