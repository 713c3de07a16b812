"""Deterministic samples of hypothesis conversations, and shrinking of a failing one.

A check evaluates its property over a sample drawn once per process (hypothesis' generation phase with a
derandomized seed, no example database: the same run gives the same verdict, which a CI gate needs), then
projected onto what each template supports (:class:`~templatecheck.strategies.Support`), so the cost of
drawing is paid once for every check and template. The draw is the same in every process, so it is kept in
the user's cache directory (:func:`draw_cache`) and read back by later runs and by the other processes of a
``pytest -n`` run, keyed by what decides it: hypothesis' and Python's versions and the code of the
strategies. When a conversation fails, :func:`minimize` shrinks it to a short readable one
that fails the same way.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from templatecheck import cache
from templatecheck.conversation import Conversation, describe, well_formed
from templatecheck.result import Finding
from templatecheck.strategies import Support, conversations, nine_character_id

#: Conversations drawn per process: enough for hypothesis' default budget; larger budgets draw more.
BASE_COUNT = 100


@contextmanager
def _no_local_constants() -> Iterator[None]:
    """Hypothesis without the constants it collects from loaded modules, for the time of one draw.

    Hypothesis mixes string and number literals of every "local" module in ``sys.modules`` into what it
    generates, so the same derandomized draw differs between processes that imported different modules (a
    pytest run, an xdist worker, the CLI) and so would the verdicts. The draw uses hypothesis' global
    constants only; the module's cache of permitted constants is swapped for an empty one meanwhile (its
    entries hold local constants) and both are restored afterwards. Reached through ``importlib``: these are
    hypothesis internals without a public way to switch them off.
    """
    providers: Any = importlib.import_module("hypothesis.internal.conjecture.providers")
    constants: Any = importlib.import_module("hypothesis.internal.constants_ast")
    cache: Any = importlib.import_module("hypothesis.internal.cache")
    saved_get, saved_cache = providers._get_local_constants, providers.CONSTANTS_CACHE
    providers._get_local_constants = lambda: constants.Constants()  # nothing counts as local
    providers.CONSTANTS_CACHE = cache.LRUCache(1024)
    try:
        yield
    finally:
        providers._get_local_constants, providers.CONSTANTS_CACHE = saved_get, saved_cache


@lru_cache(maxsize=8)
def _draw(count: int) -> tuple[Conversation, ...]:
    """``count`` conversations with every feature, ending with an assistant reply (one hypothesis run, the
    same in every process: see :func:`_no_local_constants`), read from the draw cache when it holds them."""
    from templatecheck.model import settle

    path = _cached_draw_path(count)
    kept = _read_draw(path, count) if path is not None else None
    if kept is not None:
        return kept
    drawn = _run_draw(count)
    if path is not None:
        _write_draw(path, drawn)
    settle()
    return drawn


def draw_cache() -> Path | None:
    """Where draws are kept: ``$TEMPLATECHECK_CACHE_DIR`` (``off``: nowhere), or ``templatecheck/draws`` under
    the user's cache directory (see :mod:`templatecheck.cache`)."""
    return cache.folder("draws")


#: The modules whose code decides what a draw holds.
_DRAW_CODE = ("strategies.py", "conversation.py", "sample.py")


def _cached_draw_path(count: int) -> Path | None:
    folder = draw_cache()
    if folder is None:
        return None
    import hypothesis

    version = f"{hypothesis.__version__}\0{sys.version_info[:2]}\0{count}"
    digest = hashlib.sha256(version.encode())
    here = Path(__file__).parent
    for name in _DRAW_CODE:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            return None
    return folder / f"draw-{count}-{digest.hexdigest()[:32]}.json"


def _read_draw(path: Path, count: int) -> tuple[Conversation, ...] | None:
    """The draw kept at ``path``; ``None`` when there is none or it is not ``count`` well-formed conversations
    (a damaged file is drawn again, and replaced)."""
    try:
        if not path.is_file():
            return None
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, list) or len(found) != count:
        return None
    if not all(isinstance(c, list) and c and all(isinstance(m, dict) for m in c) for c in found):
        return None
    if not all(well_formed(c) for c in found):
        return None
    return tuple(found)


def _write_draw(path: Path, drawn: tuple[Conversation, ...]) -> None:
    """Keep ``drawn`` at ``path`` when JSON holds it exactly (atomically; a cache that cannot be written is no
    cache)."""
    text = json.dumps(list(drawn), ensure_ascii=True)
    if _same_values(json.loads(text), list(drawn)):
        cache.write(path, text.encode("ascii"))


