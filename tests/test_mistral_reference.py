"""The Mistral reference renderers against mistral-common, Mistral's own encoder (the token-level oracle)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from templatecheck.causes import CAUSES
from templatecheck.checks import reference as reference_checks
from templatecheck.checks.reference import mistral_common
from templatecheck.formats import get
from templatecheck.formats.classify import BY_NAME
from templatecheck.formats.compare import Case, cases, comparable
from templatecheck.model import Subject, Template, load_model
from templatecheck.options import Options
from templatecheck.result import Outcome
from tests.conftest import ROOT, SHARED, needs_shared

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
    # The suite's own sample (100 drawn conversations, as `pytest --model` draws): mistral-common 1.13 rejects
    # its empty replies, and v1 its tool exchanges, so a smaller draw leaves v1 fewer than 30 to compare.
    for case in awaiting_reply(cases(100, tool_calls=True)):
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
def test_the_oracle_on_mistral_7b_instruct_v03_maps_its_tool_defects_to_their_owner() -> None:
    """Mistral's own v3 template, rendered as transformers renders it, HTML-escapes tool calls whose arguments
    are a mapping (its ``|safe`` text joined with plain text) and re-encodes a string tool result: the tools
    check's causes, noted here. What is left of the template is its ``[INST] `` for an empty message (a
    warning)."""
    model = load_model(str(MISTRAL_V03))
    result = mistral_common(Subject(model, model.templates["default"]))
    # Where a drawn reply has two spaces, the Hugging Face tokenizer writes them as one piece and
    # mistral-common as two: the same text, other ids, a defect of the tokenizer file and not the template's.
    # The tool defects are the tools check's: none of them fails here. (What else differs on drawn text, such as
    # edge whitespace or double spaces, depends on the draw, which differs between processes.)
    failing = {f.cause for f in result.findings if f.outcome is Outcome.FAILED}
    assert not {c for c in failing if "tool" in c}, result.message
    summary = result.findings[0].message
    assert summary.startswith(
        f"mistral-common mistral-v3 via {MISTRAL_V03 / 'tokenizer.model'}: token ids equal on "
    )
    escaped = next(f for f in result.findings if f.cause == "tools.html_escaped")
    assert escaped.outcome is Outcome.PASSED
    assert escaped.message.startswith(
        "also observed tools.html_escaped (reported by `tools`): the template HTML-escapes tool JSON (&#34; for a "
        "quote), which the reference writes as it is, in "
    )
    assert "tools.result_reencoded" in [f.cause for f in result.findings]
    empty = next(f for f in result.findings if f.cause == "reference.empty_message")  # the reference's
    assert empty.outcome is Outcome.PASSED
    assert empty.message.startswith(
        "also observed reference.empty_message (reported by `reference`): the rendering of an empty message "
        "differs from mistral-common's encoding, in "
    )
    assert "    mistral-common: [4 '[/INST]']\n    template: [29473 '▁'] [4 '[/INST]']" in empty.message


#: The families fixture's correct v3 template, rendered with the real v0.3 tokenizer, and a change of it per
#: cause of the mistral_common check.
FIXTURE_V3 = ROOT / "fixtures" / "families" / "mistral-v3" / "chat_template.jinja"
INST = "{{- '[INST]' + (' ' + content if content else '') + '[/INST]' }}"
USER_TEXT = "{%- set content = message.content %}\n{%- if ns.system"
MUTATIONS = {
    "mistral_common.header": (INST, "{{- '[INST][INST]' + (' ' + content if content else '') + '[/INST]' }}"),
    "mistral_common.separator": (INST, "{{- '[INST]' + ('  ' + content if content else '') + '[/INST]' }}"),
    "mistral_common.end_of_turn": (
        "{{- (' ' + content if content else '') + eos_token }}",
        "{{- (' ' + content if content else '') }}",
    ),
    "mistral_common.bos_eos": (
        "{{- (' ' + content if content else '') + eos_token }}",
        "{{- (' ' + content if content else '') + eos_token + bos_token }}",
    ),
    "mistral_common.system_placement": (
        "loop.index0 == ns.users[-1] %}{% set content = ns.system",
        "loop.index0 == ns.users[0] %}{% set content = ns.system",
    ),
    "mistral_common.tool_definitions": (
        "tools | tojson + '[/AVAILABLE_TOOLS]'",
        "tools | tojson(indent=1) + '[/AVAILABLE_TOOLS]'",
    ),
    "mistral_common.tool_call_encoding": ("{{- ', \"id\": ' + call.id | tojson + '}' }}", "{{- '}' }}"),
    "mistral_common.tool_result_encoding": (
        "'[TOOL_RESULTS] {\"content\": '",
        "'[TOOL_RESULTS] {\"result\": '",
    ),
    "mistral_common.escaping": (USER_TEXT, "{%- set content = message.content | e %}\n{%- if ns.system"),
    "mistral_common.whitespace": (USER_TEXT, "{%- set content = message.content | trim %}\n{%- if ns.system"),
    "mistral_common.empty_message": (INST, "{{- '[INST] ' + content + '[/INST]' }}"),
    "mistral_common.content": (
        "{%- set content = message.content.rstrip(' ') %}",
        "{%- set content = 'Answer: ' + message.content.rstrip(' ') %}",
    ),
}


@pytest.fixture(scope="module")
def v03() -> Any:
    return load_model(str(MISTRAL_V03))


def with_template(model: Any, old: str, new: str) -> Subject:
    source = FIXTURE_V3.read_text()
    assert source.count(old) == 1, old
    return Subject(model, Template("changed", source.replace(old, new), "<test>"), Options(examples=20))


@needs_shared
def test_a_correct_v3_template_gives_mistral_commons_ids(v03: Any) -> None:
    result = mistral_common(with_template(v03, INST, INST))
    assert result.outcome is Outcome.PASSED, result.message
    assert [f.cause for f in result.findings if f.cause] == []


@needs_shared
@pytest.mark.parametrize("cause", sorted(MUTATIONS))
def test_each_kind_of_token_difference_is_its_own_cause(
    v03: Any, cause: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oracle's own classification (where the reference check reports none of it: see the next test)."""
    monkeypatch.setattr(reference_checks, "owner_reports", lambda subject, cause: False)
    old, new = MUTATIONS[cause]
    result = mistral_common(with_template(v03, old, new))
    assert [f.cause for f in result.findings if f.cause] == [cause], result.message
    assert result.outcome is CAUSES[cause].severity
    message = next(f.message for f in result.findings if f.cause == cause)
    group = cause.split(".", 1)[1]
    assert message.startswith(f"{BY_NAME[group].what} differs from mistral-common's encoding, in "), message
    assert f"conversations (mistral-common mistral-v3 via {MISTRAL_V03 / 'tokenizer.model'})\n" in message
    assert "\n  first differing token: #" in message and "\n    mistral-common: [" in message


