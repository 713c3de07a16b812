"""Other Jinja engines that render chat templates in production, each behind a small adapter.

- **MiniJinja** (Rust; Text Generation Inference and other Rust servers), through the ``minijinja`` Python
  package, set up as TGI sets it up (``router/src/infer/chat_template.rs``): ``Environment::new()`` defaults
  (no ``trim_blocks``, no ``lstrip_blocks``, lenient undefined values), the Python-compatibility method
  callback (``pycompat``: ``.strip()``, ``.items()``...), ``raise_exception`` and ``strftime_now`` as
  functions, the template rewrites TGI applies before compiling (``[::-1]`` to ``|reverse``, the
  ``{% generation %}`` tags dropped, the Gemma 3 system-content rewrite), and the context as JSON values.
  It renders in the render worker (the ``minijinja`` verb of :mod:`templatecheck.child`), under the same time,
  memory and output bounds as our own renders.
- **@huggingface/jinja** (transformers.js, the Hub's widgets), through Node when ``node`` is on the PATH: one
  long-lived Node process per run (:class:`NodeProcess`, driver ``hfjs_driver.mjs``), started on first use
  with an empty environment and a bounded heap, killed at a render's deadline and started again, its answers
  capped. The package is installed only by ``templatecheck engines install`` (never at test time).

An engine that is not installed answers :meth:`Engine.missing` with the command that installs it. Every failure
of an engine is a :class:`~templatecheck.render.RenderError` value, never an exception of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import jinja2.nodes

from templatecheck.render import Limits, RenderError, nodes_of
from templatecheck.worker import GRACE, Answer, completed, end, exceeded, shared, widen

#: The version of @huggingface/jinja that ``templatecheck engines install`` installs.
HFJS_PACKAGE = "@huggingface/jinja@0.5.11"
MINIJINJA_INSTALL = "pip install 'templatecheck[engines]'"
HFJS_INSTALL = "templatecheck engines install"
#: Instructions a MiniJinja render may run (its own bound, besides the worker's wall time and memory).
MINIJINJA_FUEL = 50_000_000
#: The heap one Node process may use, in MB.
NODE_HEAP_MB = 512
_DRIVER = Path(__file__).with_name("hfjs_driver.mjs")


def node_dir() -> Path:
    """Where ``templatecheck engines install`` puts @huggingface/jinja: ``$TEMPLATECHECK_NODE_DIR``, or
    ``templatecheck/node`` under the user's cache directory."""
    given = os.environ.get("TEMPLATECHECK_NODE_DIR")
    if given:
        return Path(given).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "templatecheck" / "node"


@dataclass(frozen=True)
class Engine:
    """One engine: its name (the check's), what serves with it, and how it is installed."""

    name: str
    title: str
    serves: str
    install: str
    #: Whether the messages reach the template as the client's JSON, ``null`` values kept (transformers.js),
    #: rather than with them dropped, as transformers drops them.
    keeps_none: bool = False

    def missing(self) -> str | None:
        """Why the engine cannot run here, with the command that installs it; ``None`` when it can."""
        if self.name == "minijinja":
            return (
                None if find_spec("minijinja") else f"the minijinja package is not installed: {self.install}"
            )
        if shutil.which("node") is None:
            return "node is not on the PATH: install Node.js, then " + self.install
        manifest = node_dir() / "node_modules" / "@huggingface" / "jinja" / "package.json"
        if not manifest.is_file():
            return f"{HFJS_PACKAGE} is not installed in {node_dir()}: {self.install}"
        try:
            version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
        except (OSError, ValueError, AttributeError):
            version = None
        wanted = HFJS_PACKAGE.rsplit("@", 1)[1]
        if version != wanted:
            return f"{node_dir()} holds @huggingface/jinja {version}, not {wanted}: {self.install}"
        return None

    def render_many(
        self, source: str, contexts: Sequence[dict[str, Any]], limits: Limits, clock: datetime | None
    ) -> list[str | RenderError]:
        """The rendering of ``source`` with each context (as :meth:`Renderer.context` builds it), or its
        error; once a render exceeds a bound, the rest answer with that bound."""
        if self.name == "minijinja":
            jobs = [("minijinja", source, context, clock, limits.max_output_chars) for context in contexts]
            answers = shared().run(jobs, limits.budget())
        else:
            answers = node().run(source, contexts, limits, clock)
        return [
            RenderError(a["error"], str(a.get("message", ""))) if "error" in a else str(a["ok"])
            for a in answers
        ]


