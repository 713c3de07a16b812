"""A hostile corpus: templates that loop, explode, escape, or break, and bad inputs.

Each case names what it does, how templatecheck must answer (the render error kind, the check outcome, or the
load error), a fragment of the message, and a wall-time bound. ``tests/test_hostile.py`` asserts them;
``benchmarks/hostile_table.py`` prints each with its measured time.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CANARY_ENV = "TEMPLATECHECK_CANARY"
CANARY_VALUE = "canary-7f3a9c"

_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TemplateCase:
    """A template rendered with the plain conversations: ``kind`` is the RenderError kind every render
    gives (``None``: it renders), ``check`` a check that must fail on it, ``message`` a fragment of what is said."""

    name: str
    source: str
    kind: str | None
    message: str
    seconds: float
    check: str = "renders"


TEMPLATES = [
    TemplateCase(
        "nested loops past the time bound",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "timeout",
        "render exceeded 1 s",
        3.0,
    ),
    TemplateCase(
        "macro recursion without end",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "raised",
        "recursion",
        3.0,
    ),
    TemplateCase(
        "exponential macro calls",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}x{% endmacro %}{{ f(60) }}",
        "timeout",
        "render exceeded 1 s",
        3.0,
    ),
    TemplateCase("huge repetition", "{{ 'x' * 1000000000000 }}", "output", "a repetition of", 1.0),
    TemplateCase(
        "namespace string doubling",
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "output",
        "output exceeded",
        2.0,
    ),
    TemplateCase(
        "top-level ~ doubling",
        "{% set s = 'abcdefgh' %}" + "{% set s = s ~ s %}" * 40 + "{{ s }}",
        "output",
        "output exceeded",
        2.0,
    ),
    TemplateCase(
        "endless output",
        "{% for a in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
        "output",
        "characters of output",
        3.0,
    ),
    TemplateCase(
        "str.center with a huge width", "{{ 'x'.center(10000000000) }}", "output", "a size argument", 1.0
    ),
    TemplateCase(
        "center filter with a huge width", "{{ 'x' | center(10000000000) }}", "output", "a size argument", 1.0
    ),
    TemplateCase("%-format with a huge width", "{{ '%9999999999s' % 'x' }}", "output", "a field width", 1.0),
    TemplateCase(
        "str.format with a huge width", "{{ '{:>9999999999}'.format('x') }}", "output", "a field width", 1.0
    ),
    TemplateCase("lipsum flood", "{{ lipsum(10000000) }}", "output", "lipsum of 10,000,000 paragraphs", 1.0),
    TemplateCase("power tower", "{{ 2 ** 100000000 }}", "output", "a power with exponent", 1.0),
    TemplateCase(
        "__class__.__mro__ subclasses walk",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}" + _CHAT,
        "security",
        "'__class__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "cycler.__init__.__globals__",
        "{{ cycler.__init__.__globals__.os.environ }}" + _CHAT,
        "security",
        "'__init__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "joiner.__init__.__globals__",
        "{{ joiner.__init__.__globals__['os'].popen('id').read() }}" + _CHAT,
        "security",
        "'__init__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "namespace internals",
        "{{ namespace.__init__.__globals__['__builtins__']['open']('/etc/passwd').read() }}" + _CHAT,
        "security",
        "'__init__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "lipsum.__globals__ to os.environ",
        "{{ lipsum.__globals__['os'].environ['" + CANARY_ENV + "'] }}" + _CHAT,
        "security",
        "'__globals__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "format-string attribute walk",
        "{{ '{0.__class__.__init__.__globals__}'.format(raise_exception) }}" + _CHAT,
        "security",
        "security",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "self.__init__.__globals__",
        "{{ self.__init__.__globals__.__builtins__ }}" + _CHAT,
        "security",
        "'__init__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "attr filter to __class__",
        "{{ (messages | attr('__class__')).__base__ }}" + _CHAT,
        "security",
        "'__class__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "map(attribute=) to __class__",
        "{{ messages | map(attribute='__class__') | list }}" + _CHAT,
        None,
        "'__class__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "mutating the messages",
        "{{ messages.append({'role': 'system', 'content': 'injected'}) }}" + _CHAT,
        "security",
        "security",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "private namespace attribute",
        "{% set ns = namespace() %}{% set ns._secret = 1 %}" + _CHAT,
        "security",
        "underscore-prefixed",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "dict type recovered from the dict global",
        "{{ dict.__call__.__globals__ }}" + _CHAT,
        "security",
        "'__call__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase("include of a host file", "{% include '/etc/passwd' %}", "raised", "template raised", 1.0),
    TemplateCase("extends a host file", "{% extends '/etc/hostname' %}", "raised", "template raised", 1.0),
    TemplateCase("syntax error", "{% for m in messages %}{{ m.content }", "syntax", "does not parse", 1.0),
    TemplateCase("unknown filter", "{{ messages | explode }}", "syntax", "does not parse", 1.0),
    TemplateCase(
        "raise_exception always", "{{ raise_exception('nope') }}", "refused", "template refused: nope", 1.0
    ),
]

#: Two structurally equal values of 2**60 shared leaves: comparing or printing them is one C call that never
#: returns to the interpreter.
_SHARED = (
    "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(60) %}"
    "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}"
)
_STOPPED = "the render worker was stopped"

#: What only the render worker's limits stop: constant folding while compiling, single long C calls (the parent
#: kills the worker), and memory a C routine allocates before any size guard (the worker's address space).
WORKER_TEMPLATES = [
    TemplateCase(
        "constant folded while compiling",
        "{{ [1, 2, 3] | slice(1000000000000) | sum(start=[]) }}",
        "timeout",
        "render exceeded 1 s",
        6.0,
    ),
    TemplateCase(
        "constant folded in a branch never taken",
        "{% if false %}{{ [1, 2, 3] | slice(1000000000000) | sum(start=[]) }}{% endif %}" + _CHAT,
        "timeout",
        "render exceeded 1 s",
        6.0,
    ),
    TemplateCase(
        "a huge integer power compared", "{{ (10 ** 10000) ** 10000 > 1 }}", "timeout", _STOPPED, 6.0
    ),
    TemplateCase("deeply shared lists compared", _SHARED + "{{ ns.a == ns.b }}", "timeout", _STOPPED, 6.0),
    TemplateCase("a shared structure as a string", _SHARED + "{{ ns.a | string }}", "timeout", _STOPPED, 6.0),
    TemplateCase("a shared structure as JSON", _SHARED + "{{ ns.a | tojson }}", "timeout", _STOPPED, 6.0),
    TemplateCase(
        "tojson with a huge indent",
        "{{ messages | tojson(indent=1500000000) }}",
        "memory",
        "memory limit",
        6.0,
    ),
    TemplateCase("%* width from a tuple", "{{ '%*s' % (2000000000, 'x') }}", "memory", "memory limit", 6.0),
    TemplateCase(
        "format width from an argument",
        "{{ '{:>{w}}'.format('x', w=2000000000) }}",
        "memory",
        "memory limit",
        6.0,
    ),
    TemplateCase(
        "format_map width from an argument",
        "{{ '{x:>{w}}'.format_map({'x': 'x', 'w': 2000000000}) }}",
        "memory",
        "memory limit",
        6.0,
    ),
    TemplateCase(
        "replace with a long replacement",
        "{{ ('a' * 900000) | replace('a', 'b' * 2000) }}",
        "memory",
        "memory limit",
        6.0,
    ),
    TemplateCase(
        "join with a long separator",
        "{{ (['a'] * 1000000) | join('x' * 3000) }}",
        "memory",
        "memory limit",
        6.0,
    ),
    TemplateCase(
        "expandtabs with a wide tab", "{{ ('\t' * 900000).expandtabs(2000) }}", "memory", "memory limit", 6.0
    ),
    TemplateCase(
        "batch padded to a huge size",
        "{{ [1] | batch(2000000000, 'x') | list }}",
        "memory",
        "memory limit",
        6.0,
    ),
    TemplateCase(
        "+ concatenation past the output bound",
        "{{ ('x' * 900000) + ('x' * 900000) }}",
        "output",
        "characters of output",
        3.0,
    ),
    TemplateCase(
        "a large integer printed",
        "{{ 10 ** 5000 }}",
        "raised",
        "Exceeds the limit",
        3.0,
    ),
]


@dataclass(frozen=True)
class InputCase:
    """A bad input: ``build(tmp_path)`` returns the ``--model`` value (and optional ``--tc-chat-template``)."""

    name: str
    message: str
    seconds: float = 5.0


INPUTS = [
    InputCase("a path that does not exist", "no such directory, and not a Hub repo id"),
    InputCase("a Hub id, offline with an empty cache", "is not in the local Hugging Face cache"),
    InputCase("a directory with no tokenizer", "has no tokenizer files"),
    InputCase("malformed tokenizer_config.json", "is not valid JSON (line 1, column"),
    InputCase("a base model with no chat template", "has no chat template"),
    InputCase("an unknown --tc-chat-template name", "no such file, and model"),
    InputCase("a template file that is not UTF-8", "is not UTF-8 text; re-save it as UTF-8"),
    InputCase("a tokenizer that needs remote code", "never runs (no trust_remote_code)"),
    InputCase("chat_template of the wrong type", "chat_template must be a string or a list"),
]


# -------------------------------------------------------------------------------------- model directories
# A model directory read as untrusted (templatecheck/modeldir.py): links out of it, devices, FIFOs, sockets,
# directories named like files, huge and deeply nested files, bad token fields, hostile file names. Each case
# edits a copy of a correct model (``model``) and may use ``outside``, a folder beside it that holds
# ``secret.txt`` (the canary file, whose content is CANARY_VALUE) and ``secret.jinja`` (the same, as a template).


@dataclass(frozen=True)
class ModelDirCase:
    """A hostile model directory: ``build(model, outside)`` edits the copy and returns the ``--model`` value.
    With ``check`` ``None`` loading it is one error holding ``message``; otherwise it loads and ``check`` gives
    ``outcome`` with ``message`` in its message. ``seconds`` and ``megabytes`` bound the wall time and the
    peak of Python allocations (tracemalloc) of loading it and running the check."""

    name: str
    build: Callable[[Path, Path], Path]
    message: str
    check: str | None = None
    outcome: str = "failed"
    seconds: float = 1.0
    megabytes: float = 2.0


def _link(relative: str, target: str | Callable[[Path, Path], Path]) -> Callable[[Path, Path], Path]:
    """A builder that replaces ``relative`` with a link to ``target`` (a path, or one built from the dirs)."""

    def build(model: Path, outside: Path) -> Path:
        path = model / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()
        path.symlink_to(target(model, outside) if callable(target) else target)
        return model

    return build


def _replace(relative: str, make: Callable[[Path], None]) -> Callable[[Path, Path], Path]:
    """A builder that replaces ``relative`` with what ``make(path)`` creates there."""

    def build(model: Path, outside: Path) -> Path:
        path = model / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()
        make(path)
        return model

    return build


def _write(relative: str, content: str) -> Callable[[Path, Path], Path]:
    return _replace(relative, lambda path: path.write_text(content, encoding="utf-8"))


def _sparse(relative: str, size: int) -> Callable[[Path, Path], Path]:
    """A file of ``size`` bytes that takes no disk space (never read: the bound is checked first)."""

    def make(path: Path) -> None:
        with path.open("wb") as file:
            file.truncate(size)

    return _replace(relative, make)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _edit(relative: str, **fields: object) -> Callable[[Path, Path], Path]:
    """A builder that sets ``fields`` in the JSON object of ``relative``."""

    def build(model: Path, outside: Path) -> Path:
        path = model / relative
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        path.write_text(json.dumps({**data, **fields}), encoding="utf-8")
        return model

    return build


def _named(name: bytes) -> Callable[[Path, Path], Path]:
    """A builder that adds ``additional_chat_templates/<name>`` (raw bytes: names need not be UTF-8)."""

    def build(model: Path, outside: Path) -> Path:
        folder = model / "additional_chat_templates"
        folder.mkdir(exist_ok=True)
        (model / "chat_template.jinja").write_text(_CHAT, encoding="utf-8")
        with open(os.fsencode(folder) + b"/" + name, "wb") as file:
            file.write(_CHAT.encode())
        return model

    return build


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))


def _device(path: Path) -> None:
    """A character device (``/dev/zero``'s numbers); needs the privilege to create one, else the case skips."""
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))


