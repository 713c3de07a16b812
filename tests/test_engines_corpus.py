"""Our @huggingface/jinja adapter reproduces the corpus' goldens of @huggingface/jinja itself (``expected_kind``
``@huggingface/jinja output``: huggingface.js' own e2e expectations), with exactly the variables each golden
defines and its fixed clock."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from templatecheck.engines import HFJS, node
from templatecheck.render import Limits
from tests.conftest import SHARED, needs_shared

GOLDENS = SHARED / "corpus" / "goldens"
KIND = "@huggingface/jinja output"


def _goldens() -> list[Path]:
    if not GOLDENS.is_dir():
        return []
    return [
        p for p in sorted(GOLDENS.rglob("*.json")) if json.loads(p.read_text()).get("expected_kind") == KIND
    ]


def _template(ref: str) -> str:
    name, _, variant = ref.partition("#")
    stored = json.loads((SHARED / "corpus" / "templates" / f"{name}.json").read_text())["chat_template"]
    return str(stored[variant or "default"] if isinstance(stored, dict) else stored)


def _context(golden: dict[str, Any]) -> dict[str, Any]:
    """The golden's variables: only those it defines (a null token or flag was not passed)."""
    context: dict[str, Any] = {"messages": golden["messages"]}
    for key in ("add_generation_prompt", "bos_token", "eos_token", "tools"):
        if golden.get(key) is not None:
            context[key] = golden[key]
    context.update(golden.get("extra_context") or {})
    return context


@needs_shared
@pytest.mark.skipif(HFJS.missing() is not None, reason=f"@huggingface/jinja: {HFJS.missing()}")
def test_the_corpus_has_hfjs_goldens() -> None:
    assert len(_goldens()) >= 50


@needs_shared
@pytest.mark.skipif(HFJS.missing() is not None, reason=f"@huggingface/jinja: {HFJS.missing()}")
@pytest.mark.parametrize("path", _goldens(), ids=lambda p: p.stem)
def test_hfjs_adapter_reproduces_the_golden(path: Path) -> None:
    golden = json.loads(path.read_text())
    clock = datetime.fromisoformat(golden["strftime_now_date"].removesuffix("Z"))
    answer = node().run(_template(golden["template_ref"]), [_context(golden)], Limits(), clock)[0]
    if "expected_error" in golden:
        assert "error" in answer, answer
    else:
        assert answer == {"ok": golden["expected"]}