class Later:
    """Engine renders sent ahead: made by one background thread, in the order they were sent, while this
    process goes on, and taken when the check that asked for them comes to them. A render made there is the
    render :meth:`Engine.render_many` makes (the same call, under the same bounds: the thread reads each answer
    as it comes, as a caller would); a check that takes none renders as it would have."""

    #: Results kept at most (the oldest untaken is dropped: its check renders for itself).
    KEPT = 8

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], _Pending]] = queue.SimpleQueue()
        self._pending: OrderedDict[Any, _Pending] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def send(self, key: Any, work: Callable[[], Any]) -> None:
        """Run ``work()`` in the background; its result is kept under ``key`` for :meth:`take`."""
        pending = _Pending()
        with self._lock:
            self._pending[key] = pending
            self._pending.move_to_end(key)
            while len(self._pending) > self.KEPT:
                self._pending.popitem(last=False)
            if self._thread is None or not self._thread.is_alive():
                if self._thread is None:
                    import atexit

                    atexit.register(self.close)
                self._thread = threading.Thread(target=self._serve, name="templatecheck-ahead", daemon=True)
                self._thread.start()
        self._queue.put((work, pending))

    def close(self) -> None:
        """Make none of the work still waiting (the run ends: no check will take it)."""
        self._closed = True

    def take(self, key: Any) -> Any:
        """The result of the work sent under ``key``, waited for; ``None`` when none was sent, it was dropped
        (past :attr:`KEPT`), or it raised."""
        with self._lock:
            pending = self._pending.pop(key, None)
        if pending is None:
            return None
        pending.done.wait()
        return pending.result

    def _serve(self) -> None:
        while True:
            work, pending = self._queue.get()
            try:
                pending.result = None if self._closed else work()
            except Exception:  # the check renders for itself
                pending.result = None
            finally:
                pending.done.set()


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None


LATER = Later()


MINIJINJA = Engine(
    "minijinja", "MiniJinja", "Text Generation Inference and other Rust servers", MINIJINJA_INSTALL
)
HFJS = Engine(
    "hfjs", "@huggingface/jinja", "transformers.js and the Hub's chat widgets", HFJS_INSTALL, keeps_none=True
)
ENGINES = (MINIJINJA, HFJS)


# ------------------------------------------------------------------------------------- MiniJinja (the child)


def tgi_source(source: str) -> str:
    """The template as TGI compiles it: the rewrites ``ChatTemplate::new`` applies first."""
    rewritten = source.replace("messages[0]['content'][0]['text']", "messages[0]['content']")
    rewritten = rewritten.replace("[::-1]", "|reverse")
    return rewritten.replace("{% generation %}", "").replace("{% endgeneration %}", "")


class _Refusal(Exception):
    """What ``raise_exception`` raises inside MiniJinja (MiniJinja passes a callback's exception through)."""


def _raise_exception(message: Any) -> None:
    raise _Refusal(str(message))


