"""Our renderer equals ``tokenizer.apply_chat_template(..., tokenize=False)`` of the installed transformers.

A hypothesis property over generated conversations on the bundled templates and the real tokenizers, and a
sweep over every template of the shared corpus with the plain conversations. Both sides render with the same
pinned clock; a template that raises must raise on both sides.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from templatecheck import conversation as conv
from templatecheck.conversation import tools_for
from templatecheck.model import load_tokenizer
from templatecheck.render import PINNED_CLOCK, Renderer, RenderError
from templatecheck.strategies import Support, conversations
from tests.conftest import FIXTURES, SHARED, fixture_model, needs_shared

pytest.importorskip("transformers")


class _PinnedDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _PinnedDatetime:  # type: ignore[override]
        return cls.fromtimestamp(PINNED_CLOCK.timestamp(), tz)


@contextmanager
def pinned_transformers_clock() -> Iterator[None]:
    import transformers.utils.chat_template_utils as ctu

    saved = ctu.datetime
    ctu.datetime = _PinnedDatetime  # type: ignore[misc]
    try:
        yield
    finally:
        ctu.datetime = saved  # type: ignore[misc]


def both(tokenizer: Any, source: str, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[str, str]:
    """(ours, transformers') renderings, or ('<error>', '<error>') when both raise."""
    special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    try:
        ours = Renderer(special_tokens=special).render(source, messages, **kwargs).text
    except RenderError:
        ours = "<error>"
    with pinned_transformers_clock():
        try:
            theirs = tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False, **kwargs)
        except Exception:
            theirs = "<error>"
    return ours, theirs


def _fixture_templates() -> Iterator[Any]:
    for name in ("hermes-3-tiny", "llama-3-tiny"):
        model = fixture_model(name)
        for template in model.templates.values():
            yield pytest.param(FIXTURES / name, template.source, id=f"{name}:{template.name}")


def _shared_templates() -> Iterator[Any]:
    models = SHARED / "models"
    for name in ("hermes-3-llama-3.1-8b", "llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3"):
        config = models / name / "tokenizer_config.json"
        if not config.is_file():
            continue
        entry = json.loads(config.read_text())["chat_template"]
        named = {"default": entry} if isinstance(entry, str) else {e["name"]: e["template"] for e in entry}
        for tname, source in named.items():
            yield pytest.param(models / name, source, id=f"{name}:{tname}")


_TOKENIZERS: dict[Path, Any] = {}


def tokenizer_at(path: Path) -> Any:
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = load_tokenizer(path, str(path))
    return _TOKENIZERS[path]


@pytest.mark.parametrize(("directory", "source"), [*_fixture_templates(), *_shared_templates()])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(), add_generation_prompt=st.booleans(), with_tools=st.booleans())
def test_rendering_equals_transformers(
    directory: Path,
    source: str,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
    with_tools: bool,
) -> None:
    if not directory.is_dir():
        pytest.skip(f"{directory} is absent")
    tools = [conv.WEATHER_TOOL] if with_tools else None
    ours, theirs = both(
        tokenizer_at(directory), source, messages, add_generation_prompt=add_generation_prompt, tools=tools
    )
    assert ours == theirs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(support=Support(), end_with_user=False), add_generation_prompt=st.booleans())
def test_tool_conversations_equal_transformers(
    messages: list[dict[str, Any]], add_generation_prompt: bool
) -> None:
    """Tool calls (dict and string arguments), tool results and list content, on the Hermes tool template."""
    source = fixture_model("hermes-3-tiny").templates["tool_use"].source
    tools = tools_for(messages) or [conv.WEATHER_TOOL]
    ours, theirs = both(
        tokenizer_at(FIXTURES / "hermes-3-tiny"),
        source,
        messages,
        add_generation_prompt=add_generation_prompt,
        tools=tools,
    )
    assert ours == theirs


@settings(max_examples=40, deadline=None)
@given(messages=conversations(end_with_user=False))
def test_continue_final_message_equals_transformers(messages: list[dict[str, Any]]) -> None:
    source = fixture_model("hermes-3-tiny").templates["default"].source
    ours, theirs = both(
        tokenizer_at(FIXTURES / "hermes-3-tiny"), source, messages, continue_final_message=True
    )
    assert ours == theirs


def _corpus_sources() -> Iterator[Any]:
    folder = SHARED / "corpus" / "templates"
    if not folder.is_dir():
        return
    for file in sorted(folder.glob("*.json")):
        entry = json.loads(file.read_text())["chat_template"]
        named = {"default": entry} if isinstance(entry, str) else entry
        for name, source in named.items():
            yield f"{file.stem}#{name}", source


@needs_shared
def test_every_corpus_template_renders_as_transformers_does() -> None:
    tokenizer = tokenizer_at(FIXTURES / "hermes-3-tiny")
    cases = [
        (conv.USER_ONLY, {"add_generation_prompt": True}),
        (conv.SYSTEM_USER_ASSISTANT, {}),
        (conv.SYSTEM_USER, {"add_generation_prompt": True, "tools": [conv.WEATHER_TOOL]}),
    ]
    mismatches, compared = [], 0
    for label, source in _corpus_sources():
        for messages, kwargs in cases:
            ours, theirs = both(tokenizer, source, messages, **kwargs)
            compared += 1
            if ours != theirs:
                mismatches.append(f"{label} {kwargs}: ours {ours[:80]!r} vs transformers {theirs[:80]!r}")
    assert compared > 900
    assert not mismatches, "\n".join(mismatches)


@needs_shared
def test_the_names_noted_while_compiling_are_jinjas_on_every_corpus_template() -> None:
    """The names a template reads without defining them, noted as the render worker compiles it, equal
    ``jinja2.meta.find_undeclared_variables`` on a fresh parse, for every distinct template of the corpus."""
    import jinja2.meta

    from templatecheck import render as module

    sources = list(dict.fromkeys(source for _, source in _corpus_sources()))
    assert len(sources) > 250
    differing = []
    for source in sources:
        try:
            fresh = jinja2.meta.find_undeclared_variables(module._ENV.parse(source))
        except jinja2.TemplateSyntaxError:
            continue
        noted = module.undeclared_variables(source)
        if noted != fresh:
            differing.append(f"{source[:60]!r}: {sorted(noted ^ fresh)}")
    assert not differing, "\n".join(differing)
