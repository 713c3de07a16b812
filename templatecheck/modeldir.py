"""A model directory read as untrusted input: which files are read, how, and what their token fields may hold.

A model repository is untrusted. Its files may be links out of it (``chat_template.jinja`` linked to
``/proc/self/environ`` would put the process environment into every report), devices (``/dev/zero`` reads
until memory runs out), FIFOs (an open that never returns), directories named like files, or huge and deeply
nested JSON. Every file templatecheck reads from a model directory, and every file transformers reads when it
loads the tokenizer (:func:`check_directory`, before it does), must be:

- a regular file reached inside the model directory: a link may point elsewhere inside it; in a Hugging Face
  cache snapshot (``.../models--org--name/snapshots/REV``, where every file is a link into the repository's
  ``blobs/``) the boundary is the repository's cache folder, the one that holds ``snapshots/`` and ``blobs/``;
- at most :data:`TEXT_LIMIT` bytes (templates and configuration JSON) or :data:`TOKENIZER_LIMIT` bytes
  (``tokenizer.json``, ``tekken.json``, vocabularies), checked before it is read;
- for JSON, nested at most :data:`MAX_DEPTH` levels.

Anything else is one :class:`~templatecheck.errors.TemplatecheckError` naming the path (never its content).
The file is opened without following a final link and without blocking, and checked again on the open
descriptor, so a file swapped for a FIFO after the check still cannot hang the run.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from templatecheck.errors import TemplatecheckError

#: The most bytes read from a template or a configuration JSON file (16 MiB).
TEXT_LIMIT = 16 * 2**20
#: The most bytes of a tokenizer file: ``tokenizer.json``, ``tekken.json``, vocabularies (256 MiB).
TOKENIZER_LIMIT = 256 * 2**20
#: The deepest nesting of JSON arrays and objects read (real tokenizer files nest fewer than 10 levels).
MAX_DEPTH = 64
#: The longest token string a token field may hold (``bos_token``, ``eos_token``, ...).
MAX_TOKEN_CHARS = 1024

#: The configuration files and templates, read with :data:`TEXT_LIMIT`.
TEXT_FILES = frozenset(
    {
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "chat_template.json",
        "chat_template.jinja",
        "generation_config.json",
        "config.json",
    }
)
#: The configuration files that must hold a JSON object.
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "config.json")
#: Further names transformers and mistral-common read when they load a tokenizer (:data:`TOKENIZER_LIMIT`).
TOKENIZER_PATTERNS = ("tokenizer*", "tekken.json", "vocab*", "merges*", "spiece*", "*.model", "*.tiktoken")
#: The folder of named templates, whose ``*.jinja`` files are read too.
TEMPLATE_FOLDER = "additional_chat_templates"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def boundary(directory: Path) -> Path:
    """The folder no file of ``directory`` may leave: the directory itself (links resolved once), or, for a
    Hugging Face cache snapshot, the repository's cache folder (``snapshots/REV`` -> the folder holding
    ``snapshots/`` and ``blobs/``)."""
    root = directory.resolve()
    if root.parent.name == "snapshots" and (root.parent.parent / "blobs").is_dir():
        return root.parent.parent
    return root


def limit_for(name: str) -> int:
    """The size bound of a file of the model directory called ``name``."""
    return TEXT_LIMIT if name in TEXT_FILES or name.endswith(".jinja") else TOKENIZER_LIMIT


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


_TOO_BIG = "templatecheck reads no larger file of its kind (see 'Model directories' in the README)"
_REPLACE = (
    "templatecheck reads only regular files inside the model directory: replace it with the file itself"
)


def _unsafe(path: Path, why: str, step: str = _REPLACE) -> TemplatecheckError:
    return TemplatecheckError(f"model file {str(path)!r} {why}; {step}")


def checked(path: Path, root: Path | None, limit: int) -> Path:
    """The real path of ``path`` once it is known to be a regular file of at most ``limit`` bytes inside
    ``root`` (``None``: anywhere, for a file the user named); :class:`TemplatecheckError` otherwise."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise _unsafe(path, _unfollowable(path, exc)) from None
    if root is not None and not target.is_relative_to(root):
        raise _unsafe(path, f"is a link to {str(target)!r}, outside the model directory")
    info = target.stat()
    if not stat.S_ISREG(info.st_mode):
        raise _unsafe(path, f"is {_kind(info.st_mode)}, not a file")
    if info.st_size > limit:
        raise _unsafe(
            path,
            f"holds {info.st_size:,} bytes, over the limit of {limit:,} bytes",
            _TOO_BIG,
        )
    return target


