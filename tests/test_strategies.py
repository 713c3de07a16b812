"""Conversation strategies, deterministic samples and shrinking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from templatecheck.conversation import Conversation, tools_for, well_formed
from templatecheck.sample import minimize, sample
from templatecheck.strategies import TRICKY_FRAGMENTS, Support, conversations


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])  # a shared, loaded machine
@given(conversations(support=Support()))
def test_generated_conversations_are_well_formed(conversation: Conversation) -> None:
    assert well_formed(conversation)
    assert conversation[-1]["role"] == "user"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])  # a shared, loaded machine
@given(conversations(support=Support(), end_with_user=False))
def test_tool_calls_are_followed_by_their_results(conversation: Conversation) -> None:
    assert well_formed(conversation)
    for i, message in enumerate(conversation):
        for call in message.get("tool_calls", ()):
            arguments = call["function"]["arguments"]
            assert isinstance(arguments, dict) or isinstance(json.loads(arguments), dict)
            following = conversation[i + 1 : i + 1 + len(message["tool_calls"])]
            assert call["id"] in {m.get("tool_call_id") for m in following}


def test_plain_support_draws_no_tools_and_string_content() -> None:
    for conversation in sample(Support.plain(), count=60):
        assert {m["role"] for m in conversation} <= {"system", "user", "assistant"}
        assert all(isinstance(m["content"], str) for m in conversation)


def test_support_without_system_draws_none() -> None:
    assert all(m["role"] != "system" for c in sample(Support(system=False), count=60) for m in c)


def test_samples_are_deterministic_varied_and_template_breaking() -> None:
    first, again = sample(Support(), count=100), sample(Support(), count=100)
    assert first == again
    assert len(first) == len({json.dumps(c, sort_keys=True) for c in first}) > 60  # distinct
    texts = [m["content"] for c in first for m in c if isinstance(m.get("content"), str)]
    assert any(t != t.strip() for t in texts)  # leading/trailing whitespace
    assert any("{{" in t or "{%" in t for t in texts)  # Jinja syntax
    assert any(any(ord(ch) > 0xFFFF for ch in t) for t in texts)  # outside the BMP
    assert any(m.get("tool_calls") for c in first for m in c)
    assert any(isinstance(m.get("content"), list) for c in first for m in c)
    assert sum(1 for t in texts for f in TRICKY_FRAGMENTS if f.strip() and f in t) > 20


def test_sample_copies_cannot_be_corrupted_by_a_check() -> None:
    first = sample(Support.plain(), count=10)
    first[0][0]["content"] = "changed"
    assert sample(Support.plain(), count=10)[0][0]["content"] != "changed"


def test_well_formed() -> None:
    u, a, s = ({"role": r, "content": "x"} for r in ("user", "assistant", "system"))
    call = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
    tool = {"role": "tool", "content": "r"}
    assert well_formed([s, u, a, u])
    assert well_formed([u, call, tool, a])
    assert not well_formed([a, u])
    assert not well_formed([u, u])
    assert not well_formed([u, tool])
    assert not well_formed([s])
    assert not well_formed([u, a, s, u])


def test_minimize_keeps_the_failure_and_the_form() -> None:
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "what is {{ x }} here"},
    ]

    def failure(c: Conversation) -> str | None:
        return "jinja" if any("{{" in m["content"] for m in c) else None

    small = minimize(conversation, failure)
    assert failure(small) == "jinja"
    assert well_formed(small)
    assert small == [{"role": "user", "content": "{{ x }} here"}] or len(small[0]["content"]) < 20
    assert len(small) == 1


def test_tools_for_defines_the_called_tools() -> None:
    conversation = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "add", "arguments": {}}}]},
    ]
    assert [t["function"]["name"] for t in tools_for(conversation)] == ["add"]
    assert tools_for([{"role": "user", "content": "q"}]) == []


DRAW_SCRIPT = """
import contextlib, hashlib, json, sys
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "constants":
    import many_constants  # a local module whose literals hypothesis would mix into what it draws
from templatecheck import sample
if sys.argv[3] == "unpatched":
    sample._no_local_constants = contextlib.nullcontext
drawn = json.dumps(sample._draw(sample.BASE_COUNT), sort_keys=True)
print(hashlib.sha256(drawn.encode()).hexdigest())
"""


def _draw_digest(folder: Path, first: str, mode: str) -> str:
    """The digest of the suite's draw in a fresh interpreter that imported ``first`` before templatecheck."""
    script = folder / "draw.py"
    script.write_text(DRAW_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(folder), first, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0", "TEMPLATECHECK_CACHE_DIR": "off"},  # draw, not read
    )
    return done.stdout.strip()


def test_the_draw_is_the_same_whatever_a_process_imported_first(tmp_path: Path) -> None:
    # Hypothesis draws literals of loaded local modules: a process that imported this module (a conftest, a
    # plugin, a test module) would otherwise draw another sample, and the suite give another verdict.
    # (short strings and large numbers: hypothesis only uses constants that fit the strategy drawn)
    literals = ", ".join(f"{f'q{i:03d}'!r}, {10**6 + i}" for i in range(400))
    (tmp_path / "many_constants.py").write_text(f"LITERALS = [{literals}]\n")
    plain = _draw_digest(tmp_path, "nothing", "patched")
    assert _draw_digest(tmp_path, "constants", "patched") == plain
    # The control: without the patch the same two processes draw differently, so the test can fail.
    assert _draw_digest(tmp_path, "constants", "unpatched") != _draw_digest(tmp_path, "nothing", "unpatched")


