"""Mistral's instruct formats, tokenizer versions v1, v3 and v7, for SentencePiece and Tekken tokenizers.

The token-level definition is mistral-common's ``encode_chat_completion`` (which the ``mistral_common`` check
runs as an oracle when it is installed). These renderers give the same thing as text: control tokens
(``[INST]``, ``[/INST]``, ``[TOOL_CALLS]``, ...) and the text between them. mistral-common encodes each text
piece with SentencePiece's leading ``▁``, which a converted Hugging Face tokenizer does not add after a
control token, so for SentencePiece tokenizers the text carries that space explicitly (``[INST] hello``),
and for Tekken it does not (``[INST]hello``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
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
    roles,
    text,
    tool_call,
)
from templatecheck.render import PINNED_CLOCK


@dataclass(frozen=True)
class Version:
    """What distinguishes one Mistral format from another."""

    name: str  # "v1", "v3", "v7"
    spm: bool  # SentencePiece (a leading space on every text piece) or Tekken (none)

    @property
    def family(self) -> str:
        return f"mistral-{self.name}" + ("" if self.spm else "-tekken")

    def piece(self, content: str) -> str:
        """A text piece as mistral-common encodes it after a control token."""
        return f" {content}" if self.spm and content else content


def _merge(messages: Messages, family: str) -> list[dict[str, Any]]:
    """mistral-common's normalisation: consecutive user (or assistant) texts join with a blank line."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and role == previous["role"]
            and role in ("user", "assistant")
            and not message.get("tool_calls")
            and not previous.get("tool_calls")
        ):
            previous["content"] = previous["content"] + "\n\n" + text(message, family)
        else:
            merged.append({**message, "content": text(message, family)})
    return merged


def _validate(messages: list[dict[str, Any]], family: str) -> None:
    """The message orders mistral-common accepts."""
    previous = None
    for message in messages:
        role = message["role"]
        if role == "system" and previous in ("assistant", "tool"):
            raise Unsupported(f"{family} accepts no system message after an {previous} message")
        if role == "assistant":
            if previous not in ("user", "tool"):
                raise Unsupported(f"{family} accepts an assistant message only after a user or tool message")
            if not message.get("tool_calls") and not message["content"]:
                raise Unsupported(f"{family} rejects an empty assistant message")
            if message.get("tool_calls") and message["content"]:
                raise Unsupported(f"{family} rejects an assistant message with both text and tool calls")
        if role == "tool" and previous not in ("assistant", "tool"):
            raise Unsupported(f"{family} accepts a tool result only after a tool call")
        previous = role
    if previous == "system":
        raise Unsupported(f"{family} conversations do not end with a system message")