def render_minijinja_here(
    source: str, context: dict[str, Any], clock: datetime | None, max_chars: int | None
) -> str:
    """Render in this process with MiniJinja as TGI configures it (the render worker's side); raise
    :class:`RenderError` of kind ``syntax``, ``refused``, ``raised``, ``timeout`` or ``output``."""
    import minijinja

    _MINIJINJA_CLOCK[0] = clock
    try:
        env = _minijinja_environment(source)
    except minijinja.TemplateError as error:
        raise RenderError("syntax", f"template does not parse: {_first_line(error)}") from None
    values = json.loads(json.dumps(context))  # TGI's context is serde JSON: tuples are lists, keys strings
    try:
        text = str(env.render_template("<string>", **values))
    except _Refusal as refusal:
        raise RenderError("refused", f"template refused: {refusal}") from None
    except minijinja.TemplateError as error:
        kind = getattr(error, "kind", "")
        if kind == "SyntaxError":
            raise RenderError("syntax", f"template does not parse: {_first_line(error)}") from None
        if kind == "OutOfFuel":
            raise RenderError("timeout", f"render ran out of its {MINIJINJA_FUEL:,} instructions") from None
        raise RenderError("raised", f"template raised {kind or 'an error'}: {_first_line(error)}") from None
    if max_chars is not None and len(text) > max_chars:
        raise RenderError(
            "output", f"output exceeded {max_chars / 1_000_000:g} MB ({len(text):,} characters)"
        )
    return text


#: The clock ``strftime_now`` reads in the render being made (the render worker makes one at a time).
_MINIJINJA_CLOCK: list[datetime | None] = [None]
#: Environments holding one compiled template each, the most recently used last.
_MINIJINJA_ENVIRONMENTS: OrderedDict[str, Any] = OrderedDict()


def _minijinja_environment(source: str) -> Any:
    """A MiniJinja environment as TGI configures it, holding ``source`` compiled under the name ``render_str``
    gives it (so errors read the same), kept for the next renders of the template: compiling costs more than
    rendering, and fuel is counted per render."""
    import minijinja

    env = _MINIJINJA_ENVIRONMENTS.get(source)
    if env is None:
        functions = {
            "raise_exception": _raise_exception,
            "strftime_now": lambda fmt: (_MINIJINJA_CLOCK[0] or datetime.now()).strftime(str(fmt)),
        }
        env = minijinja.Environment(fuel=MINIJINJA_FUEL, pycompat=True, debug=False, globals=functions)
        env.add_template("<string>", tgi_source(source))
        _MINIJINJA_ENVIRONMENTS[source] = env
        while len(_MINIJINJA_ENVIRONMENTS) > 8:
            _MINIJINJA_ENVIRONMENTS.popitem(last=False)
    _MINIJINJA_ENVIRONMENTS.move_to_end(source)
    return env


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# ------------------------------------------------------------------------------------------ @huggingface/jinja


