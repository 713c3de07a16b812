"""Pins: a template's exact renderings and token ids of a fixed probe set, kept as golden files.

The publisher's regression gate. ``--tc-pin-dir DIR --tc-update-pins`` writes, per model and template,
``DIR/<model>/<template>/<probe>.txt`` (the rendering, exact bytes) and ``<probe>.ids.json`` (its token ids);
later runs compare. The semantics follow syrupy: a missing or different pin fails with a diff (whitespace
visible) and the exact command that updates the pins; updating writes atomically only what changed, removes
the pins of probes that no longer apply, and passes. Only behaviour is pinned, so an edit of the template's
source that renders the same (comments, whitespace control, renamed variables) passes.

This module never imports pytest: the plugin's ``test_pins`` and other tools share it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from templatecheck import conversation as conv
from templatecheck.causes import defect
from templatecheck.model import Subject
from templatecheck.render import RenderError
from templatecheck.report import write_atomically
from templatecheck.result import Finding
from templatecheck.text import diff
from templatecheck.tokens import encode

TEXT, IDS = ".txt", ".ids.json"

_GATE = (
    "a pin is the publisher's own record of behaviour: any difference is a change they did not approve yet"
)
MISSING = defect("pins.missing", _GATE)
RENDERING_CHANGED = defect("pins.rendering_changed", _GATE)
TOKENS_CHANGED = defect("pins.tokens_changed", _GATE)
STALE = defect("pins.stale", _GATE)


@dataclass(frozen=True)
class Probe:
    """One pinned rendering: a conversation and how it is rendered."""

    name: str
    messages: conv.Conversation
    add_generation_prompt: bool
    tools: list[dict[str, Any]] | None = field(default=None)


def _tool_call(arguments: Any) -> conv.Message:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def probes(subject: Subject) -> list[Probe]:
    """The plain conversations, and a tool call and its result when the template renders tool calls."""
    from templatecheck.capabilities import probe

    found = [
        Probe("user", conv.USER_ONLY, True),
        Probe("system-user", conv.SYSTEM_USER, True),
        Probe("system-user-assistant", conv.SYSTEM_USER_ASSISTANT, False),
    ]
    caps = probe(subject)
    if caps.tools:
        found.append(Probe("tools-user", conv.USER_ONLY, True, [conv.WEATHER_TOOL]))
    if caps.tool_calls:
        call = _tool_call({"city": "Paris"} if caps.object_arguments else '{"city": "Paris"}')
        asked = [conv.user("What is the weather in Paris?"), call]
        found.append(Probe("tool-call", asked, False, [conv.WEATHER_TOOL]))
        if caps.tool_role:
            result = {
                "role": "tool",
                "tool_call_id": "call_1",
                "name": "get_weather",
                "content": "22 C, sunny",
            }
            found.append(Probe("tool-result", [*asked, result], True, [conv.WEATHER_TOOL]))
    return found


@dataclass(frozen=True)
class Pin:
    """What a probe gives: the rendering (or the render error's text) and its token ids."""

    text: str
    ids: tuple[int, ...]


def take(subject: Subject, probe: Probe) -> Pin:
    """Render and tokenize ``probe`` now; a template that refuses pins its error (a behaviour too)."""
    kwargs: dict[str, Any] = {"add_generation_prompt": probe.add_generation_prompt}
    if probe.tools is not None:
        kwargs["tools"] = probe.tools
    try:
        text = subject.render(probe.messages, **kwargs)
    except RenderError as error:
        return Pin(f"<render error ({error.kind}): {error}>\n", ())
    ids = encode(subject.model.tokenizer, text)
    return Pin(text, tuple(int(i) for i in ids))


_SAFE = re.compile(r"[A-Za-z0-9_.@+-]")
_MAX_NAME = 80


def folder_name(name: str) -> str:
    """``name`` as one folder name: letters, digits and ``_.@+-`` kept, every other character percent-encoded
    (so distinct names never collide), never ``.``, ``..`` or empty, and at most :data:`_MAX_NAME` characters
    (a longer one ends with a hash of the whole name)."""
    encoded = "".join(c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in name)
    if not encoded.strip("."):
        encoded = encoded.replace(".", "%2E") or "%00"
    if len(encoded) > _MAX_NAME:
        import hashlib

        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        encoded = f"{encoded[: _MAX_NAME - 17]}~{digest}"
    return encoded


def model_key(subject: Subject) -> str:
    """The model's full identity for pins: the Hub id (``org/name``), else the directory's (or GGUF file's) own
    name."""
    ref = subject.model.ref
    if ref.repo_id is not None:
        return ref.repo_id
    if subject.model.gguf is not None:
        return subject.model.gguf.path.name
    return subject.model.directory.resolve().name or subject.model.name


def directory(root: Path, subject: Subject) -> Path:
    """``root/<model>/<template>``, each name one safe folder name (see :func:`folder_name`)."""
    return root / folder_name(model_key(subject)) / folder_name(subject.template.name)


def _read(path: Path) -> str | None:
    return path.read_bytes().decode("utf-8") if path.is_file() else None


def _ids_text(ids: tuple[int, ...]) -> str:
    return json.dumps(list(ids)) + "\n"


def _pinned(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name.removesuffix(TEXT) for p in folder.iterdir() if p.name.endswith(TEXT)}


def compare(subject: Subject, root: Path, command: str) -> list[Finding]:
    """A failure per probe whose pin is missing or differs, and per pin no probe gives any more."""
    folder = directory(root, subject)
    update = f"if the change is intended, update the pins: {command}"
    findings = []
    missing = []
    current = probes(subject)
    for probe in current:
        now = take(subject, probe)
        path = folder / (probe.name + TEXT)
        text, ids = _read(path), _read(folder / (probe.name + IDS))
        if text is None or ids is None:
            missing.append(probe.name)
        elif text != now.text:
            shown = diff(text, now.text, labels=(f"pinned {path}", "rendered now"))
            findings.append(
                RENDERING_CHANGED(f"probe {probe.name!r} renders differently from its pin\n{shown}\n{update}")
            )
        elif tuple(json.loads(ids)) != now.ids:
            pinned = tuple(json.loads(ids))
            at = next((i for i, (a, b) in enumerate(zip(pinned, now.ids, strict=False)) if a != b), None)
            at = min(len(pinned), len(now.ids)) if at is None else at
            findings.append(
                TOKENS_CHANGED(
                    f"probe {probe.name!r} renders as pinned but tokenizes differently (the tokenizer changed): "
                    f"first difference at token {at}: pinned {list(pinned[at : at + 6])}, now "
                    f"{list(now.ids[at : at + 6])}\n{update}"
                )
            )
    if missing:
        names = ", ".join(missing)
        findings.insert(0, MISSING(f"no pins for {len(missing)} probes in {folder} ({names}); {update}"))
    for stale in sorted(_pinned(folder) - {p.name for p in current}):
        findings.append(
            STALE(
                f"pin {folder / (stale + TEXT)} has no probe any more (the template no longer renders what it "
                f"probes, e.g. tool calls); {update}"
            )
        )
    return findings


def update(subject: Subject, root: Path) -> list[Path]:
    """Write the pins that are missing or differ (atomically) and remove stale ones; the paths touched."""
    folder = directory(root, subject)
    touched = []
    current = probes(subject)
    for probe in current:
        now = take(subject, probe)
        for path, text in (
            (folder / (probe.name + TEXT), now.text),
            (folder / (probe.name + IDS), _ids_text(now.ids)),
        ):
            if _read(path) != text:
                write_atomically(path, text)
                touched.append(path)
    for stale in sorted(_pinned(folder) - {p.name for p in current}):
        for suffix in (TEXT, IDS):
            path = folder / (stale + suffix)
            if path.exists():
                path.unlink()
                touched.append(path)
    return touched


__all__ = ["IDS", "TEXT", "Pin", "Probe", "compare", "directory", "probes", "take", "update"]
