"""The Mistral reference renderers against mistral-common, Mistral's own encoder (the token-level oracle)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from templatecheck.checks.reference import mistral_common
from templatecheck.formats import get
from templatecheck.formats.compare import Case, cases, comparable
from templatecheck.model import Subject, load_model
from templatecheck.result import Outcome
from tests.conftest import SHARED, needs_shared

pytest.importorskip("mistral_common")
pytest.importorskip("sentencepiece")

SAMPLES = SHARED / "corpus" / "tokenizers" / "mistralai__mistral-common" / "samples"
MISTRAL_V03 = SHARED / "models" / "mistral-7b-instruct-v0.3"
BYTE = re.compile(r"<0x([0-9A-F]{2})>")


def bundled(version: str, tekken: bool) -> Any:
    from templatecheck.formats.oracle import _bundled

    return _bundled(version, tekken)


def as_text(oracle: Any, ids: Sequence[int], spm: bool) -> str:
    """mistral-common's tokens as the text a reference renderer writes: SentencePiece's ▁ is a space."""
    if not spm:
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        raw = oracle.tokenizer.instruct_tokenizer.tokenizer
        return str(raw.decode(list(ids), special_token_policy=SpecialTokenPolicy.KEEP))
    out, pending = [], bytearray()
    for piece in oracle.pieces(ids):
        byte = BYTE.fullmatch(piece)
        if byte:
            pending.append(int(byte.group(1), 16))
            continue
        out.append(pending.decode("utf-8", errors="replace") + piece.replace("▁", " "))
        pending.clear()
    return "".join(out) + pending.decode("utf-8", errors="replace")


def awaiting_reply(sample: list[Case]) -> list[Case]:
    """The conversations mistral-common encodes for serving: ending with the user or a tool result."""
    return [c for c in sample if c.add_generation_prompt and c.messages[-1]["role"] != "assistant"]


@pytest.mark.parametrize(
    ("family", "version", "tekken"),
    [
        ("mistral-v1", "v1", False),
        ("mistral-v3", "v3", False),
        ("mistral-v3-tekken", "v3", True),
        ("mistral-v7", "v7", False),
    ],
)
def test_each_mistral_renderer_writes_what_mistral_common_encodes(
    family: str, version: str, tekken: bool
) -> None:
    from templatecheck.formats import Unsupported
    from templatecheck.formats.oracle import Rejected

    fmt, oracle = get(family), bundled(version, tekken)
    compared, rejected_by_both = 0, 0
    for case in awaiting_reply(cases(60, tool_calls=True)):
        messages = [dict(m) for m in case.messages]
        tools = [dict(t) for t in case.tools] if case.tools else None
        try:
            theirs = oracle.encode(messages, tools)
        except Rejected:
            with pytest.raises(Unsupported):  # what mistral-common rejects, the reference leaves undefined
                fmt.render(messages, tools=tools, bos_token="<s>", eos_token="</s>")
            rejected_by_both += 1
            continue
        ours = fmt.render(messages, tools=tools, bos_token="<s>", eos_token="</s>")
        assert ours == as_text(oracle, theirs, spm=not tekken), case.describe()
        compared += 1
    assert compared >= 30 and rejected_by_both >= 1


@pytest.fixture(scope="module")
def v03_tokenizer() -> Any:
    return load_model(str(MISTRAL_V03)).tokenizer


@needs_shared
@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.iterdir()) if SAMPLES.is_dir() else [])
def test_mistral_v3_renderer_and_the_real_tokenizer_give_mistral_commons_recorded_ids(
    sample: str, v03_tokenizer: Any
) -> None:
    data = json.loads((SAMPLES / sample / "sample.json").read_text())
    expected = json.loads((SAMPLES / sample / "tokens_v3.json").read_text())["tokens"]
    text = get("mistral-v3").render(
        data["messages"], tools=data.get("tools"), bos_token="<s>", eos_token="</s>"
    )
    assert v03_tokenizer(text, add_special_tokens=False)["input_ids"] == expected


@needs_shared
def test_mistral_v1_renderer_gives_mistral_commons_recorded_text() -> None:
    data = json.loads((SAMPLES / "no_tools" / "sample.json").read_text())
    expected = (SAMPLES / "no_tools" / "text_v1.txt").read_text().replace("▁", " ")
    text = get("mistral-v1").render(data["messages"], bos_token="<s>", eos_token="</s>")
    assert comparable(text, "") == expected


@needs_shared
def test_the_oracle_on_mistral_7b_instruct_v03_finds_escaped_tool_calls() -> None:
    """Mistral's own v3 template, rendered as transformers renders it, HTML-escapes tool calls whose arguments
    are a mapping (its ``|safe`` text joined with plain text), and writes empty messages as ``[INST] ``."""
    model = load_model(str(MISTRAL_V03))
    result = mistral_common(Subject(model, model.templates["default"]))
    assert result.outcome is Outcome.FAILED
    message = result.message
    assert message.startswith("template + tokenizer give other token ids than mistral-common in ")
    assert f"(mistral-common mistral-v3 via {MISTRAL_V03 / 'tokenizer.model'})" in message
    assert "conversation: tool call (add_generation_prompt=True):" in message
    assert "    mistral-common: [1501 '▁['] [7567 '{\"'] [1629 'name']" in message
    assert "    template: [21924 '▁[{'] [28208 '&#'] [29538 '3'] [29549 '4']" in message
    assert "[TOOL_CALLS] [{&#34;name&#34;: &#34;get_weather&#34;" in message