class NodeProcess:
    """One Node process that renders with @huggingface/jinja, JSON lines over its stdin and stdout.

    Started on first use; a render past its deadline kills it (the next render starts a fresh one), and an
    answer longer than the output bound allows is refused unread.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()
        self._home: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()
        #: Node processes started in this process.
        self.starts = 0

    def run(
        self, source: str, contexts: Sequence[dict[str, Any]], limits: Limits, clock: datetime | None
    ) -> list[Answer]:
        """One answer per context, the contexts sent in one request; after a bound exceeded, the rest repeat
        it without rendering. Each answer is waited for within one render's deadline."""
        answers: list[Answer] = []
        if not contexts:
            return answers
        with self._lock:
            answers = self._batch(source, contexts, limits, clock)
        return completed(answers, len(contexts))

    def close(self) -> None:
        """Stop the process; a render in flight (one sent ahead that no check takes, at the run's end) ends
        with it, rather than running to its deadline."""
        process = self._process
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()
        with self._lock:
            self._stop()

    def _batch(
        self, source: str, contexts: Sequence[dict[str, Any]], limits: Limits, clock: datetime | None
    ) -> list[Answer]:
        request = {
            "source": source,
            "contexts": list(contexts),
            "clock": clock.isoformat() if clock is not None else None,
            "max_chars": limits.max_output_chars,
        }
        try:
            process = self._start()
            assert process.stdin is not None
            process.stdin.write(json.dumps(request, ensure_ascii=True).encode() + b"\n")
            process.stdin.flush()
        except OSError:
            self._stop()
            return [{"error": "crash", "message": "the Node process ended unexpectedly"}]
        wait = limits.seconds + GRACE if limits.seconds is not None else None
        cap = 12 * limits.max_output_chars + 4096 if limits.max_output_chars is not None else None
        answers: list[Answer] = []
        while len(answers) < len(contexts) and not (answers and exceeded(answers[-1])):
            line = self._line(wait, cap)
            if isinstance(line, str):
                answers.append(self._died(line, limits))
                break
            answer = json.loads(line)
            answers.append(
                answer
                if isinstance(answer, dict)
                else {"error": "crash", "message": "Node answered a non-answer"}
            )
        return answers

    def _died(self, why: str, limits: Limits) -> Answer:
        process = self._process
        code = process.poll() if process is not None else None
        self._stop()
        if why == "timeout":
            return {
                "error": "timeout",
                "message": f"render exceeded {limits.seconds:g} s (the Node process was stopped)",
            }
        if why == "output":
            return {"error": "output", "message": "the Node process's answer exceeded the output bound"}
        if code in (134, -6):  # V8 aborts when the heap limit is reached
            return {
                "error": "memory",
                "message": f"render exhausted the Node heap limit of {NODE_HEAP_MB} MB",
            }
        return {"error": "crash", "message": f"the Node process ended unexpectedly (exit status {code})"}

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        node = shutil.which("node")
        if node is None:
            raise OSError("node is not on the PATH")
        if self._home is None:
            self._home = tempfile.TemporaryDirectory(prefix="templatecheck-node-")
        self._buffer.clear()
        self._process = subprocess.Popen(
            [node, f"--max-old-space-size={NODE_HEAP_MB}", str(_DRIVER), str(node_dir())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self._home.name,
            env={},
            close_fds=True,
        )
        assert self._process.stdin is not None
        widen(self._process.stdin.fileno())
        self.starts += 1
        if self._line(30.0, 1 << 10) != b'{"ready":true}':
            self._stop()
            raise OSError("the Node driver did not start")
        return self._process

    def _line(self, seconds: float | None, cap: int | None) -> bytes | str:
        """The next line the process writes, or why there is none: ``timeout``, ``output`` or ``ended``."""
        process = self._process
        assert process is not None and process.stdout is not None
        deadline = time.monotonic() + seconds if seconds is not None else None
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            if cap is not None and len(self._buffer) > cap:
                return "output"
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return "timeout"
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return "ended"
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            end(process)


_NODE: NodeProcess | None = None


def node() -> NodeProcess:
    """This process's Node process (one per run, per pytest-xdist worker)."""
    global _NODE
    if _NODE is None:
        import atexit

        _NODE = NodeProcess()
        atexit.register(_NODE.close)
    return _NODE


# ---------------------------------------------------------------------------------------- the install command


def install_command(directory: Path) -> list[str]:
    """The npm command that installs @huggingface/jinja into ``directory``."""
    return ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(directory), HFJS_PACKAGE]


def engines_command(args: Sequence[str]) -> int:
    """``templatecheck engines``: which engines can run here; ``templatecheck engines install``: install
    @huggingface/jinja with npm (into ``$TEMPLATECHECK_NODE_DIR`` or the user's cache directory)."""
    if list(args) == ["install"]:
        if shutil.which("npm") is None:
            print(
                "templatecheck: error: npm is not on the PATH: install Node.js (with npm) first",
                file=sys.stderr,
            )
            return 2
        directory = node_dir()
        directory.mkdir(parents=True, exist_ok=True)
        command = install_command(directory)
        print("running:", " ".join(command))
        return subprocess.call(command)
    if list(args):
        print("templatecheck: error: usage: templatecheck engines [install]", file=sys.stderr)
        return 2
    for engine in ENGINES:
        why = engine.missing()
        print(f"{engine.name} ({engine.title}, {engine.serves}): {'ready' if why is None else why}")
    return 0


