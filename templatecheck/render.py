"""Sandboxed rendering of chat templates, identical to ``tokenizer.apply_chat_template(..., tokenize=False)``.

The environment mirrors the one transformers builds (immutable sandbox, ``trim_blocks``, ``lstrip_blocks``,
``loopcontrols``, its ``tojson``, ``raise_exception``, ``strftime_now``, ``{% generation %}``, the restricted
``dict`` and ``namespace``) and the message preparation it does before rendering (``None`` values dropped,
reasoning fields aliased, ``continue_final_message``). ``tests/test_render_parity.py`` proves the equality
against the installed transformers with hypothesis.

On top of that, every render is bounded: in wall time (see :mod:`templatecheck.bounds`), in output size, and
in the size of strings and numbers the template can build, so a hostile or broken template becomes a
:class:`RenderError`, never a hang.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import marshal
import pickle
import re
import sys
import time
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.compiler
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

from templatecheck import cache
from templatecheck.bounds import DeadlineExceeded, call_with_deadline
from templatecheck.worker import BOUND_KINDS, REPEATED, Answer, Batch, Budget, Job, exceeded, shared

#: The clock templates see through ``strftime_now`` unless a check asks otherwise. Rendering through a pinned
#: clock makes every result reproducible; ``Renderer(clock=None)`` gives transformers' behaviour.
PINNED_CLOCK = datetime(2026, 1, 15, 9, 30, 0)

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


@dataclass(frozen=True)
class Limits:
    """Bounds on rendering. ``None`` switches a bound off.

    ``seconds`` and ``max_output_chars`` bound one render; ``memory_bytes`` is the address space one render may
    add to the render worker; ``budget_seconds`` caps the wall time all renders of one template may take in a
    run (a slow template answers at once after that, with its finding).
    """

    seconds: float | None = 2.0
    max_output_chars: int | None = 4_000_000
    memory_bytes: int | None = 1 << 30
    budget_seconds: float | None = 30.0

    def describe_output(self) -> str:
        assert self.max_output_chars is not None
        return f"{self.max_output_chars / 1_000_000:g} MB"

    def budget(self) -> Budget:
        """What one job of the render worker may use."""
        return Budget(self.seconds, self.memory_bytes)


class RenderError(Exception):
    """A template failed to render: it raised, did not parse, or ran past a bound.

    ``kind`` is one of ``"refused"`` (the template called ``raise_exception``), ``"raised"`` (any other
    exception of the template's, e.g. ``TypeError``), ``"syntax"``,
    ``"timeout"``, ``"output"`` (output or an intermediate value too large), ``"memory"`` (the render worker's
    memory limit), ``"crash"`` (the render worker ended), ``"budget"`` (the template used its time budget for the
    run) and ``"security"`` (the sandbox refused an operation).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _OutputTooLarge(Exception):
    pass


@dataclass
class Rendered:
    """A rendering and the character spans that ``{% generation %}`` blocks produced."""

    text: str
    generation_spans: list[tuple[int, int]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- sandbox


class _Tracking:
    """The running state of one render, read by the ``{% generation %}`` extension and the size guards."""

    def __init__(self, max_chars: int | None) -> None:
        self.length = 0
        self.spans: list[tuple[int, int]] = []
        self.max_chars = max_chars


_TRACKING: ContextVar[_Tracking | None] = ContextVar("templatecheck_render", default=None)


class _GenerationExtension(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: renders its body and records where it landed."""

    tags = {"generation"}  # noqa: RUF012 (jinja's API)

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_support"), [], [], body).set_lineno(lineno)

    def _support(self, caller: Callable[[], str]) -> str:
        text = caller()
        tracking = _TRACKING.get()
        if tracking is not None:
            tracking.spans.append((tracking.length, tracking.length + len(text)))
        return text


def _check_size(value: Any) -> Any:
    tracking = _TRACKING.get()
    limit = tracking.max_chars if tracking is not None else None
    if limit is not None and isinstance(value, (str, list, tuple)) and len(value) > limit:
        raise _OutputTooLarge(f"a value of {len(value):,} items")
    return value


def _limit() -> int | None:
    tracking = _TRACKING.get()
    return tracking.max_chars if tracking is not None else None


_WIDTH = re.compile(r"(\d{7,})")
#: str methods whose integer argument is the size of the result.
_SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _check_width(spec: Any) -> None:
    """Refuse a format string that asks for a field wider than the bound (``'%999999999s'``)."""
    limit = _limit()
    if limit is not None and isinstance(spec, str):
        for match in _WIDTH.finditer(spec):
            if int(match.group(1)) > limit:
                raise _OutputTooLarge(f"a field width of {int(match.group(1)):,}")


def _check_counts(args: tuple[Any, ...]) -> None:
    limit = _limit()
    for arg in args:
        if limit is not None and isinstance(arg, int) and not isinstance(arg, bool) and arg > limit:
            raise _OutputTooLarge(f"a size argument of {arg:,}")


#: Jinja's sandbox rule per (type, attribute name): it reads the type (functions, methods, code objects and
#: mutable collections are judged by ``isinstance``) and the name, never the value. Bounded, as a template
#: may read many names.
_SAFE_ATTRIBUTES: dict[tuple[type, str], bool] = {}
_SAFE_ATTRIBUTES_KEPT = 4096
#: Every name an attribute of a ``dict`` can have (those of the type and of ``object``).
_DICT_NAMES = frozenset(dir(dict))
_METHODS = (types.MethodType, types.BuiltinMethodType, types.FunctionType)


class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """transformers' sandbox, with everything that can allocate a huge value bounded before it does:
    repetition, powers, ``%`` formatting, ``~`` joins, and the sizes given to str methods and filters."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Jinja's rule, with its common cases first: a key of a plain ``dict`` (a message's ``role``) that is
        no name of the ``dict`` type (a ``dict`` has no attributes of its own, so Jinja reads the key), and a
        public attribute of a ``namespace`` or a ``loop`` that holds no method (Jinja's rule allows every such
        attribute of these types). Anything else takes Jinja's path."""
        kind = type(obj)
        if kind is dict and attribute not in _DICT_NAMES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if kind in _OPEN_TYPES and not attribute.startswith("_"):
            try:
                value = getattr(obj, attribute)
            except AttributeError:  # neither type can be subscripted: Jinja's path ends undefined as well
                return self.undefined(obj=obj, name=attribute)
            if not isinstance(value, _METHODS):
                return value
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Jinja's rule, which depends only on the object's type and the attribute's name, kept per pair."""
        key = (type(obj), attr)
        safe = _SAFE_ATTRIBUTES.get(key)
        if safe is None:
            safe = super().is_safe_attribute(obj, attr, value)
            if len(_SAFE_ATTRIBUTES) < _SAFE_ATTRIBUTES_KEPT:
                _SAFE_ATTRIBUTES[key] = safe
        return safe

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        limit = _limit()
        if operator == "*" and limit is not None:
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(count, int)
                    and len(seq) * count > limit
                ):
                    raise _OutputTooLarge(f"a repetition of {len(seq) * count:,} items")
        if operator == "**" and isinstance(right, int) and abs(right) > 10_000:
            raise _OutputTooLarge(f"a power with exponent {right:,}")
        if operator == "%":
            _check_width(left)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", "") in _SIZED_METHODS:
            _check_counts(args)
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``format_map``, which the sandbox wraps when a template reads them."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        spec = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_width(spec)
            return str(_check_size(wrapped(*args, **kwargs)))

        return checked


#: The names a compile in progress found its template reading without defining them (see _compiled).
_UNDECLARED: ContextVar[set[str] | None] = ContextVar("templatecheck_undeclared", default=None)


class _CodeGenerator(jinja2.compiler.CodeGenerator):
    """Compiles ``a ~ b`` to a join whose result is checked against the size bound, and notes the names each
    frame resolves from outside (what ``jinja2.meta.find_undeclared_variables`` reports, without a second
    pass of code generation)."""

    def enter_frame(self, frame: jinja2.compiler.Frame) -> None:
        super().enter_frame(frame)
        names = _UNDECLARED.get()
        if names is not None:
            for action, name in frame.symbols.loads.values():
                if action == "resolve" and name not in self.environment.globals:
                    names.add(name)

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: jinja2.compiler.Frame) -> None:
        self.write("environment.checked_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _checked_join(values: Any) -> str:
    return str(_check_size("".join(str(v) for v in values)))


def _sized_filter(filter_fn: Callable[..., Any]) -> Callable[..., Any]:
    """A width-taking filter (``center``, ``indent``, ``wordwrap``, ``format``) that refuses huge sizes."""

    @jinja2.pass_context  # a context filter is never folded into a constant at compile time, outside the bounds
    def checked(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_counts(args)
        _check_counts(tuple(kwargs.values()))
        if filter_fn.__name__ == "do_format":
            _check_width(value)
        if getattr(filter_fn, "jinja_pass_arg", None) is jinja2.utils._PassArg.environment:
            return _check_size(filter_fn(context.environment, value, *args, **kwargs))
        return _check_size(filter_fn(value, *args, **kwargs))

    return checked


def _bounded_lipsum(n: int = 5, *args: Any, **kwargs: Any) -> str:
    if isinstance(n, int) and n > 100:
        raise _OutputTooLarge(f"lipsum of {n:,} paragraphs")
    return str(jinja2.utils.generate_lorem_ipsum(n, *args, **kwargs))


class _Refusal(jinja2.exceptions.TemplateError):
    """What ``raise_exception(...)`` raises: the template's deliberate refusal of its input."""


def _raise_exception(message: str) -> None:
    raise _Refusal(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _TemplateDict:
    """``dict`` for templates, with no attribute that leads back to the ``dict`` type."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace`` that refuses underscore attributes, and strings that outgrow the output bound."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, _check_size(value))

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}."
            )


_CLOCK: ContextVar[datetime | None] = ContextVar("templatecheck_clock", default=PINNED_CLOCK)


def _strftime_now(format: str) -> str:
    return (_CLOCK.get() or datetime.now()).strftime(format)


def _environment() -> _Sandbox:
    env = _Sandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationExtension, jinja2.ext.loopcontrols]
    )
    env.code_generator_class = _CodeGenerator
    env.checked_join = _checked_join  # type: ignore[attr-defined]
    for name in ("center", "indent", "wordwrap", "format"):
        env.filters[name] = _sized_filter(env.filters[name])
    env.globals["lipsum"] = _bounded_lipsum
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


#: Types whose public attributes Jinja's sandbox always allows (see :meth:`_Sandbox.getattr`).
_OPEN_TYPES = frozenset({_TemplateNamespace, jinja2.runtime.LoopContext})
_ENV = _environment()


def compile_template(source: str) -> jinja2.Template:
    """Compile a template once per distinct text, in this process; raise :class:`RenderError` of kind ``syntax``.

    Compiling runs template code (Jinja folds constant expressions), so only the render worker calls this;
    the rest of templatecheck asks the worker through :func:`check_template`.
    """
    return _compiled(source).template


def undeclared_variables(source: str) -> frozenset[str]:
    """Names the compiled template reads without defining them, in this process (the worker's side)."""
    return _compiled(source).names


def compiled_code(source: str) -> tuple[bytes, float]:
    """The compiled template's code, marshalled (what :func:`install_compiled` takes), and the seconds its
    compile took (the worker's side)."""
    compiled = _compiled(source)
    return marshal.dumps(compiled.code), compiled.seconds


def install_compiled(source: str, code: bytes, names: frozenset[str], seconds: float) -> None:
    """Make ``code`` (from :func:`compiled_code`, kept by an earlier run whose compile took ``seconds``) the
    compiled ``source`` in this process (the worker's side); raise ``ValueError`` for bytes that are no code."""
    loaded = marshal.loads(code)
    if not isinstance(loaded, types.CodeType):
        raise ValueError("the kept compiled template is not code")
    _keep(source, _Compiled(_template_of(loaded), names, loaded, seconds))


@dataclass(frozen=True)
class _Compiled:
    template: jinja2.Template
    #: The names the template reads without defining them, noted as it compiled.
    names: frozenset[str]
    code: types.CodeType
    #: The seconds compiling took (for code loaded from the cache: as long as it took then).
    seconds: float


#: Compiled templates of this process, the most recently used last.
_COMPILED: OrderedDict[str, _Compiled] = OrderedDict()


def _compiled(source: str) -> _Compiled:
    found = _COMPILED.get(source)
    if found is not None:
        _COMPILED.move_to_end(source)
        return found
    names: set[str] = set()
    token = _UNDECLARED.set(names)
    began = time.perf_counter()
    try:
        code = _ENV.compile(source)
        template = _template_of(code)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError("syntax", f"template does not parse: {exc.message} (line {exc.lineno})") from None
    except RecursionError:
        raise RenderError("syntax", "template does not parse: nesting too deep") from None
    finally:
        _UNDECLARED.reset(token)
    return _keep(source, _Compiled(template, frozenset(names), code, time.perf_counter() - began))


def _template_of(code: types.CodeType) -> jinja2.Template:
    """The template compiled ``code`` makes in this environment (as ``Environment.from_string`` makes it)."""
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)


def _keep(source: str, compiled: _Compiled) -> _Compiled:
    _COMPILED[source] = compiled
    while len(_COMPILED) > 1024:
        _COMPILED.popitem(last=False)
    return compiled


def _ask(job: Job, limits: Limits) -> Answer:
    return shared().run([job], limits.budget())[0]


def _error(answer: Answer) -> RenderError:
    """The error an answer of the render worker holds."""
    return RenderError(str(answer["error"]), str(answer.get("message", "")))


def check_template(source: str, limits: Limits = Limits()) -> None:
    """Raise :class:`RenderError` when the template does not parse or compile (compiled in the render worker,
    once per text: a template that cannot be compiled costs its bound once)."""
    template_variables(source, limits)


def template_variables(source: str, limits: Limits = Limits()) -> frozenset[str]:
    """Names the template reads without defining them (``messages``, ``tools``, ``bos_token``, ...); raise
    :class:`RenderError` when it does not compile."""
    found = _compile_facts(source, limits)
    if isinstance(found, RenderError):
        raise found
    return found


#: The largest compiled template kept between runs, in bytes.
MAX_KEPT = 16 << 20
_KEPT_MAGIC = b"templatecheck compiled 2\n"


@lru_cache(maxsize=1024)
def _compile_facts(source: str, limits: Limits) -> RenderError | frozenset[str]:
    """Why the template does not compile, or the names it reads without defining them. The render worker
    compiles it, or loads the code an earlier run kept for the same text (:func:`_kept_path`) when that
    compile took no longer than a render may now, and keeps it for its renders; this process never compiles
    a template."""
    path = _kept_path(source)
    kept = _read_kept(path) if path is not None else None
    if kept is not None and (limits.seconds is None or kept.seconds <= limits.seconds):
        job = ("install", source, kept.code, sorted(kept.names), kept.seconds)
        if "ok" in _ask(job, limits):
            return kept.names
    answer = _ask(("compiled", source), limits)
    if "error" in answer:
        return _error(answer)
    names = frozenset(str(n) for n in answer["ok"]["names"])
    if path is not None and answer["ok"]["code"] is not None:
        code = base64.b64decode(answer["ok"]["code"])
        header = {
            "names": sorted(names),
            "seconds": float(answer["ok"]["seconds"]),
            "sha256": hashlib.sha256(code).hexdigest(),
        }
        entry = _KEPT_MAGIC + json.dumps(header, ensure_ascii=True).encode("ascii") + b"\n" + code
        cache.write(path, entry, private_folder=True)
    return names


def _kept_path(source: str) -> Path | None:
    """Where the compiled ``source`` is kept between runs: keyed by the text and by everything that decides
    its code (Python's and Jinja's versions, this module's environment and code generator)."""
    where = cache.folder("compiled")
    if where is None:
        return None
    code = _code_generation()
    if code is None:
        return None
    digest = hashlib.sha256()
    for part in (sys.version, jinja2.__version__, code, source):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return where / f"{digest.hexdigest()[:40]}.bin"


#: Jinja's modules that decide what a template compiles to, and what the compiled code calls.
_JINJA_MODULES = (
    "compiler",
    "environment",
    "ext",
    "lexer",
    "nodes",
    "optimizer",
    "parser",
    "runtime",
    "sandbox",
)


@lru_cache(maxsize=1)
def _code_generation() -> str | None:
    """A hash of the code that decides what a template compiles to: this module (its environment and code
    generator) and Jinja's compiler and runtime as installed (a build of Jinja that keeps its version number
    but changes them gets other keys); ``None`` when that code cannot be read (then nothing is kept)."""
    try:
        digest = hashlib.sha256(Path(__file__).read_bytes())
        for name in _JINJA_MODULES:
            digest.update((Path(jinja2.__file__).parent / f"{name}.py").read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


@dataclass(frozen=True)
class _Kept:
    """A compiled template an earlier run kept: its code, the names it reads, the seconds its compile took."""

    code: bytes
    names: frozenset[str]
    seconds: float


def _read_kept(path: Path) -> _Kept | None:
    """The entry at ``path``; ``None`` when there is none or it is damaged (its code not the code it names by
    its hash), so that the template is compiled again and the entry replaced."""
    data = cache.read(path, limit=MAX_KEPT, private_file=True)
    if data is None or not data.startswith(_KEPT_MAGIC):
        return None
    header, _, code = data[len(_KEPT_MAGIC) :].partition(b"\n")
    try:
        found = json.loads(header)
        names, seconds, digest = found["names"], found["seconds"], found["sha256"]
    except (ValueError, TypeError, KeyError):
        return None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return None
    if not isinstance(seconds, (int, float)) or hashlib.sha256(code).hexdigest() != digest:
        return None
    return _Kept(code, frozenset(names), float(seconds))


@lru_cache(maxsize=1024)
def parse_template(source: str) -> jinja2.nodes.Template:
    """The template's syntax tree, for static checks: parsed, never compiled, so no template code runs; raise
    :class:`RenderError` of kind ``syntax``."""
    try:
        return call_with_deadline(lambda: _ENV.parse(source), Limits().seconds)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError("syntax", f"template does not parse: {exc.message} (line {exc.lineno})") from None
    except RecursionError:
        raise RenderError("syntax", "template does not parse: nesting too deep") from None
    except DeadlineExceeded:
        raise RenderError("timeout", "parsing the template exceeded its time bound") from None


class _Index:
    """Every node of one syntax tree in ``find_all`` order, and the nodes of each kind asked for."""

    def __init__(self, tree: jinja2.nodes.Node) -> None:
        self.order = list(tree.find_all(jinja2.nodes.Node))
        self.kinds: dict[Any, list[jinja2.nodes.Node]] = {}


_INDEXES: weakref.WeakKeyDictionary[jinja2.nodes.Node, _Index] = weakref.WeakKeyDictionary()


def nodes_of(tree: jinja2.nodes.Node, kind: type[Any] | tuple[type[Any], ...]) -> list[Any]:
    """``list(tree.find_all(kind))``, from one walk of the tree (kept while it lives): the static checks ask
    the tree of one template for its filters, loops, names and constants many times."""
    index = _INDEXES.get(tree)
    if index is None:
        index = _INDEXES[tree] = _Index(tree)
    found = index.kinds.get(kind)
    if found is None:
        found = index.kinds[kind] = [node for node in index.order if isinstance(node, kind)]
    return list(found)


# ------------------------------------------------------------------------------------- message preparation


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """Plain JSON-like data: what transformers lets a template see."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:  # the common case first: exact types skip the ABC checks below
        return {key if type(key) is str else _plain(key): _plain(item) for key, item in value.items()}
    if kind is list:
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def prepare_messages(
    messages: Sequence[Mapping[str, Any]], *, keep_none: bool = False
) -> list[dict[str, Any]]:
    """Messages as the template receives them: ``None`` values dropped (as transformers does; kept with
    ``keep_none``, as an engine that passes the client's JSON does), reasoning fields aliased."""
    prepared = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise TypeError(f"a message must be a mapping, got {message!r}")
        plain = _plain({k: v for k, v in message.items() if keep_none or v is not None})
        reasoning = next((plain[k] for k in _REASONING_FIELDS if plain.get(k) is not None), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        prepared.append(plain)
    return prepared


def _tag_final_message(messages: list[dict[str, Any]], field_name: str, source: str) -> str:
    """Mark the text ``continue_final_message`` must continue; return that text."""
    if not messages:
        raise ValueError("continue_final_message is set but the conversation is empty")
    final = messages[-1].get(field_name)
    if final is None:
        raise ValueError(f'continue_final_message is set but the final message has no "{field_name}"')
    fields = [field_name]
    if field_name in _REASONING_FIELDS:
        fields = [f for f in _REASONING_FIELDS if messages[-1].get(f) == final]
    if not any(f in source for f in fields):
        raise ValueError(f'continue_final_message is set to "{field_name}", which the template never reads')
    if isinstance(final, (list, tuple)):
        for block in reversed(final):
            if "text" in block:
                text = block["text"]
                block["text"] = text + _CONTINUE_TAG
                return str(text)
        raise ValueError("continue_final_message is set but the final message has no text to continue")
    for f in fields:
        messages[-1][f] = messages[-1][f] + _CONTINUE_TAG
    return str(final)


def _cut_at_tag(rendered: str, final: str) -> str:
    tag = _CONTINUE_TAG.strip()
    if final.strip() not in rendered or tag not in rendered:
        raise RenderError(
            "raised",
            "continue_final_message is set but the final message does not appear in the rendering: "
            "the template deletes part of it",
        )
    at = rendered.rindex(tag)
    if rendered[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return rendered[:at]
    return rendered[:at].rstrip()


# ------------------------------------------------------------------------------------------------ renderer


class _Ledger:
    """What the renders of one renderer have cost, per template: the first bound a template exceeded (a
    render of it asked for later answers with that at once, unless the memo kept what it gave) and the wall
    time its renders took (capped by ``Limits.budget_seconds``; the render worker's own time on each render,
    or the time waited for an answer it did not give).

    A bound is kept per setting of the template's variables (a switch such as ``enable_thinking``, see
    :func:`setting`): a template that loops only behind a switch still renders without it. A bound exceeded
    in the first setting a template rendered in (the run's own) holds for every setting."""

    def __init__(self) -> None:
        self.exceeded: dict[tuple[str, Setting], RenderError] = {}
        self.spent: dict[str, float] = {}
        self.first: dict[str, Setting] = {}

    def check(self, source: str, limits: Limits, setting: Setting = ()) -> None:
        first = self.first.setdefault(source, setting)
        known = self.exceeded.get((source, setting)) or self.exceeded.get((source, first))
        if known is not None:
            raise known
        budget = limits.budget_seconds
        if budget is not None and self.spent.get(source, 0.0) > budget:
            error = RenderError(
                "budget",
                f"the template's renders took more than {budget:g} s in this run; it is not rendered again",
            )
            self.exceeded[source, first] = error
            raise error

    def record(self, source: str, seconds: float, answers: Sequence[Answer], setting: Setting = ()) -> None:
        self.spent[source] = self.spent.get(source, 0.0) + seconds
        for answer in answers:
            if exceeded(answer) and (source, setting) not in self.exceeded:
                error = _error(answer)
                if not error.message.endswith(REPEATED):
                    error = RenderError(error.kind, error.message + REPEATED)
                self.exceeded[source, setting] = error


#: A setting of a template's variables: ``(name, repr(value))`` pairs, sorted.
Setting = tuple[tuple[str, str], ...]


def setting(call: Call) -> Setting:
    """The setting of the variables ``call`` renders with (see :class:`_Ledger`)."""
    return tuple(sorted((name, repr(value)) for name, value in call.variables.items()))


class _Memo:
    """Renderings already made: several checks ask for the same render (a sample conversation with the
    generation prompt, its prefixes), and under a pinned clock a render is a function of its call, so each is
    made once. Bounded by the characters kept (least recently used first out); a bound exceeded is not kept
    (the ledger answers those)."""

    def __init__(self, max_chars: int = 1 << 26) -> None:
        self.entries: OrderedDict[tuple[Any, ...], Rendered | RenderError] = OrderedDict()
        self.max_chars = max_chars
        self.chars = 0
        #: The keys of renders sent ahead (:meth:`Renderer.prefetch`) not read yet, with their batch.
        self.inflight: dict[tuple[Any, ...], Batch] = {}
        #: The renders that exceeded a bound themselves, with that bound (as render_many gave it them).
        self.culprits: dict[tuple[Any, ...], RenderError] = {}

    @staticmethod
    def key(source: str, clock: datetime | None, max_chars: int | None, call: Call) -> tuple[Any, ...] | None:
        """The key of a render; ``None`` for a call whose values do not pickle (rendered every time)."""
        try:
            fields = pickle.dumps(
                (
                    call.messages,
                    call.add_generation_prompt,
                    call.continue_final_message,
                    call.tools,
                    call.documents,
                    sorted(call.variables.items()),
                ),
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        except Exception:
            return None
        return (source, clock, max_chars, fields)

    def arrived(self, key: tuple[Any, ...]) -> bool:
        """Whether the render of ``key`` sent ahead has been read (or was never in flight)."""
        return key not in self.inflight

    def clear(self) -> None:
        self.entries.clear()
        self.inflight.clear()
        self.culprits.clear()
        self.chars = 0

    def get(self, key: tuple[Any, ...]) -> Rendered | RenderError | None:
        found = self.entries.get(key)
        if found is None:
            return None
        self.entries.move_to_end(key)
        return _copy(found)

    def put(self, key: tuple[Any, ...], result: Rendered | RenderError) -> None:
        """Keep ``result``; a bound exceeded is kept only for the render that exceeded it (:attr:`culprits`).
        Nothing is pushed out here, only by :meth:`trim`, so that what is kept when a render is asked for
        does not depend on how far the batch in flight has been read."""
        if isinstance(result, RenderError) and result.kind in BOUND_KINDS:
            if not result.message.endswith(REPEATED):
                self.culprits.setdefault(key, result)
            return
        if key in self.entries:
            return
        self.entries[key] = result
        self.chars += _size(key, result)

    def found(self, key: tuple[Any, ...]) -> Rendered | RenderError | None:
        """What the render of ``key`` gave: its text or error, or the bound it exceeded itself."""
        result = self.get(key)
        if result is None and key in self.culprits:
            result = _copy(self.culprits[key])
        return result

    def trim(self) -> None:
        """Push out the least recently used renders past :attr:`max_chars` (before a batch is sent: the
        batch before it has been read whole)."""
        while self.chars > self.max_chars and self.entries:
            old_key, old = self.entries.popitem(last=False)
            self.chars -= _size(old_key, old)


#: The first item of the pending key of a call that is rendered without being kept.
_UNKEPT = object()


def _size(key: tuple[Any, ...], result: Rendered | RenderError) -> int:
    text = result.text if isinstance(result, Rendered) else result.message
    return len(text) + len(key[3])


def _copy(result: Rendered | RenderError) -> Rendered | RenderError:
    """A fresh copy of a kept result (callers may change what they get)."""
    if isinstance(result, Rendered):
        return Rendered(result.text, list(result.generation_spans))
    return RenderError(result.kind, result.message)


@dataclass(frozen=True)
class Call:
    """One render's arguments (see :meth:`Renderer.render`)."""

    messages: Sequence[Mapping[str, Any]]
    add_generation_prompt: bool = False
    continue_final_message: bool | str = False
    tools: Sequence[Mapping[str, Any]] | None = None
    documents: Sequence[Mapping[str, Any]] | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Renderer:
    """Renders chat templates the way ``apply_chat_template`` does, inside bounds, in the render worker.

    ``special_tokens`` are the variables transformers passes from ``tokenizer.special_tokens_map``
    (``bos_token``, ``eos_token``, ...). ``clock`` is the time ``strftime_now`` reads (``None``: the real
    clock, as transformers does). Renderers made with :meth:`with_clock` share what renders have cost.
    """

    special_tokens: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = Limits()
    clock: datetime | None = PINNED_CLOCK
    ledger: _Ledger = field(default_factory=_Ledger, compare=False, repr=False)
    memo: _Memo = field(default_factory=_Memo, compare=False, repr=False)

    def with_clock(self, clock: datetime | None) -> Renderer:
        """The same renderer reading another clock."""
        return replace(self, clock=clock)

    def render(
        self,
        source: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = False,
        continue_final_message: bool | str = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        **variables: Any,
    ) -> Rendered:
        """Render ``messages``; raise :class:`RenderError` for anything the template does wrong.

        Invalid arguments of the caller's own (``continue_final_message`` together with
        ``add_generation_prompt``) raise ``ValueError`` as transformers does.
        """
        call = Call(messages, add_generation_prompt, continue_final_message, tools, documents, variables)
        result = self.render_many(source, [call])[0]
        if isinstance(result, RenderError):
            raise result
        return result

    def render_many(
        self, source: str, calls: Sequence[Call], *, fresh: bool = False
    ) -> list[Rendered | RenderError]:
        """Render each call, in one batch to the render worker; each result is a rendering or its error.

        Under a pinned clock a call rendered before (by this renderer or one made from it with
        :meth:`with_clock`) is answered from what it gave, and equal calls of a batch render once; ``fresh``
        renders every call (to see whether equal renders agree). Invalid arguments of the caller's own raise
        ``ValueError`` before anything renders.
        """
        results = self._dispatch(source, calls, fresh=fresh, wait=True)
        assert results is not None
        return results

    def prefetch(self, source: str, calls: Sequence[Call]) -> None:
        """Send ``calls`` to the render worker and return at once, so this process goes on while the worker
        renders; the batch is read as far as a render asks for one of them (whole when another batch is sent),
        so that this process judges the first renders while the worker makes the rest, and its renders are
        answered as :meth:`render_many` would have. Under a pinned clock only (otherwise a render is not kept,
        and they render now)."""
        self._dispatch(source, calls, fresh=False, wait=False)

    def _dispatch(
        self, source: str, calls: Sequence[Call], *, fresh: bool, wait: bool
    ) -> list[Rendered | RenderError] | None:
        for call in calls:
            _check_arguments(call)
        settings: dict[Setting, list[int]] = {}
        for i, call in enumerate(calls):
            settings.setdefault(setting(call), []).append(i)
        if len(settings) > 1:  # each setting is its own batch, bounded on its own (see _Ledger)
            mixed: list[Rendered | RenderError | None] = [None] * len(calls)
            for where in settings.values():
                part = self._dispatch(source, [calls[i] for i in where], fresh=fresh, wait=wait)
                for i, result in zip(where, part or [], strict=False):
                    mixed[i] = result
            return [r for r in mixed if r is not None] if wait else None
        batch_setting = next(iter(settings), ())
        keep = not fresh and self.clock is not None
        keys = [
            self.memo.key(source, self.clock, self.limits.max_output_chars, c) if keep else None
            for c in calls
        ]
        results: list[Rendered | RenderError | None] = [None] * len(calls)
        pending: dict[Any, list[int]] = {}
        for i, key in enumerate(keys):
            if key is not None and (ahead := self.memo.inflight.get(key)) is not None:
                if not wait:
                    continue  # sent ahead already: answered when asked for
                # read the batch sent ahead as far as this render (the renders before it come with it)
                ahead.until(functools.partial(self.memo.arrived, key))
            found = self.memo.found(key) if key is not None else None
            if found is not None:
                results[i] = found
            else:
                pending.setdefault(key if key is not None else (_UNKEPT, i), []).append(i)
        if pending:
            shared().settle()  # the batch in flight may have exceeded a bound of this template
            try:
                # a render kept in the memo (made before a bound was exceeded) answers with what it gave,
                # one not kept answers with that bound: what is kept does not depend on how far a batch
                # was read (see _Memo.put), so neither does what a render gives
                self.ledger.check(source, self.limits, batch_setting)
            except RenderError as error:
                for where in pending.values():
                    for i in where:
                        results[i] = error
                return [r for r in results if r is not None] if wait else None
            prepared = [self._prepare(source, calls[where[0]]) for where in pending.values()]
            jobs = [
                ("render", source, context, self.clock, self.limits.max_output_chars)
                for context, _ in prepared
            ]
            entries = list(pending)
            made: dict[int, Rendered | RenderError] = {}

            def arrived(index: int, answer: Answer) -> None:
                made[index] = _result(answer, prepared[index][1])
                key = entries[index]
                if key[0] is not _UNKEPT:
                    self.memo.put(key, made[index])
                    self.memo.inflight.pop(key, None)

            def done(batch: Batch) -> None:
                self.ledger.record(source, batch.seconds, batch.answers, batch_setting)
                for index, answer in enumerate(batch.answers):
                    if index not in made:  # after a bound the child stopped at: that bound again
                        arrived(index, answer)

            self.memo.trim()
            batch = shared().submit(jobs, self.limits.budget(), done, arrived)
            if not wait and keep:
                if not batch.finished:
                    self.memo.inflight.update((key, batch) for key in entries if key[0] is not _UNKEPT)
                return None
            batch.all()
            for index, key in enumerate(entries):
                for i in pending[key]:
                    results[i] = _copy(made[index])
        if not wait:
            return None
        done_results = [r for r in results if r is not None]
        assert len(done_results) == len(calls)
        return done_results

    def context(self, source: str, call: Call, *, keep_none: bool = False) -> dict[str, Any]:
        """The variables a template gets for ``call``, as transformers passes them (for other engines; with
        ``keep_none``, the messages' ``None`` values stay)."""
        return self._prepare(source, call, keep_none=keep_none)[0]

    def _prepare(
        self, source: str, call: Call, *, keep_none: bool = False
    ) -> tuple[dict[str, Any], str | None]:
        """The render context of ``call`` as transformers builds it, and the text a continued final message
        ends with."""
        _check_arguments(call)
        chat = prepare_messages(call.messages, keep_none=keep_none)
        final = None
        if call.continue_final_message:
            cfm = call.continue_final_message
            final = _tag_final_message(chat, cfm if isinstance(cfm, str) else "content", source)
        context = {
            **_plain({**self.special_tokens, **call.variables}),
            "messages": chat,
            "tools": _plain(list(call.tools)) if call.tools is not None else None,
            "documents": _plain(list(call.documents)) if call.documents is not None else None,
            "add_generation_prompt": call.add_generation_prompt,
        }
        return context, final


def _check_arguments(call: Call) -> None:
    """Raise ``ValueError`` for arguments transformers refuses before it renders."""
    if call.continue_final_message and call.add_generation_prompt:
        raise ValueError("continue_final_message and add_generation_prompt are not compatible")


def _result(answer: Answer, final: str | None) -> Rendered | RenderError:
    """The rendering (cut where a continued final message ends) or the error an answer holds."""
    if "error" in answer:
        return _error(answer)
    text, spans = answer["ok"]
    rendered = Rendered(str(text), [(int(a), int(b)) for a, b in spans])
    if final is not None:
        try:
            rendered.text = _cut_at_tag(rendered.text, final)
        except RenderError as error:
            return error
    return rendered


def render_here(
    source: str,
    context: dict[str, Any],
    *,
    seconds: float | None,
    max_chars: int | None,
    clock: datetime | None,
) -> Rendered:
    """Compile and render in this process, inside the time and size bounds (the render worker's side)."""
    tracking = _Tracking(max_chars)

    def generate() -> Rendered:
        template = compile_template(source)
        chunks = []
        for chunk in template.generate(context):
            tracking.length += len(chunk)
            if max_chars is not None and tracking.length > max_chars:
                raise _OutputTooLarge(f"{tracking.length:,} characters of output")
            chunks.append(chunk)
        return Rendered("".join(chunks), tracking.spans)

    with _active(tracking, clock):
        try:
            return call_with_deadline(generate, seconds)
        except RenderError:
            raise
        except DeadlineExceeded:
            raise RenderError("timeout", f"render exceeded {seconds:g} s") from None
        except _OutputTooLarge as exc:
            assert max_chars is not None
            raise RenderError("output", f"output exceeded {max_chars / 1_000_000:g} MB ({exc})") from None
        except jinja2.exceptions.SecurityError as exc:
            raise RenderError("security", f"the sandbox refused an operation: {exc}") from None
        except MemoryError:
            raise RenderError("memory", "render exhausted memory") from None
        except RecursionError:
            raise RenderError("raised", "template raised RecursionError: recursion too deep") from None
        except _Refusal as exc:
            raise RenderError("refused", f"template refused: {exc}") from None
        except Exception as exc:  # the template's own failure, whatever its type
            raise RenderError("raised", f"template raised {type(exc).__name__}: {exc}") from None


@contextmanager
def _active(tracking: _Tracking, clock: datetime | None) -> Iterator[None]:
    t1 = _TRACKING.set(tracking)
    t2 = _CLOCK.set(clock)
    try:
        yield
    finally:
        _CLOCK.reset(t2)
        _TRACKING.reset(t1)