def _same_values(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (JSON would turn a tuple into a list, say)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_values(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_values(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _run_draw(count: int) -> tuple[Conversation, ...]:
    """The hypothesis run of :func:`_draw`."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    drawn: list[Conversation] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(conversations(support=Support(), end_with_user=False))
    def collect(conversation: Conversation) -> None:
        drawn.append(conversation)

    with _storage_elsewhere(), _no_local_constants():
        collect()
    return tuple(drawn)


@contextmanager
def _storage_elsewhere() -> Iterator[None]:
    """Hypothesis' storage (its ``.hypothesis/`` folder: caches of constants and of the Unicode tables, even
    with no example database) in a temporary folder while we draw, so that a run writes nothing into the
    working directory; the caller's storage folder is restored after."""
    from hypothesis import configuration

    previous = configuration.storage_directory(intent_to_write=False).home_directory
    with tempfile.TemporaryDirectory(prefix="templatecheck-hypothesis-") as home:
        configuration.set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(previous)


def project(conversation: Conversation, support: Support, *, end_with_user: bool) -> Conversation | None:
    """``conversation`` reduced to what ``support`` allows (tool exchanges removed, one call per turn kept,
    parts joined, argument forms converted, wire-format forms the template does not take replaced by the plain ones), cut after its
    last user turn when ``end_with_user``; ``None`` when nothing is left."""
    out: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    names: dict[str, str] = {}
    dropped: set[str] = set()  # the ids of the calls past the first, where a turn takes one call
    for message in conversation:
        role = message.get("role")
        if role == "system" and not support.system:
            continue
        if role == "tool" and not (support.tool_role and support.tool_calls):
            continue
        if message.get("tool_calls"):
            if not support.tool_calls:
                continue
            if not support.parallel_calls:
                dropped.update(c["id"] for c in message["tool_calls"][1:])
                message = {**message, "tool_calls": message["tool_calls"][:1]}
            message = _project_calls(message, support, ids, names)
        elif role == "tool" and message.get("tool_call_id") in dropped:
            continue
        elif role == "tool":
            message = _project_result(message, support, ids, names)
        content = message.get("content")
        if isinstance(content, list) and not support.list_content:
            message = {**message, "content": "".join(p.get("text", "") for p in content)}
        if not support.names and role == "user":
            message = {k: v for k, v in message.items() if k != "name"}
        if not support.reasoning and "reasoning_content" in message:
            message = {k: v for k, v in message.items() if k != "reasoning_content"}
        out.append(message)
    if end_with_user:
        last_user = max((i for i, m in enumerate(out) if m.get("role") == "user"), default=-1)
        out = out[: last_user + 1]
    return out if out and well_formed(out) else None


def _project_calls(
    message: dict[str, Any], support: Support, ids: dict[str, str], names: dict[str, str]
) -> dict[str, Any]:
    """An assistant turn with tool calls, its arguments, ids and ``content: null`` as ``support`` allows;
    ``ids`` and ``names`` learn each call's new id and its tool's name, for its result."""
    calls = []
    for k, call in enumerate(message["tool_calls"]):
        call = _convert_arguments(call, support)
        if not support.any_call_ids:
            new = nine_character_id(len(ids), k)
            ids[call["id"]] = new
            call = {**call, "id": new}
        names[call["id"]] = call["function"]["name"]
        calls.append(call)
    projected = {**message, "tool_calls": calls}
    if projected.get("content") and not support.content_with_calls:
        projected["content"] = None  # as empty as the template takes it (the next rule)
    if projected.get("content") is None and not support.null_content:
        projected["content"] = ""
    return projected


def _project_result(
    message: dict[str, Any], support: Support, ids: dict[str, str], names: dict[str, str]
) -> dict[str, Any]:
    """A tool result with the id of its call, a name where results need one, a dict as its JSON string."""
    projected = {**message, "tool_call_id": ids.get(message["tool_call_id"], message["tool_call_id"])}
    if not support.nameless_results and "name" not in projected:
        projected["name"] = names.get(projected["tool_call_id"], "get_weather")
    if isinstance(projected.get("content"), dict) and not support.dict_results:
        projected["content"] = json.dumps(projected["content"], ensure_ascii=False)
    return projected


def _convert_arguments(call: dict[str, Any], support: Support) -> dict[str, Any]:
    arguments = call["function"]["arguments"]
    if isinstance(arguments, dict) and not support.object_arguments:
        arguments = json.dumps(arguments, ensure_ascii=False)
    elif isinstance(arguments, str) and not support.string_arguments:
        arguments = json.loads(arguments)
    return {**call, "function": {**call["function"], "arguments": arguments}}


def sample(support: Support, *, end_with_user: bool = True, count: int = BASE_COUNT) -> list[Conversation]:
    """Up to ``count`` distinct conversations within ``support``, the same on every call; a fresh copy.

    All samples come from one hypothesis draw per process, projected onto each template's support (once per
    support: several checks ask for the same sample), so a suite over many templates pays for drawing once.
    """
    return [plain_copy(c) for c in _projected(support, end_with_user, count)]


@lru_cache(maxsize=64)
def _projected(support: Support, end_with_user: bool, count: int) -> tuple[Conversation, ...]:
    chosen: dict[str, Conversation] = {}
    for conversation in _draw(max(count, BASE_COUNT)):
        projected = project(conversation, support, end_with_user=end_with_user)
        if projected is not None:
            chosen.setdefault(json.dumps(projected, sort_keys=True), projected)
        if len(chosen) >= count:
            break
    return tuple(chosen.values())


def plain_copy(value: Any) -> Any:
    """A copy of plain data (dicts, lists and tuples of scalars), as :func:`copy.deepcopy` makes it, at a
    fraction of its cost; anything else is shared."""
    kind = type(value)
    if kind is dict:
        return {k: plain_copy(v) for k, v in value.items()}
    if kind is list:
        return [plain_copy(v) for v in value]
    if kind is tuple:
        return tuple(plain_copy(v) for v in value)
    return value


def minimize(
    conversation: Conversation, failure: Callable[[Conversation], Any], budget: int = 300
) -> Conversation:
    """The smallest conversation found that fails with the same key as ``conversation``.

    ``failure(c)`` returns a key for how ``c`` fails (``None`` when it does not); a candidate is kept only when
    it fails with the original key. Tries dropping whole turns and messages (keeping the conversation well
    formed), then shortening each message's text.
    """
    key = failure(conversation)
    best = copy.deepcopy(conversation)
    tries = 0

    def keeps(candidate: Conversation) -> bool:
        nonlocal tries
        tries += 1
        try:
            return bool(failure(candidate) == key)
        except Exception:
            return False

    improved = True
    while improved and tries < budget:
        improved = False
        for size in (4, 3, 2, 1):  # drop whole turns first, then single messages
            for i in range(len(best) - size + 1):
                candidate = best[:i] + best[i + size :]
                if well_formed(candidate) and keeps(candidate):
                    best, improved = candidate, True
                    break
            if improved:
                break
        if improved:
            continue
        for i, message in enumerate(best):
            for shorter in _shorter(message.get("content")):
                candidate = [*best[:i], {**message, "content": shorter}, *best[i + 1 :]]
                if tries < budget and keeps(candidate):
                    best, improved = candidate, True
                    break
            if improved:
                break
    return best


def _shorter(content: Any) -> list[Any]:
    """Simpler versions of a message's content: shorter strings, or the text of a one-part list."""
    if (
        isinstance(content, list)
        and len(content) == 1
        and isinstance(content[0], dict)
        and "text" in content[0]
    ):
        return [content[0]["text"]]
    if not isinstance(content, str) or len(content) <= 1:
        return []
    half = len(content) // 2
    options = ["x", content[:half], content[half:], content[1:], content[:-1]]
    return [o for o in dict.fromkeys(options) if len(o) < len(content)]


@dataclass(frozen=True)
class Problem:
    """How one conversation fails a property: ``key`` names the kind (shrinking keeps it), ``finding`` says it."""

    key: str
    finding: Finding


def counterexamples(
    conversations: list[Conversation], judge: Callable[[Conversation], Problem | None], *, limit: int = 3
) -> list[Finding]:
    """Judge each conversation; for each kind of problem (up to ``limit``), its first case, shrunk, as a finding
    that shows the conversation."""
    findings: list[Finding] = []
    seen: set[str] = set()

    def key_of(conversation: Conversation) -> str | None:
        problem = judge(conversation)
        return problem.key if problem is not None else None

    for conversation in conversations:
        problem = judge(conversation)
        if problem is None or problem.key in seen:
            continue
        seen.add(problem.key)
        small = minimize(conversation, key_of)
        final = judge(small) or problem
        findings.append(
            replace(final.finding, message=f"{final.finding.message}\nconversation:\n{describe(small)}")
        )
        if len(seen) >= limit:
            break
    return findings