# ------------------------------------------------------------------ constructs that do not survive an engine
#
# Constructs that do not survive other Jinja engines, found in the template's syntax tree (parse only).
#
# Each rule names the construct, the engines it breaks in and how, and the portable way to write it. Every
# claim here was rendered in the engines (MiniJinja 3.1 as TGI sets it up, @huggingface/jinja 0.5.11):
# ``tests/test_engines_lint.py`` renders each rule's example again and fails when an engine stops breaking on
# it. Constructs that do survive both engines (``loop.previtem``/``nextitem``, ``namespace`` attribute
# assignment, ``is mapping``, ``|items`` and ``.items()`` on dicts) have no rule.


#: What a construct does in an engine: ``fails`` (the render stops), ``prints`` (it prints other text).
FAILS, PRINTS, WHITESPACE = "fails", "prints", "whitespace"


@dataclass(frozen=True)
class Rule:
    """A construct, the engines it breaks in, what it does there, how to write it portably, and an example
    template (with the text transformers renders for it) that proves the claim."""

    construct: str
    engines: tuple[str, ...]
    effect: str
    portable: str
    example: str
    expected: str
    #: What the engine's error says when this construct is the cause (besides the construct's name).
    says: str = ""


@dataclass(frozen=True)
class Hit:
    """One place a rule matches: the template line (1-based) and the construct as written."""

    rule: Rule
    line: int
    written: str


def _method(name: str, engines: tuple[str, ...], portable: str, example: str, expected: str) -> Rule:
    return Rule(f".{name}()", engines, FAILS, portable, example, expected)


_HF = ("hfjs",)
_BOTH = ("minijinja", "hfjs")

#: Python string and dict methods by name (MiniJinja's pycompat layer and @huggingface/jinja each have some).
METHODS: dict[str, Rule] = {
    "find": _method("find", _HF, "test `'x' in s`, or split the string", "{{ 'abc'.find('b') }}", "1"),
    "count": _method("count", _HF, "loop and count with a namespace", "{{ 'aab'.count('a') }}", "2"),
    "join": _method(
        "join", _HF, "use the `join` filter: `items|join(', ')`", "{{ '-'.join(['a', 'b']) }}", "a-b"
    ),
    "format": _method("format", _HF, "concatenate with `~`", "{{ '{} {}'.format('a', 'b') }}", "a b"),
    "splitlines": _method("splitlines", _HF, "`s.split('\\n')`", "{{ 'a\\nb'.splitlines()|length }}", "2"),
    "isdigit": _method(
        "isdigit", _HF, "compare with `|int` or a string test", "{{ '12'.isdigit() }}", "True"
    ),
    "removeprefix": _method(
        "removeprefix", _BOTH, "slice after a `startswith` test", "{{ 'abc'.removeprefix('a') }}", "bc"
    ),
    "removesuffix": _method(
        "removesuffix", _BOTH, "slice after an `endswith` test", "{{ 'abc'.removesuffix('c') }}", "ab"
    ),
}

#: ``loop`` attributes @huggingface/jinja lacks (``previtem``, ``nextitem``, ``index``... it has).
LOOP: dict[str, Rule] = {
    "cycle": Rule(
        "loop.cycle()", _HF, FAILS, "`['a', 'b'][loop.index0 % 2]`",
        "{% for x in [1, 2] %}{{ loop.cycle('a', 'b') }}{% endfor %}", "ab",
    ),
    "changed": Rule(
        "loop.changed()", _HF, FAILS, "compare with `loop.previtem`",
        "{% for x in [1, 2] %}{{ loop.changed(x) }}{% endfor %}", "TrueTrue",
    ),
    "depth": Rule(
        "loop.depth", _HF, PRINTS, "count the depth in a macro argument",
        "{% for x in [1] %}{{ loop.depth }}{% endfor %}", "1",
    ),
}  # fmt: skip

