"""The built-in probe set, answer matching, and the user's probe file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from templatecheck.errors import TemplatecheckError
from templatecheck.probeset import BUILTIN, BUILTIN_TOOLS, TOOL_BUDGET, Call, normalize, read_probe_file


def test_builtin_set_covers_the_task_families() -> None:
    assert len(BUILTIN) == 24
    names = [p.name for p in BUILTIN + BUILTIN_TOOLS]
    assert len(set(names)) == len(names)
    families = {n.split("-")[0] for n in names}
    assert families == {"word", "add", "repeat", "capital", "system", "recall", "second", "tool"}
    assert all(p.answer and p.call is None for p in BUILTIN)
    assert sum(len([m for m in p.messages if m["role"] == "user"]) > 1 for p in BUILTIN) == 3  # multi-turn
    assert sum(p.messages[0]["role"] == "system" for p in BUILTIN) == 3
    for probe in BUILTIN_TOOLS:
        assert probe.tools and probe.call is not None and probe.max_new_tokens == TOOL_BUDGET


def test_every_builtin_answer_is_stated_or_computable_from_its_prompt() -> None:
    for probe in BUILTIN:
        text = " ".join(str(m["content"]) for m in probe.messages)
        if probe.name.startswith("add"):
            a, b = (int(x) for x in text.split("What is ")[1].split("?")[0].split(" + "))
            assert probe.answer == str(a + b)
        elif not probe.name.startswith("capital"):
            assert probe.answer in text, probe.name


@pytest.mark.parametrize(
    ("reply", "right"),
    [
        ("apple", True),
        ("Apple.", True),
        ("  **apple** ", True),
        ('"apple"', True),
        ("apple!", True),
        ("apple pie", False),
        ("The word is apple.", False),
        ("apple\nuser\nReply with", False),
        ("", False),
    ],
)
def test_a_reply_must_be_the_answer_itself(reply: str, right: bool) -> None:
    probe = next(p for p in BUILTIN if p.name == "word-apple")
    assert probe.is_correct(reply) is right


def test_accepted_alternatives_and_normalization() -> None:
    assert normalize("  Red   Blue\tGreen. ") == "red blue green"
    probe = next(p for p in BUILTIN if p.name == "capital-japan")
    assert probe.is_correct("tokyo") and not probe.is_correct("Kyoto")


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "probes.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_probe_file_items_with_answers_and_tool_calls(tmp_path: Path) -> None:
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    path = write(
        tmp_path,
        "# my probes",
        json.dumps(
            {
                "name": "peru",
                "messages": [{"role": "user", "content": "Capital of Peru?"}],
                "answer": "Lima",
                "accept": ["Lima, Peru"],
            }
        ),
        "",
        json.dumps(
            {
                "messages": [{"role": "user", "content": "Time in Oslo?"}],
                "tools": [tool],
                "call": {"name": "get_time", "arguments": {"city": "Oslo"}},
                "max_new_tokens": 40,
            }
        ),
    )
    peru, oslo = read_probe_file(path)
    assert peru.name == "peru" and peru.answer == "Lima" and peru.is_correct("lima, peru")
    assert peru.max_new_tokens is None and peru.call is None
    assert oslo.name == "probes-4"  # the file stem and the line number
    assert oslo.call == Call("get_time", {"city": "Oslo"}) and oslo.tools == (tool,)
    assert oslo.max_new_tokens == 40


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"probes.jsonl:1: not a JSON object \(.*\); write one object a line"),
        ("[1, 2]", r"probes.jsonl:1: expected a JSON object, got \[1, 2\]"),
        ('{"messages": [], "answer": "x"}', r'"messages" must be a non-empty list'),
        ('{"messages": [{"content": "hi"}], "answer": "x"}', r'"messages" must be a non-empty list'),
        (
            '{"messages": [{"role": "user", "content": "hi"}]}',
            r'needs "answer" \(a non-empty string\) or "tools"',
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "answer": "x", "colour": 1}',
            r"unknown field\(s\) colour",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "answer": "x", "accept": "y"}',
            r'"accept" must be a list',
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "answer": "x", "max_new_tokens": 0}',
            "positive integer",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "call": {"name": "f"}}',
            r'a "call" item needs "tools"',
        ),
        ('{"messages": [{"role": "user", "content": "hi"}], "tools": [{}], "call": "f"}', r'"call" must be'),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "tools": [{}], "call": {"name": "f", "arguments": 1}}',
            r'"call.arguments" must be an object',
        ),
    ],
)
def test_probe_file_errors_name_the_line_and_the_field(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(TemplatecheckError, match=message):
        read_probe_file(write(tmp_path, line))


def test_missing_or_empty_probe_file(tmp_path: Path) -> None:
    with pytest.raises(TemplatecheckError, match=r"--tc-probe-file '.*nope\.jsonl': no such file"):
        read_probe_file(tmp_path / "nope.jsonl")
    with pytest.raises(TemplatecheckError, match="holds no probes; see the format in the README"):
        read_probe_file(write(tmp_path, "# nothing yet"))


# ------------------------------------------------------------------------------------------------- properties

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

words = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
answers = st.lists(words, min_size=1, max_size=4).map(" ".join)


@given(st.text(max_size=30))
def test_normalize_is_idempotent(text: str) -> None:
    assert normalize(normalize(text)) == normalize(text)


@given(answers, st.sampled_from(["{}", "{}.", '"{}"', "**{}**", "  {}!  ", "`{}`", "{}\n"]), st.booleans())
def test_decoration_and_case_do_not_change_the_verdict(answer: str, decoration: str, upper: bool) -> None:
    probe = BUILTIN[0].__class__("p", BUILTIN[0].messages, answer)
    assert probe.is_correct(decoration.format(answer.upper() if upper else answer))


@given(answers, words)
def test_extra_words_make_a_reply_wrong(answer: str, extra: str) -> None:
    probe = BUILTIN[0].__class__("p", BUILTIN[0].messages, answer)
    assert not probe.is_correct(f"{answer} {extra}")