def _tool_content(content: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content


def _calls(version: Version, message: Mapping[str, Any]) -> str:
    calls = []
    for call in message["tool_calls"]:
        name, arguments = tool_call(call)
        entry: dict[str, Any] = {"name": name, "arguments": _tool_content(arguments_json(arguments))}
        call_id = call.get("id")
        if version.name != "v1" and call_id and call_id != "null":
            entry["id"] = call_id
        calls.append(entry)
    return "[TOOL_CALLS]" + version.piece(dumps(calls))


def _result(version: Version, message: Mapping[str, Any]) -> str:
    call_id = message.get("tool_call_id")
    if not call_id:
        raise Unsupported(f"{version.family} needs the tool_call_id of each tool result")
    if version.name == "v7":
        body = version.piece(call_id) + "[TOOL_CONTENT]" + version.piece(message["content"])
    else:
        body = version.piece(dumps({"content": _tool_content(message["content"]), "call_id": call_id}))
    return f"[TOOL_RESULTS]{body}[/TOOL_RESULTS]"


def render_mistral(
    version: Version,
    messages: Messages,
    *,
    add_generation_prompt: bool = False,
    tools: Tools | None = None,
    bos_token: str = "",
    eos_token: str = "",
    now: datetime = PINNED_CLOCK,
    **variables: Any,
) -> str:
    family = version.family
    allowed = (
        ("system", "user", "assistant") if version.name == "v1" else ("system", "user", "assistant", "tool")
    )
    roles(messages, allowed, family)
    if version.name == "v1" and (tools or any(m.get("tool_calls") for m in messages)):
        raise Unsupported("mistral-v1 defines no tools")
    chat = _merge(messages, family)
    _validate(chat, family)
    users = [i for i, m in enumerate(chat) if m["role"] == "user"]
    first_user, last_user = (users[0], users[-1]) if users else (-1, -1)
    system = "\n\n".join(m["content"] for m in chat if m["role"] == "system")
    out = [bos_token]
    for i, message in enumerate(chat):
        role, content = message["role"], message["content"]
        if role == "system":
            if version.name == "v7":
                out.append("[SYSTEM_PROMPT]" + version.piece(content) + "[/SYSTEM_PROMPT]")
            continue
        if role == "user":
            if system and version.name != "v7" and i == (first_user if version.name == "v1" else last_user):
                content = f"{system}\n\n{content}"
            if version.name == "v1":
                space = variables.get("inst_space" if i == first_user else "turn_space", " ")
                out.append(f"{space}[INST] {content} [/INST]")
                continue
            if tools and i == last_user:
                out.append("[AVAILABLE_TOOLS]" + version.piece(dumps(list(tools))) + "[/AVAILABLE_TOOLS]")
            out.append("[INST]" + version.piece(content) + "[/INST]")
        elif role == "assistant":
            if message.get("tool_calls"):
                out.append(_calls(version, message) + eos_token)
            elif version.name == "v1":
                out.append(f"{variables.get('answer_space', ' ')}{content}{eos_token}")
            else:
                out.append(version.piece(content.rstrip(" ")) + eos_token)
        else:
            out.append(_result(version, message))
    return "".join(out)


_SOURCES = {
    "v1": (
        "Mistral 7B Instruct v0.1/v0.2 and Mixtral 8x7B (tokenizer v1, SentencePiece).\n\n"
        "    Source: mistral-common's ``InstructTokenizerV1`` and Mistral's tokenization guide (docs.mistral.ai,\n"
        '    "Tokenization"): ``<s>▁[INST]▁{user}▁[/INST]▁{answer}</s>``, where ``[INST]`` and ``[/INST]`` are\n'
        "    plain text; all system messages, joined by a blank line, open the first user message. The spaces\n"
        "    before ``[INST]`` and a reply (SentencePiece's ``▁``) are the template's to write or not\n"
        "    (:data:`INST_SPACE`, :data:`TURN_SPACE`, :data:`ANSWER_SPACE`).\n\n"
        "    Not defined (:class:`Unsupported`): tools; empty assistant messages; orders mistral-common rejects."
    ),
    "v3": (
        "Mistral 7B Instruct v0.3, Mixtral 8x22B, Codestral (tokenizer v3)TEKKEN.\n\n"
        "    Source: mistral-common's ``InstructTokenizerV3`` and Mistral's tokenization guide: control tokens\n"
        "    ``[INST]``/``[/INST]``; the system prompt (all system messages joined by a blank line) opens the *last*\n"
        "    user message, preceded by ``[AVAILABLE_TOOLS]{json}[/AVAILABLE_TOOLS]`` when tools are given;\n"
        "    assistant text (trailing spaces dropped) ends with ``</s>``; calls are ``[TOOL_CALLS][{name,\n"
        "    arguments, id}]</s>`` and results ``[TOOL_RESULTS]{content, call_id}[/TOOL_RESULTS]``.\n\n"
        "    Not defined (:class:`Unsupported`): empty assistant messages; text and calls in one message; tool\n"
        "    results without ``tool_call_id``; orders mistral-common rejects (a system message after a reply)."
    ),
    "v7": (
        "Mistral Large 2411, Mistral Small 3 / 3.1 (tokenizer v7)TEKKEN.\n\n"
        "    Source: mistral-common's ``InstructTokenizerV7`` and Mistral's tokenization guide: as v3, but each\n"
        "    system message stays where it is, as ``[SYSTEM_PROMPT]{text}[/SYSTEM_PROMPT]``, and a tool result is\n"
        "    ``[TOOL_RESULTS]{call_id}[TOOL_CONTENT]{content}[/TOOL_RESULTS]``.\n\n"
        "    Not defined (:class:`Unsupported`): empty assistant messages; text and calls in one message; tool\n"
        "    results without ``tool_call_id``; orders mistral-common rejects (a system message after a reply)."
    ),
}


#: v1 writes ``[INST]``, ``[/INST]`` and the reply as separate text pieces, each of which SentencePiece encodes
#: with a leading ``▁`` (mistral-common's `` [INST]`` and `` {reply}``); whether a text template must write
#: that space depends on the tokenizer (one that prepends ``▁`` to every piece needs none), so the format
#: leaves it to the template, and the ``mistral_common`` check compares the token ids.
INST_SPACE = Free("inst_space", r"^( ?)\[INST\]", "space before the first [INST]")
TURN_SPACE = Free("turn_space", r">( ?)\[INST\]", "space before a later [INST]")
ANSWER_SPACE = Free("answer_space", r"\[/INST\]( ?)(?=\S)", "space before a reply")


def _format(version: Version, summary: str) -> Format:
    renderer = partial(render_mistral, version)
    tekken = "" if version.spm else ", with a Tekken tokenizer (no space after control tokens)"
    renderer.__doc__ = _SOURCES[version.name].replace("TEKKEN", tekken)
    free = (INST_SPACE, TURN_SPACE, ANSWER_SPACE) if version.name == "v1" else ()
    return Format(version.family, renderer, summary, detect=partial(_detect, version), free=free)


#: Control tokens of tokenizer versions after v7 (v11: ``[CALL_ID]``; v13: ``[ARGS]``, ``[THINK]``; v15:
#: ``[MODEL_SETTINGS]``), whose tool and reasoning formats these renderers do not define.
LATER_VERSIONS = ("[CALL_ID]", "[ARGS]", "[THINK]", "[MODEL_SETTINGS]")


#: Control tokens of v3's tool format: a template that writes one is v3 or later, whatever the tokenizer.
V3_TOOLS = ("[AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]")


def _detect(version: Version, evidence: Evidence) -> str | None:
    """Mistral's version shows in the template where it writes v3's tool tokens or v7's ``[SYSTEM_PROMPT]``,
    else in the tokenizer (v1 has ``[INST]`` as text, v3 as a control token). SentencePiece or Tekken shows
    in a Mistral tokenizer's kind; with another tokenizer, in the template (a SentencePiece template writes a
    space after each control token, ``'[INST] '``)."""
    if not evidence.writes("[INST]", "[/INST]") or evidence.writes("<<SYS>>"):
        return None
    if any(evidence.writes(marker) for marker in LATER_VERSIONS):
        return None
    found, how = _version(evidence)
    spm, kind = _kind(found, evidence)
    if found != version.name or spm != version.spm:
        return None
    return f"{how}; {kind}"


def _version(evidence: Evidence) -> tuple[str, str]:
    if evidence.writes("[SYSTEM_PROMPT]"):
        return "v7", "the template writes [INST] and [SYSTEM_PROMPT]"
    if "[SYSTEM_PROMPT]" in evidence.tokens:
        return "v7", "the template writes [INST], and the tokenizer has [SYSTEM_PROMPT]"
    tools = next((t for t in V3_TOOLS if evidence.writes(t)), None)
    if tools:
        return "v3", f"the template writes [INST] and {tools}"
    if "[INST]" in evidence.tokens and not any(_SPACED_INST.search(t) for t in evidence.templates):
        return (
            "v3",
            "the template writes [INST], a control token of the tokenizer, and the tokenizer has no [SYSTEM_PROMPT]",
        )
    if "[INST]" in evidence.tokens:
        # the template's own text decides: '[INST] text [/INST]' with spaces around the text is v1's format
        return (
            "v1",
            "the template writes '[INST] ' and ' [/INST]' around the text, the v1 format, and no v3 tool token",
        )
    return "v1", "the template writes [INST], which the tokenizer has as plain text"


#: v1's ``[INST] {text} [/INST]``: a space before ``[/INST]`` (v3 writes ``{text}[/INST]``).
_SPACED_INST = re.compile(r"""\s\[/INST\]|['"] \[/INST\]""")


def _kind(found: str, evidence: Evidence) -> tuple[bool, str]:
    """SentencePiece (``True``) or Tekken, and how that shows."""
    if found == "v1" or evidence.tokenizer_kind == "sentencepiece":
        return True, "a SentencePiece tokenizer"
    if evidence.tokenizer_kind == "tekken":
        return False, "a Tekken tokenizer (tekken.json)"
    # the template's own spacing decides before a byte-level tokenizer does: Tekken templates write no space
    if any(
        re.search(r"\[(INST|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS|SYSTEM_PROMPT)\] ", t)
        for t in evidence.templates
    ):
        return True, "the template writes a space after its control tokens, as SentencePiece templates do"
    if "[INST]" in evidence.tokens:
        return False, "a Tekken (byte-level) tokenizer"
    return False, "the template writes no space after its control tokens, as Tekken templates do"


MISTRAL_V1 = _format(
    Version("v1", spm=True), "Mistral v1: [INST] as text, system prompt in the first user turn"
)
MISTRAL_V3 = _format(
    Version("v3", spm=True), "Mistral v3 (SentencePiece): system prompt in the last user turn"
)
MISTRAL_V3_TEKKEN = _format(Version("v3", spm=False), "Mistral v3 with Tekken (Nemo)")
MISTRAL_V7 = _format(Version("v7", spm=True), "Mistral v7 (SentencePiece): [SYSTEM_PROMPT] in place")
MISTRAL_V7_TEKKEN = _format(Version("v7", spm=False), "Mistral v7 with Tekken (Small 3)")