def _snapshot(escape: bool) -> Callable[[Path, Path], Path]:
    """A Hugging Face cache layout: ``models--org--m/snapshots/REV/FILE -> ../../blobs/FILE``; with ``escape``
    the template links out of the repository instead."""

    def build(model: Path, outside: Path) -> Path:
        repo = model.parent / "models--org--m"
        blobs, snapshot = repo / "blobs", repo / "snapshots" / "0123abcd"
        blobs.mkdir(parents=True)
        snapshot.mkdir(parents=True)
        for file in sorted(model.iterdir()):
            file.rename(blobs / file.name)
            (snapshot / file.name).symlink_to(Path("../../blobs") / file.name)
        (blobs / "template").write_text(_CHAT, encoding="utf-8")
        target = outside / "secret.jinja" if escape else Path("../../blobs/template")
        (snapshot / "chat_template.jinja").symlink_to(target)
        return snapshot

    return build


def _linked_directory(model: Path, outside: Path) -> Path:
    link = model.parent / "model-link"
    link.symlink_to(model, target_is_directory=True)
    return link


def _inner_link(model: Path, outside: Path) -> Path:
    (model / "templates").mkdir()
    (model / "templates" / "chat.jinja").write_text(_CHAT, encoding="utf-8")
    (model / "chat_template.jinja").symlink_to("templates/chat.jinja")
    return model