@needs_shared
def test_a_difference_the_reference_reports_too_is_noted_as_its_cause(v03: Any) -> None:
    """One root cause once: with the reference check on, the empty message it reports as well is its finding,
    and the oracle notes it; a token difference of the same text stays the oracle's own."""
    old, new = MUTATIONS["mistral_common.empty_message"]
    result = mistral_common(with_template(v03, old, new))
    assert result.outcome is Outcome.PASSED, result.message
    noted = next(f for f in result.findings if f.cause == "reference.empty_message")
    assert noted.outcome is Outcome.PASSED
    assert noted.message.startswith(
        "also observed reference.empty_message (reported by `reference`): the rendering of an empty message "
        "differs from mistral-common's encoding, in "
    ), noted.message


@needs_shared
def test_the_same_text_with_other_ids_is_a_tokenization_difference(v03: Any) -> None:
    """Two spaces as one token or as two decode alike: the ids differ where the text does not (a tokenizer
    whose pieces are not mistral-common's, or text split where mistral-common does not split it)."""
    from templatecheck.checks.reference import _mistral_groups, _Tally
    from templatecheck.formats.oracle import load_oracle

    tokenizer = v03.tokenizer
    subject = Subject(v03, v03.templates["default"])
    oracle = load_oracle(MISTRAL_V03, "v3", False, tokenizer)
    case = next(c for c in cases(0, tool_calls=False) if c.name == "user only" and c.add_generation_prompt)
    theirs = list(tokenizer("[INST]  What[/INST]", add_special_tokens=False)["input_ids"])
    space = tokenizer.convert_tokens_to_ids("▁")
    double = tokenizer.convert_tokens_to_ids("▁▁")
    assert double in theirs
    ours = [i for t in theirs for i in ([space, space] if t == double else [t])]
    findings = _mistral_groups(subject, get("mistral-v3"), oracle, _Tally(1, 0, 0, [(case, theirs, ours)]))
    assert [f.cause for f in findings] == ["mistral_common.tokenization"]
    assert findings[0].message.startswith(
        "the same text as mistral-common's encoding, but the tokenizer gives other token ids, in 1 of 1 conversations"
    )
    assert f"    mistral-common: [{double} '▁▁']" in findings[0].message


def test_every_mistral_common_cause_is_triggered_by_a_test() -> None:
    ours = {key for key in CAUSES if key.startswith("mistral_common.")}
    assert ours == {*MUTATIONS, "mistral_common.tokenization"}


def _never_loaded(*args: Any) -> Any:
    raise AssertionError("the oracle was loaded")


def test_a_tokenizer_of_another_size_than_the_bundled_tekken_loads_no_oracle(monkeypatch: Any) -> None:
    """The bundled Tekken tokenizer takes seconds to load; a tokenizer of another size cannot match it, which
    its file's config says without loading it."""
    from transformers import AutoTokenizer

    from templatecheck.formats import oracle

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "fixtures" / "hermes-3-tiny")
    monkeypatch.setattr(oracle, "_load", _never_loaded)
    with pytest.raises(oracle.OracleUnavailable) as raised:
        oracle.load_oracle(ROOT / "fixtures" / "hermes-3-tiny", "v3", True, tokenizer)
    assert str(raised.value) == (
        "the model's tokenizer is not mistral-common's (mistral-common's bundled v3 Tekken tokenizer): "
        f"different vocabulary ({len(tokenizer)} vs 131072 tokens), so token ids cannot be compared"
    )


def test_a_model_tekken_file_of_another_size_loads_no_oracle_and_an_unreadable_one_is_loaded(
    tmp_path: Any, monkeypatch: Any
) -> None:
    from transformers import AutoTokenizer

    from templatecheck.formats import oracle

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "fixtures" / "hermes-3-tiny")
    tekken = tmp_path / "tekken.json"
    tekken.write_text(json.dumps({"config": {"default_vocab_size": 2048, "version": "v7"}, "vocab": []}))
    monkeypatch.setattr(oracle, "_load", _never_loaded)
    with pytest.raises(
        oracle.OracleUnavailable, match=rf"\({re.escape(str(tekken))}\): different vocabulary "
    ):
        oracle.load_oracle(tmp_path, "v7", True, tokenizer)
    tekken.write_text('{"vocab": [], "config": "not an object"}')
    with pytest.raises(AssertionError, match="the oracle was loaded"):  # size unknown: loaded and compared
        oracle.load_oracle(tmp_path, "v7", True, tokenizer)