WIRE_LESS = Support(
    null_content=False,
    any_call_ids=False,
    names=False,
    nameless_results=False,
    reasoning=False,
    dict_results=False,
)


def _messages(conversations: list[Conversation]) -> list[dict[str, object]]:
    return [m for c in conversations for m in c]


def test_samples_hold_what_openai_compatible_clients_send() -> None:
    messages = _messages(sample(Support(), end_with_user=False, count=100))
    calls = [m for m in messages if m.get("tool_calls")]
    ids = [str(c["id"]) for m in calls for c in m["tool_calls"]]  # type: ignore[attr-defined]
    results = [m for m in messages if m["role"] == "tool"]
    assert any(m["content"] is None for m in calls)  # content: null next to tool calls
    assert any(i.startswith("call_") and len(i) == 29 for i in ids)  # OpenAI's form
    assert any(i.isdigit() for i in ids)  # integer-looking
    assert any(len(i) == 9 and i.isalnum() for i in ids)  # Mistral's form
    assert any(len(m["tool_calls"]) == 2 for m in calls)  # type: ignore[arg-type]  # parallel
    assert any("name" not in m for m in results) and any("name" in m for m in results)
    assert any(isinstance(m["content"], dict) for m in results)
    assert any(m["role"] == "user" and "name" in m for m in messages)
    assert any(m.get("reasoning_content") and m["content"] for m in messages)
    assert any(m.get("reasoning_content") and m["content"] == "" for m in messages)  # reasoning only
    assert any(m.get("content") == "" for m in messages)


def test_projection_replaces_the_wire_forms_a_template_does_not_take() -> None:
    projected = sample(WIRE_LESS, end_with_user=False, count=100)
    messages = _messages(projected)
    calls = [c for m in messages for c in m.get("tool_calls") or []]  # type: ignore[attr-defined]
    assert calls and all(len(c["id"]) == 9 and c["id"].isalnum() for c in calls)
    assert all(m["content"] == "" or isinstance(m["content"], str) for m in messages if m.get("tool_calls"))
    assert not any(m["role"] == "user" and "name" in m for m in messages)
    assert not any("reasoning_content" in m for m in messages)
    results = [m for m in messages if m["role"] == "tool"]
    assert results and all(isinstance(m["content"], str) and "name" in m for m in results)
    for conversation in projected:  # each result still answers a call of its turn, by its new id
        known = {c["id"] for m in conversation for c in m.get("tool_calls") or []}
        assert all(m["tool_call_id"] in known for m in conversation if m["role"] == "tool")


def test_projection_keeps_one_call_per_turn_where_parallel_calls_are_refused() -> None:
    projected = sample(Support(parallel_calls=False), end_with_user=False, count=100)
    calls = [m for m in _messages(projected) if m.get("tool_calls")]
    assert calls and all(len(m["tool_calls"]) == 1 for m in calls)  # type: ignore[arg-type]
    for conversation in projected:  # each call is answered once, the dropped calls' results go with them
        known = [c["id"] for m in conversation for c in m.get("tool_calls") or []]
        answered = [m["tool_call_id"] for m in conversation if m["role"] == "tool"]
        assert set(answered) <= set(known) and len(answered) == len(set(answered))


def test_plain_support_draws_none_of_the_wire_extras() -> None:
    messages = _messages(sample(Support.plain(), end_with_user=False, count=60))
    assert all(set(m) == {"role", "content"} for m in messages)


# ------------------------------------------------------------------------------------------ the draw cache


def test_a_draw_is_kept_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from templatecheck import sample as sampling

    monkeypatch.setenv("TEMPLATECHECK_CACHE_DIR", str(tmp_path))
    sampling._draw.cache_clear()
    try:
        drawn = sampling._draw(20)
        (kept,) = (tmp_path / "draws").glob("draw-20-*.json")
        sampling._draw.cache_clear()

        def no_hypothesis(count: int) -> Any:
            raise AssertionError("drew again although the draw was kept")

        monkeypatch.setattr(sampling, "_run_draw", no_hypothesis)
        assert sampling._draw(20) == drawn
        sampling._draw.cache_clear()
        kept.write_text('[[{"role": "assistant", "content": "a reply first"}]]')  # damaged: drawn again
        monkeypatch.undo()
        monkeypatch.setenv("TEMPLATECHECK_CACHE_DIR", str(tmp_path))
        assert sampling._draw(20) == drawn
        assert json.loads(kept.read_text()) == [list(c) for c in drawn]
    finally:
        sampling._draw.cache_clear()


def test_the_draw_cache_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from templatecheck import sample as sampling

    monkeypatch.setenv("TEMPLATECHECK_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    sampling._draw.cache_clear()
    try:
        assert sampling.draw_cache() is None
        assert len(sampling._draw(20)) == 20
        assert not any(tmp_path.iterdir())
    finally:
        sampling._draw.cache_clear()


def test_an_unwritable_draw_cache_is_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from templatecheck import sample as sampling

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TEMPLATECHECK_CACHE_DIR", str(blocker))
    sampling._draw.cache_clear()
    try:
        assert len(sampling._draw(20)) == 20
        assert blocker.read_text() == "not a folder"
    finally:
        sampling._draw.cache_clear()