def _unfollowable(path: Path, exc: Exception) -> str:
    """Why ``path`` cannot be resolved: a broken link, a loop of links, or a path through a file."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a loop of links"
        if error.errno == errno.ENOENT and os.path.islink(path):
            return "is a broken link (its target does not exist)"
    return f"cannot be followed ({type(exc).__name__})"


def open_checked(path: Path, root: Path | None, limit: int) -> BinaryIO:
    """``path`` opened for reading once :func:`checked` accepts it: without following a final link, without
    blocking, and checked again on the open descriptor (a file swapped for a FIFO since is refused)."""
    target = checked(path, root, limit)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        raise _unsafe(path, f"cannot be opened ({exc.strerror})") from None
    file = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # swapped since the check
        file.close()
        raise _unsafe(path, f"is {_kind(mode)}, not a file")
    return file


def read_bytes(path: Path, root: Path | None, limit: int) -> bytes:
    """The content of ``path``, checked with :func:`checked`, read without blocking and never past ``limit``."""
    with open_checked(path, root, limit) as file:
        info = os.fstat(file.fileno())
        # Read what fstat promises and one byte more, so a file that grew since is noticed; never past ``limit``.
        data = file.read(min(info.st_size, limit) + 1)
        while info.st_size < len(data) <= limit:
            more = file.read(min(2**20, limit + 1 - len(data)))
            if not more:
                break
            data += more
    if len(data) > limit:
        raise _unsafe(path, f"grew past the limit of {limit:,} bytes while it was read", _TOO_BIG)
    return data


def read_text(path: Path, root: Path | None, limit: int = TEXT_LIMIT) -> str:
    """``path`` read as UTF-8 text (see :func:`read_bytes`)."""
    try:
        return read_bytes(path, root, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise TemplatecheckError(f"{path} is not UTF-8 text; re-save it as UTF-8") from None


def read_json(path: Path, root: Path | None, limit: int = TEXT_LIMIT) -> Any:
    """``path`` parsed as JSON nested at most :data:`MAX_DEPTH` levels (see :func:`read_bytes`)."""
    text = read_text(path, root, limit)
    try:
        value = json.loads(text)
        deep = not _shallow(value, MAX_DEPTH)
    except json.JSONDecodeError as exc:
        raise TemplatecheckError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix or replace the file"
        ) from None
    except RecursionError:  # deeper than the parser's own stack allows
        deep = True
    except ValueError as exc:  # an integer of more digits than Python converts
        raise TemplatecheckError(f"{path} is not valid JSON ({exc}); fix or replace the file") from None
    if deep:
        raise TemplatecheckError(
            f"{path} nests JSON arrays and objects more than {MAX_DEPTH} levels deep; "
            "templatecheck reads no such file: fix or replace it"
        )
    return value


def _shallow(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts at most ``limit`` levels (walked without recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return True


def read_object(path: Path, root: Path | None) -> dict[str, Any]:
    """A configuration file that must hold a JSON object (``tokenizer_config.json``, ``config.json``)."""
    value = read_json(path, root, limit_for(path.name))
    if not isinstance(value, dict):
        raise TemplatecheckError(
            f"{path} holds a JSON {type(value).__name__}, not an object ({shown(value)}); "
            "fix or replace the file"
        )
    return value


def present(path: Path) -> bool:
    """Whether anything is at ``path``: a file, a directory, a FIFO, a link (even a broken one)."""
    return os.path.lexists(path)


def read_files(directory: Path) -> list[Path]:
    """The entries of ``directory`` that transformers or templatecheck read: the configuration files and
    templates, the tokenizer files, and ``additional_chat_templates/*.jinja``."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name in TEXT_FILES or any(fnmatch.fnmatch(entry.name, p) for p in TOKENIZER_PATTERNS):
                found.append(directory / entry.name)
    folder = directory / TEMPLATE_FOLDER
    if present(folder):
        checked_folder = folder.resolve()
        if not checked_folder.is_relative_to(boundary(directory)):
            raise _unsafe(folder, f"is a link to {str(checked_folder)!r}, outside the model directory")
        if checked_folder.is_dir():
            found += sorted(folder.glob("*.jinja"))
    return sorted(found)


def check_directory(directory: Path) -> Path:
    """Check every file of ``directory`` that transformers or templatecheck read (:func:`read_files`) with
    :func:`checked`; the boundary (:func:`boundary`) on success."""
    root = boundary(directory)
    for path in read_files(directory):
        checked(path, root, limit_for(path.name))
    return root


# -------------------------------------------------------------------------------------------- token fields

#: Fields that hold a token id: an id, a non-empty list of ids, or null.
ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")
#: Fields that hold a token: a string, an ``AddedToken`` object (``{"content": ...}``), or null.
TOKEN_FIELDS = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token")
#: The largest id accepted where the vocabulary size is not known (ids are 32-bit in every tokenizer).
_MAX_ID = 2**31


def shown(value: Any) -> str:
    """``repr(value)``, cut to 80 characters: how a value of a model's file appears in a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_token_id(value: Any, vocabulary: int = _MAX_ID) -> bool:
    """Whether ``value`` is a token id of a vocabulary of ``vocabulary`` tokens (booleans are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocabulary


def check_ids(config: dict[str, Any], path: Path, vocabulary: int | None, skip: tuple[str, ...] = ()) -> None:
    """``bos_token_id``, ``eos_token_id`` and ``pad_token_id`` of ``config`` (read from ``path``) are null,
    token ids below ``vocabulary``, or non-empty lists of them; one clear error otherwise."""
    bound = vocabulary if vocabulary is not None else _MAX_ID
    for name in ID_FIELDS:
        value = config.get(name)
        if name in skip or value is None:
            continue
        entries = value if isinstance(value, list) else [value]
        if entries and all(is_token_id(e, bound) for e in entries):
            continue
        raise TemplatecheckError(
            f"{path}: {name} is {shown(value)}, which is not a token id or a non-empty list of token ids "
            f"(integers from 0 to {bound - 1:,}); fix the file"
        )


def check_tokens(config: dict[str, Any], path: Path) -> None:
    """The token fields of ``config`` (read from ``path``: ``tokenizer_config.json``,
    ``special_tokens_map.json``) are null, strings, or ``AddedToken`` objects with a string ``content``, of at
    most :data:`MAX_TOKEN_CHARS` characters; one clear error otherwise."""
    for name in TOKEN_FIELDS:
        value = config.get(name)
        content = value.get("content") if isinstance(value, dict) else value
        if value is None or (isinstance(content, str) and len(content) <= MAX_TOKEN_CHARS):
            continue
        raise TemplatecheckError(
            f"{path}: {name} is {shown(value)}, which is not a token (a string of at most "
            f'{MAX_TOKEN_CHARS} characters, or an object {{"content": "<token>", ...}}); fix the file'
        )


def vocabulary_size(config: dict[str, Any] | None) -> int | None:
    """``vocab_size`` of ``config.json`` when it is a positive integer."""
    size: Any = (config or {}).get("vocab_size")
    return int(size) if is_token_id(size) and size > 0 else None


__all__ = [
    "MAX_DEPTH",
    "TEXT_LIMIT",
    "TOKENIZER_LIMIT",
    "boundary",
    "check_directory",
    "check_ids",
    "check_tokens",
    "checked",
    "is_token_id",
    "open_checked",
    "present",
    "read_bytes",
    "read_files",
    "read_json",
    "read_object",
    "read_text",
    "shown",
]