#: Filters @huggingface/jinja (and, where named, MiniJinja) does not have.
FILTERS: dict[str, Rule] = {
    "format": Rule("|format", _HF, FAILS, "concatenate with `~`", "{{ '%s-%d'|format('a', 3) }}", "a-3"),
    "round": Rule("|round", _HF, FAILS, "`|int`, or keep the number as given", "{{ 2.5|round }}", "2.0"),
    "sum": Rule("|sum", _HF, FAILS, "add in a loop with a namespace", "{{ [1, 2]|sum }}", "3"),
    "batch": Rule("|batch", _HF, FAILS, "slice the list", "{{ [1, 2, 3]|batch(2)|list|length }}", "2"),
    "e": Rule(
        "|e", _HF, FAILS, "leave the text unescaped, or replace characters", "{{ '<a>'|e }}", "&lt;a&gt;"
    ),
    "escape": Rule("|escape", _HF, FAILS, "replace the characters", "{{ '<a>'|escape }}", "&lt;a&gt;"),
    "wordcount": Rule("|wordcount", _BOTH, FAILS, "`(s.split()|length)`", "{{ 'a b'|wordcount }}", "2"),
}

#: Other constructs.
OTHER: dict[str, Rule] = {
    "percent": Rule(
        "'...' % value", _BOTH, FAILS, "concatenate with `~`", "{{ '%s!' % 'a' }}", "a!"
    ),
    "repeat": Rule("'...' * n", _HF, FAILS, "write the text out, or loop", "{{ '=' * 3 }}", "==="),
    "is in": Rule("x is in y", _HF, FAILS, "`x in y`", "{{ 'a' is in ['a'] }}", "True"),
    "recursive": Rule(
        "for ... recursive", _HF, FAILS, "a macro that calls itself",
        "{% for x in [[1]] recursive %}{{ x|length }}{% endfor %}", "1",
    ),
    "raw": Rule("{% raw %}", _HF, FAILS, "a string literal: `{{ '{{' }}`", "{% raw %}{{x}}{% endraw %}", "{{x}}"),
    "dict": Rule("dict(...)", _HF, FAILS, "a dict literal `{'a': 1}`", "{{ dict(a=1).a }}", "1"),
    "number keys": Rule(
        "a dict literal with number keys", _HF, FAILS, "string keys (`{'512': 128}`), or a list of pairs",
        "{% set d = {0: 'a'} %}{{ d[0] }}", "a", says="Object keys must be strings",
    ),
    "bool": Rule(
        "printing a boolean", _HF, PRINTS, "print text of your own: `{{ 'yes' if x else 'no' }}`",
        "{{ 'a' in 'abc' }}", "True",
    ),
    "block": Rule(
        "a block tag ending its line without `-%}`", ("minijinja",), WHITESPACE,
        "close block tags with `-%}` (or open the next with `{%-`): TGI renders without trim_blocks/lstrip_blocks",
        "{% if true %}\nx\n{% endif %}", "x\n",
    ),
}  # fmt: skip

RULES: tuple[Rule, ...] = (*METHODS.values(), *LOOP.values(), *FILTERS.values(), *OTHER.values())