def _chain(model: Path, outside: Path) -> Path:
    """A link to a link inside the directory that itself points out of it."""
    (model / "inner").symlink_to(outside / "secret.jinja")
    (model / "chat_template.jinja").symlink_to("inner")
    return model


def _escaping_folder(model: Path, outside: Path) -> Path:
    folder = outside / "templates"
    folder.mkdir()
    (folder / "leak.jinja").write_text(CANARY_VALUE)
    (model / "chat_template.jinja").write_text(_CHAT, encoding="utf-8")
    (model / "additional_chat_templates").symlink_to(folder, target_is_directory=True)
    return model


def _only_chat_template_json(content: str) -> Callable[[Path, Path], Path]:
    """The template moved from tokenizer_config.json to a chat_template.json holding ``content``."""

    def build(model: Path, outside: Path) -> Path:
        config = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
        config.pop("chat_template", None)
        (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        (model / "chat_template.json").write_text(content, encoding="utf-8")
        return model

    return build


_OUT = "outside the model directory"
_FIFO, _DIR = "is a FIFO (named pipe), not a file", "is a directory, not a file"
_DEEP = "nests JSON arrays and objects more than 64 levels deep"
_BIG_TEXT, _BIG_TOKENIZER = "over the limit of 16,777,216 bytes", "over the limit of 268,435,456 bytes"
_NOT_ID = "which is not a token id or a non-empty list of token ids"
_NOT_TOKEN = "which is not a token (a string of at most 1024 characters"
_NOT_NAME = "holds a control character or a byte that is not UTF-8; rename the template"
_EOS = "eos_token_id is {}, which is not a token id or a list of token ids of this tokenizer"
_SECRET = "secret.txt"

MODEL_DIRS = [
    # links out of the directory: named, never read
    ModelDirCase(
        "chat_template.jinja -> /proc/self/environ", _link("chat_template.jinja", "/proc/self/environ"), _OUT
    ),
    ModelDirCase(
        "chat_template.jinja -> canary file", _link("chat_template.jinja", lambda m, o: o / _SECRET), _OUT
    ),
    ModelDirCase(
        "chat_template.jinja -> ../outside/secret.txt",
        _link("chat_template.jinja", f"../outside/{_SECRET}"),
        _OUT,
    ),
    ModelDirCase("chat_template.jinja -> /dev/zero", _link("chat_template.jinja", "/dev/zero"), _OUT),
    ModelDirCase("a link to a link out of the directory", _chain, _OUT),
    ModelDirCase(
        "additional_chat_templates/x.jinja -> canary file",
        _link("additional_chat_templates/x.jinja", lambda m, o: o / "secret.jinja"),
        _OUT,
    ),
    ModelDirCase(
        "additional_chat_templates/x.jinja -> /proc/self/environ",
        _link("additional_chat_templates/x.jinja", "/proc/self/environ"),
        _OUT,
    ),
    ModelDirCase("additional_chat_templates/ -> a folder outside", _escaping_folder, _OUT),
    ModelDirCase(
        "tokenizer_config.json -> canary file", _link("tokenizer_config.json", lambda m, o: o / _SECRET), _OUT
    ),
    ModelDirCase("tokenizer.json -> /proc/self/environ", _link("tokenizer.json", "/proc/self/environ"), _OUT),
    ModelDirCase(
        "generation_config.json -> canary file",
        _link("generation_config.json", lambda m, o: o / _SECRET),
        _OUT,
    ),
    ModelDirCase("config.json -> /proc/self/environ", _link("config.json", "/proc/self/environ"), _OUT),
    ModelDirCase(
        "special_tokens_map.json -> canary file",
        _link("special_tokens_map.json", lambda m, o: o / _SECRET),
        _OUT,
    ),
    ModelDirCase("tokenizer.model -> /dev/zero", _link("tokenizer.model", "/dev/zero"), _OUT),
    ModelDirCase("a Hub cache snapshot linking out of its repository", _snapshot(escape=True), _OUT),
    # broken and looping links
    ModelDirCase(
        "chat_template.jinja, a broken link",
        _link("chat_template.jinja", "missing.jinja"),
        "is a broken link",
    ),
    ModelDirCase(
        "additional_chat_templates/x.jinja, a broken link",
        _link("additional_chat_templates/x.jinja", "/no/such/file"),
        "is a broken link",
    ),
    ModelDirCase(
        "chat_template.jinja, a link to itself",
        _link("chat_template.jinja", "chat_template.jinja"),
        "is a loop of links",
    ),
    # FIFOs, devices, sockets, directories: refused before any open, never a hang
    ModelDirCase("chat_template.jinja, a FIFO", _replace("chat_template.jinja", _fifo), _FIFO),
    ModelDirCase(
        "additional_chat_templates/x.jinja, a FIFO",
        _replace("additional_chat_templates/x.jinja", _fifo),
        _FIFO,
    ),
    ModelDirCase("tokenizer_config.json, a FIFO", _replace("tokenizer_config.json", _fifo), _FIFO),
    ModelDirCase("tokenizer.json, a FIFO", _replace("tokenizer.json", _fifo), _FIFO),
    ModelDirCase("generation_config.json, a FIFO", _replace("generation_config.json", _fifo), _FIFO),
    ModelDirCase("config.json, a FIFO", _replace("config.json", _fifo), _FIFO),
    ModelDirCase(
        "chat_template.jinja, a socket", _replace("chat_template.jinja", _socket), "is a socket, not a file"
    ),
    ModelDirCase(
        "chat_template.jinja, a character device",
        _replace("chat_template.jinja", _device),
        "is a character device",
    ),
    ModelDirCase("chat_template.jinja, a directory", _replace("chat_template.jinja", _directory), _DIR),
    ModelDirCase(
        "additional_chat_templates/x.jinja, a directory",
        _replace("additional_chat_templates/x.jinja", _directory),
        _DIR,
    ),
    ModelDirCase("tokenizer_config.json, a directory", _replace("tokenizer_config.json", _directory), _DIR),
    ModelDirCase("generation_config.json, a directory", _replace("generation_config.json", _directory), _DIR),
    # sizes, checked before reading
    ModelDirCase("chat_template.jinja of 17 MB", _sparse("chat_template.jinja", 17 * 2**20), _BIG_TEXT),
    ModelDirCase("tokenizer_config.json of 17 MB", _sparse("tokenizer_config.json", 17 * 2**20), _BIG_TEXT),
    ModelDirCase("generation_config.json of 1 GB", _sparse("generation_config.json", 2**30), _BIG_TEXT),
    ModelDirCase("tokenizer.json of 300 MB", _sparse("tokenizer.json", 300 * 2**20), _BIG_TOKENIZER),
    ModelDirCase(
        "additional_chat_templates/x.jinja of 4 GB",
        _sparse("additional_chat_templates/x.jinja", 2**32),
        _BIG_TEXT,
    ),
    # nesting and shapes of JSON
    ModelDirCase(
        "tokenizer_config.json 100,000 levels deep", _write("tokenizer_config.json", _deep(100_000)), _DEEP
    ),
    ModelDirCase("config.json 100,000 levels deep", _write("config.json", _deep(100_000)), _DEEP),
    ModelDirCase(
        "generation_config.json 100,000 levels deep", _write("generation_config.json", _deep(100_000)), _DEEP
    ),
    ModelDirCase("chat_template.json 65 levels deep", _only_chat_template_json(_deep(65)), _DEEP),
    ModelDirCase(
        "tokenizer_config.json, a list",
        _write("tokenizer_config.json", "[1, 2]"),
        "holds a JSON list, not an object",
    ),
    ModelDirCase(
        "tokenizer_config.json, a string",
        _write("tokenizer_config.json", '"chat"'),
        "holds a JSON str, not an object",
    ),
    ModelDirCase(
        "config.json, a number", _write("config.json", "1e400"), "holds a JSON float, not an object"
    ),
    ModelDirCase(
        "chat_template.json, a list", _only_chat_template_json("[]"), "holds a JSON list, not an object"
    ),
    ModelDirCase(
        "generation_config.json, a 5,000-digit integer",
        _write("generation_config.json", '{"eos_token_id": 1' + "0" * 5000 + "}"),
        "is not valid JSON (Exceeds the limit",
    ),
    # token ids of config.json and generation_config.json: one clear error naming the file and the value
    *(
        ModelDirCase(
            f"config.json eos_token_id {value!r}",
            _edit("config.json", eos_token_id=value),
            f"eos_token_id is {value!r}, {_NOT_ID}",
        )
        for value in ("abc", 1.5, -1, 1e20, {"id": 1027}, [1027, "x"], True, [], 1039)
    ),
    ModelDirCase(
        "config.json bos_token_id 'abc'",
        _edit("config.json", bos_token_id="abc"),
        f"bos_token_id is 'abc', {_NOT_ID}",
    ),
    ModelDirCase(
        "config.json pad_token_id -1", _edit("config.json", pad_token_id=-1), f"pad_token_id is -1, {_NOT_ID}"
    ),
    ModelDirCase(
        "generation_config.json bos_token_id 1.5",
        _edit("generation_config.json", bos_token_id=1.5),
        f"bos_token_id is 1.5, {_NOT_ID}",
    ),
    ModelDirCase(
        "generation_config.json pad_token_id [1, 'x']",
        _edit("generation_config.json", pad_token_id=[1, "x"]),
        f"pad_token_id is [1, 'x'], {_NOT_ID}",
    ),
    # eos_token_id of generation_config.json: the end_of_turn check's finding, the other checks still run
    *(
        ModelDirCase(
            f"generation_config.json eos_token_id {value!r}",
            _edit("generation_config.json", eos_token_id=value),
            _EOS.format(repr(value)),
            check="end_of_turn",
            megabytes=16.0,
            seconds=5.0,
        )
        for value in ("abc", 1.5, -1, 1e20, {"id": 1027}, [1027, "x"], True)
    ),
    # token fields of tokenizer_config.json and special_tokens_map.json
    ModelDirCase(
        "tokenizer_config.json eos_token 5",
        _edit("tokenizer_config.json", eos_token=5),
        f"eos_token is 5, {_NOT_TOKEN}",
    ),
    ModelDirCase(
        "tokenizer_config.json bos_token a list",
        _edit("tokenizer_config.json", bos_token=["<s>"]),
        f"bos_token is ['<s>'], {_NOT_TOKEN}",
    ),
    ModelDirCase(
        "tokenizer_config.json eos_token {'content': 7}",
        _edit("tokenizer_config.json", eos_token={"content": 7}),
        _NOT_TOKEN,
    ),
    ModelDirCase(
        "tokenizer_config.json eos_token of 5,000 characters",
        _edit("tokenizer_config.json", eos_token="x" * 5000),
        _NOT_TOKEN,
    ),
    ModelDirCase(
        "special_tokens_map.json pad_token true",
        _edit("special_tokens_map.json", pad_token=True),
        f"pad_token is True, {_NOT_TOKEN}",
    ),
    # hostile template names
    ModelDirCase("a template named with a newline", _named(b"a\nb.jinja"), _NOT_NAME),
    ModelDirCase("a template named with an escape sequence", _named(b"\x1b[2J.jinja"), _NOT_NAME),
    ModelDirCase("a template named with bytes that are not UTF-8", _named(b"\xff\xfe.jinja"), _NOT_NAME),
    ModelDirCase(
        "a template list entry named with a control character",
        _edit("tokenizer_config.json", chat_template=[{"name": "a\x07", "template": _CHAT}]),
        _NOT_NAME,
    ),
    # what stays readable: links inside the directory, a linked directory, the Hub cache, odd but printable names
    ModelDirCase(
        "chat_template.jinja -> a file inside the directory",
        _inner_link,
        "",
        check="renders",
        outcome="passed",
        seconds=5.0,
        megabytes=16.0,
    ),
    ModelDirCase(
        "the model directory is itself a link",
        _linked_directory,
        "",
        check="renders",
        outcome="passed",
        seconds=5.0,
        megabytes=16.0,
    ),
    ModelDirCase(
        "a Hub cache snapshot (every file a link into blobs/)",
        _snapshot(escape=False),
        "",
        check="renders",
        outcome="passed",
        seconds=5.0,
        megabytes=16.0,
    ),
    ModelDirCase(
        "a template named '<!-- x -->'",
        _named(b"<!-- x -->.jinja"),
        "",
        check="renders",
        outcome="passed",
        seconds=5.0,
        megabytes=16.0,
    ),
    ModelDirCase(
        "a template named in Japanese",
        _named("日本語.jinja".encode()),
        "",
        check="renders",
        outcome="passed",
        seconds=5.0,
        megabytes=16.0,
    ),
    ModelDirCase(
        "a template of a 200-character name",
        _named(b"n" * 200 + b".jinja"),
        "",
        check="renders",
        outcome="passed",
        seconds=5.0,
        megabytes=16.0,
    ),
    ModelDirCase(
        "eos_token as an AddedToken object",
        _edit(
            "tokenizer_config.json",
            eos_token={"__type": "AddedToken", "content": "<|im_end|>", "lstrip": False},
        ),
        "",
        check="renders",
        outcome="passed",
        seconds=5.0,
        megabytes=16.0,
    ),
]


# ------------------------------------------------------------------------------------------------ GGUF files

#: The GGUF file the GGUF cases start from (tokenizer metadata only; see fixtures/build_gguf.py).
GGUF_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gguf" / "llama-3-tiny.gguf"
_GGUF_NAME = "model.gguf"


def _gguf(make: Callable[[Path], None]) -> Callable[[Path, Path], Path]:
    """A builder that writes ``model.gguf`` into the model folder with ``make`` and returns its path."""

    def build(model: Path, outside: Path) -> Path:
        path = model / _GGUF_NAME
        make(path)
        return path

    return build


def _file(build: Callable[[Path, Path], Path]) -> Callable[[Path, Path], Path]:
    """``build``, answering the path of ``model.gguf`` rather than the model folder."""
    return lambda model, outside: build(model, outside) / _GGUF_NAME


def _raw(
    *kvs: tuple[str | bytes, int, bytes],
    version: int = 3,
    keys: int | None = None,
    tensors: tuple[bytes, ...] = (),
) -> bytes:
    """A GGUF file from its parts: ``(key, value type, encoded value)`` entries and tensor table entries."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs) if keys is None else keys)
    body = b"".join(_string(key) + struct.pack("<I", kind) + value for key, kind, value in kvs)
    return head + body + b"".join(tensors)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


_ARCH = ("general.architecture", 8, _string("llama"))


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _cut(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(GGUF_FIXTURE.read_bytes()[:size])

    return make


def _grown(size: int) -> Callable[[Path], None]:
    """The fixture, sparsely grown to ``size`` bytes (as large as a model's weights, without the disk)."""

    def make(path: Path) -> None:
        path.write_bytes(GGUF_FIXTURE.read_bytes())
        with path.open("r+b") as file:
            file.truncate(size)

    return make


def _written(**changes: object) -> Callable[[Path], None]:
    """The fixture's tokenizer metadata written with ``gguf``'s writer, with ``changes`` (key -> value, or
    ``None`` to leave the key out)."""

    def make(path: Path) -> None:
        import gguf

        source = gguf.GGUFReader(GGUF_FIXTURE)
        writer = gguf.GGUFWriter(str(path), "llama")
        for name, value in changes.items():
            if value is not None and name not in source.fields:
                writer.add_key_value(name, value, _type_of(value))
        for field in source.fields.values():
            if field.name.startswith("GGUF.") or field.name == "general.architecture":
                continue
            value = changes.get(field.name, field.contents())
            if value is not None:
                kind = field.types[0]
                writer.add_key_value(
                    field.name, value, kind, sub_type=field.types[-1] if len(field.types) > 1 else None
                )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.close()

    return make


def _type_of(value: object) -> Any:
    import gguf

    if isinstance(value, list):
        return gguf.GGUFValueType.ARRAY
    return gguf.GGUFValueType.STRING if isinstance(value, str) else gguf.GGUFValueType.UINT32


def _outside_gguf(model: Path, outside: Path) -> Path:
    (outside / "real.gguf").write_bytes(GGUF_FIXTURE.read_bytes())
    (model / _GGUF_NAME).symlink_to(outside / "real.gguf")
    return model / _GGUF_NAME


def _nested(depth: int) -> bytes:
    """An array nested ``depth`` deep around one uint8."""
    value = struct.pack("<B", 1)
    kind = 0
    for _ in range(depth):
        value, kind = struct.pack("<IQ", kind, 1) + value, 9
    return value


_TRUNCATED = "is truncated: it ends at byte"
_GGUF_FIX = "re-convert or re-download the file"

GGUF_FILES = [
    # links, FIFOs and devices named model.gguf: refused before any open
    ModelDirCase("model.gguf -> a GGUF outside its folder", _outside_gguf, _OUT),
    ModelDirCase("model.gguf -> /dev/zero", _file(_link(_GGUF_NAME, "/dev/zero")), _OUT),
    ModelDirCase("model.gguf -> /proc/self/environ", _file(_link(_GGUF_NAME, "/proc/self/environ")), _OUT),
    ModelDirCase("model.gguf, a broken link", _file(_link(_GGUF_NAME, "missing.gguf")), "is a broken link"),
    ModelDirCase("model.gguf, a FIFO", _file(_replace(_GGUF_NAME, _fifo)), _FIFO),
    ModelDirCase("model.gguf, a socket", _file(_replace(_GGUF_NAME, _socket)), "is a socket, not a file"),
    # truncated and foreign files
    ModelDirCase(
        "model.gguf of 10 bytes", _gguf(_cut(10)), f"{_TRUNCATED} 10, inside its metadata; {_GGUF_FIX}"
    ),
    ModelDirCase("model.gguf cut inside its token list", _gguf(_cut(2000)), f"{_TRUNCATED} 2,000"),
    ModelDirCase(
        "model.gguf, a text file", _gguf(_bytes(b"hello world\n" * 4)), "does not start with the GGUF magic"
    ),
    ModelDirCase("model.gguf of version 99", _gguf(_bytes(_raw(_ARCH, version=99))), "is GGUF version 99"),
    # absurd counts and lengths: refused as declared, never allocated or looped over
    ModelDirCase(
        "a token list of 2**40 entries",
        _gguf(_bytes(_raw(_ARCH, ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2**40))))),
        "declares 1,099,511,627,776 entries in tokenizer.ggml.tokens, over the limit of 4,194,304",
    ),
    ModelDirCase(
        "a token list of 4 million entries in 60 bytes",
        _gguf(_bytes(_raw(_ARCH, ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2**22))))),
        _TRUNCATED,
    ),
    ModelDirCase(
        "a template of 2**60 bytes",
        _gguf(_bytes(_raw(_ARCH, ("tokenizer.chat_template", 8, struct.pack("<Q", 2**60))))),
        "declares a string value of tokenizer.chat_template of 1,152,921,504,606,846,976 bytes, over 16,777,216",
    ),
    ModelDirCase(
        "2**63 metadata keys",
        _gguf(_bytes(_raw(keys=2**63))),
        "declares 9,223,372,036,854,775,808 metadata keys",
    ),
    ModelDirCase(
        "a tensor past the end of the file",
        _gguf(_bytes(_raw(_ARCH, tensors=(_string("blk.0") + struct.pack("<IQIQ", 1, 2**30, 0, 0),)))),
        "holds a tensor whose data lies past the end of the file",
    ),
    ModelDirCase(
        "a tensor of 2**31 dimensions",
        _gguf(_bytes(_raw(_ARCH, tensors=(_string("blk.0") + struct.pack("<I", 2**31),)))),
        "holds a tensor of 2,147,483,648 dimensions",
    ),
    ModelDirCase(
        "arrays nested 100 deep",
        _gguf(_bytes(_raw(_ARCH, ("x", 9, _nested(100))))),
        "nests arrays more than 4 deep in 'x'",
    ),
    ModelDirCase(
        "a value of type 99", _gguf(_bytes(_raw(_ARCH, ("x", 99, b"")))), "holds value type 99 for 'x'"
    ),
    ModelDirCase(
        "a key that is not UTF-8",
        _gguf(_bytes(_raw(_ARCH, (b"\xff\xfe", 8, _string("x"))))),
        "holds a key that is not UTF-8",
    ),
    # values that parse but do not fit the vocabulary
    ModelDirCase(
        "eos_token_id 99999",
        _gguf(_written(**{"tokenizer.ggml.eos_token_id": 99999})),
        "has tokenizer.ggml.eos_token_id 99999, not a token id of its 1039 tokens",
    ),
    ModelDirCase(
        "no token list",
        _gguf(_written(**{"tokenizer.ggml.tokens": None, "tokenizer.ggml.token_type": None})),
        "has no token list (tokenizer.ggml.tokens)",
    ),
    ModelDirCase(
        "three token types for 1039 tokens",
        _gguf(_written(**{"tokenizer.ggml.token_type": [1, 1, 1]})),
        "has 3 token types for 1039 tokens",
    ),
    ModelDirCase(
        "a template name with an escape character",
        _gguf(
            _written(**{"tokenizer.chat_templates": ["x\x1b[2J"], "tokenizer.chat_template.x\x1b[2J": "hi"})
        ),
        "not a list of printable names",
    ),
    ModelDirCase(
        "a listed template that is missing",
        _gguf(_written(**{"tokenizer.chat_templates": ["tool_use"]})),
        "lists the chat template 'tool_use', but holds no tokenizer.chat_template.tool_use",
    ),
    ModelDirCase(
        "no chat template",
        _gguf(_written(**{"tokenizer.chat_template": None})),
        "has no chat template (looked in tokenizer.chat_template and tokenizer.chat_templates)",
    ),
    # what loads: a file as large as a model's weights reads only its metadata
    ModelDirCase(
        "model.gguf of 64 GB (sparse)", _gguf(_grown(2**36)), "default", check="loads", megabytes=4.0
    ),
]