def _hits_in(node: jinja2.nodes.Node) -> list[Hit]:
    """The rules ``node`` itself matches (not its children)."""
    line = node.lineno
    if isinstance(node, jinja2.nodes.Call) and isinstance(node.node, jinja2.nodes.Getattr):
        target, name = node.node.node, node.node.attr
        if isinstance(target, jinja2.nodes.Name) and target.name == "loop" and name in LOOP:
            return [Hit(LOOP[name], line, f"loop.{name}(...)")]
        if name in METHODS:
            return [Hit(METHODS[name], line, f".{name}(...)")]
    if (
        isinstance(node, jinja2.nodes.Call)
        and isinstance(node.node, jinja2.nodes.Name)
        and node.node.name == "dict"
    ):
        return [Hit(OTHER["dict"], line, "dict(...)")]
    if isinstance(node, jinja2.nodes.Getattr) and _is_loop(node.node) and node.attr == "depth":
        return [Hit(LOOP["depth"], line, "loop.depth")]
    if isinstance(node, jinja2.nodes.Filter) and node.name in FILTERS:
        return [Hit(FILTERS[node.name], line, f"|{node.name}")]
    if isinstance(node, jinja2.nodes.Mod) and _is_text(node.left):
        return [Hit(OTHER["percent"], line, "'...' % value")]
    if isinstance(node, jinja2.nodes.Mul) and (_is_text(node.left) or _is_text(node.right)):
        return [Hit(OTHER["repeat"], line, "'...' * n")]
    if isinstance(node, jinja2.nodes.Dict) and any(
        isinstance(pair.key, jinja2.nodes.Const) and not isinstance(pair.key.value, str)
        for pair in node.items
    ):
        return [Hit(OTHER["number keys"], line, "{<number>: ...}")]
    if isinstance(node, jinja2.nodes.Test) and node.name == "in":
        return [Hit(OTHER["is in"], line, "is in")]
    if isinstance(node, jinja2.nodes.For) and node.recursive:
        return [Hit(OTHER["recursive"], line, "for ... recursive")]
    if isinstance(node, jinja2.nodes.Output):
        return [
            Hit(OTHER["bool"], child.lineno, "{{ ... }} of a test")
            for child in node.nodes
            if _prints_bool(child)
        ]
    return []


def _is_loop(node: jinja2.nodes.Node) -> bool:
    return isinstance(node, jinja2.nodes.Name) and node.name == "loop"


def _is_text(node: jinja2.nodes.Node) -> bool:
    return isinstance(node, jinja2.nodes.Const) and isinstance(node.value, str)


def _prints_bool(node: jinja2.nodes.Node) -> bool:
    """An output expression whose value is a boolean whatever the data: a test, a comparison, ``not``."""
    if isinstance(node, jinja2.nodes.Const):
        return isinstance(node.value, bool)
    return isinstance(node, (jinja2.nodes.Test, jinja2.nodes.Compare, jinja2.nodes.Not))


_RAW = re.compile(r"{%-?\s*raw\s*-?%}")
#: A block tag that ends its line without trimming: ``... %}`` then a newline (not ``-%}``) that no following
#: ``{%-``, ``{{-`` or ``{#-`` strips, and that is not the template's last newline (which Jinja drops).
_UNTRIMMED = re.compile(r"(?<!-)%}(?=\n)(?![ \t\n]*\{[%{#]-)(?!\n\Z)")


def _lexical(source: str) -> list[Hit]:
    """The rules the parsed tree cannot see: ``{% raw %}`` (gone after parsing) and untrimmed block tags."""
    hits = [
        Hit(OTHER["raw"], source.count("\n", 0, m.start()) + 1, "{% raw %}") for m in _RAW.finditer(source)
    ]
    hits += [
        Hit(OTHER["block"], source.count("\n", 0, m.start()) + 1, "%}⏎") for m in _UNTRIMMED.finditer(source)
    ]
    return hits


def scan(tree: jinja2.nodes.Template, source: str) -> list[Hit]:
    """Every place in the template a rule matches, in line order."""
    hits = _lexical(source)
    for node in [tree, *nodes_of(tree, jinja2.nodes.Node)]:
        hits += _hits_in(node)
    return sorted(hits, key=lambda h: (h.line, h.rule.construct))


__all__ = [
    "ENGINES",
    "FAILS",
    "HFJS",
    "HFJS_PACKAGE",
    "MINIJINJA",
    "PRINTS",
    "RULES",
    "WHITESPACE",
    "Engine",
    "Hit",
    "NodeProcess",
    "Rule",
    "engines_command",
    "node_dir",
    "render_minijinja_here",
    "scan",
    "tgi_source",
]
