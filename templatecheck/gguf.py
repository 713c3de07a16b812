"""A GGUF file as a model: its chat templates, token list, special-token ids and BOS/EOS flags, read as
untrusted input, and the tokenizer transformers builds from it.

A GGUF file (llama.cpp's format) carries its own copy of what a model directory spreads over several files:
``tokenizer.chat_template`` and the named ``tokenizer.chat_template.<name>`` listed in
``tokenizer.chat_templates``, the vocabulary (``tokenizer.ggml.tokens``) with each token's type
(``tokenizer.ggml.token_type``: 3 is a control token), the BOS/EOS/EOT/EOM ids and the ``add_bos_token`` /
``add_eos_token`` flags. The file is untrusted: its metadata is parsed here, before transformers reads it,
from a descriptor opened as :mod:`templatecheck.modeldir` opens a model's files (a regular file inside its
folder, never a FIFO or a link out), with every count bounded: at most :data:`METADATA_LIMIT` bytes of
metadata, :data:`MAX_ITEMS` entries in an array, :data:`MAX_TENSORS` tensors whose data lies inside the file.
A truncated file, an absurd length or a bad value is one :class:`~templatecheck.errors.TemplatecheckError`
naming the file. (``gguf.GGUFReader`` maps the whole file and trusts its counts, so it reads only files that
passed here, through transformers.) The weights are never read: the generation layer skips a GGUF.

Reading needs the ``gguf`` package (``pip install 'templatecheck[gguf]'``): transformers' GGUF loader uses
it, and so does :mod:`fixtures.build_gguf`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from templatecheck import modeldir
from templatecheck.errors import TemplatecheckError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: The most bytes of metadata (key-value pairs and the tensor table) read from the start of a file (256 MiB).
METADATA_LIMIT = modeldir.TOKENIZER_LIMIT
#: The most entries of one metadata array (a real vocabulary holds a few hundred thousand tokens).
MAX_ITEMS = 2**22
#: The most metadata keys and the most tensors a file may declare.
MAX_KEYS = 2**16
MAX_TENSORS = 2**20
#: How deep arrays of arrays may nest.
MAX_NESTING = 4
#: Token types of ``tokenizer.ggml.token_type`` (llama.cpp's ``LLAMA_TOKEN_TYPE_*``).
CONTROL, USER_DEFINED = 3, 4

_INSTALL = "pip install 'templatecheck[gguf]'"
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_LENGTH = struct.Struct("<Q")


def is_gguf(path: Path) -> bool:
    """Whether ``path`` names a GGUF file (by its suffix; what is there is checked when it is read)."""
    return path.suffix.lower() == ".gguf"


def require_package(label: str) -> None:
    """The ``gguf`` package is installed, else one error naming the extra that installs it."""
    if importlib.util.find_spec("gguf") is None:
        raise TemplatecheckError(
            f"model {label!r} is a GGUF file, and reading one needs the gguf package: {_INSTALL}"
        )


@dataclass(frozen=True)
class GgufFile:
    """What templatecheck reads of a GGUF file: its metadata, every value checked."""

    path: Path
    metadata: dict[str, Any] = field(repr=False)

    @property
    def tokens(self) -> list[str]:
        return list(self.metadata.get("tokenizer.ggml.tokens") or [])

    @property
    def token_types(self) -> list[int]:
        return list(self.metadata.get("tokenizer.ggml.token_type") or [])

    def token_id(self, name: str) -> int | None:
        """``tokenizer.ggml.<name>_token_id`` (``bos``, ``eos``, ``eot``, ``eom``), or ``None``."""
        value = self.metadata.get(f"tokenizer.ggml.{name}_token_id")
        return value if isinstance(value, int) else None

    def flag(self, name: str) -> bool | None:
        """``tokenizer.ggml.add_bos_token`` / ``add_eos_token``, or ``None`` when the file does not say."""
        value = self.metadata.get(f"tokenizer.ggml.{name}")
        return bool(value) if value is not None else None

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The ids generation stops on, as the file names them: EOS, EOT and EOM."""
        found = (self.token_id(n) for n in ("eos", "eot", "eom"))
        return tuple(dict.fromkeys(i for i in found if i is not None))

    def templates(self) -> dict[str, str]:
        """Every chat template of the file by name: ``default`` (``tokenizer.chat_template``), then each name of
        ``tokenizer.chat_templates`` (``tokenizer.chat_template.<name>``)."""
        found: dict[str, str] = {}
        if isinstance(self.metadata.get("tokenizer.chat_template"), str):
            found["default"] = self.metadata["tokenizer.chat_template"]
        for name in self.metadata.get("tokenizer.chat_templates") or []:
            source = self.metadata.get(f"tokenizer.chat_template.{name}")
            if not isinstance(source, str):
                raise self.error(
                    f"lists the chat template {name!r}, but holds no tokenizer.chat_template.{name}"
                )
            found[name] = source
        return found

    def configs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The equivalents of ``generation_config.json`` (the stop ids) and ``config.json`` of a directory."""
        bos = self.token_id("bos")
        generation = {"bos_token_id": bos, "eos_token_id": list(self.stop_ids)}
        config = {"vocab_size": len(self.tokens), "bos_token_id": bos, "eos_token_id": self.token_id("eos")}
        return generation, config

    def error(self, why: str) -> TemplatecheckError:
        return _error(self.path, why)

    def check(self) -> GgufFile:
        """The token fields hold what they should: a token list, types of the same length, ids inside it,
        template names that are printable text; one error naming the file otherwise."""
        tokens, types = self.metadata.get("tokenizer.ggml.tokens"), self.token_types
        if not (isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens)):
            raise self.error("has no token list (tokenizer.ggml.tokens)")
        if types and (len(types) != len(tokens) or not all(isinstance(t, int) for t in types)):
            raise self.error(
                f"has {len(types)} token types for {len(tokens)} tokens (tokenizer.ggml.token_type)"
            )
        for name in ("bos", "eos", "eot", "eom", "unknown", "padding"):
            value = self.metadata.get(f"tokenizer.ggml.{name}_token_id")
            if value is not None and not modeldir.is_token_id(value, len(tokens)):
                raise self.error(
                    f"has tokenizer.ggml.{name}_token_id {modeldir.shown(value)}, not a token id of its "
                    f"{len(tokens)} tokens"
                )
        names = self.metadata.get("tokenizer.chat_templates") or []
        if not isinstance(names, list) or not all(isinstance(n, str) and n.isprintable() for n in names):
            raise self.error(f"has template names {modeldir.shown(names)}, not a list of printable names")
        return self

    @cached_property
    def key(self) -> str:
        """What identifies the file's tokenizer: the sha256 of its architecture and tokenizer metadata."""
        digest = hashlib.sha256()
        for name in sorted(
            k for k in self.metadata if k.startswith("tokenizer.ggml.") or k == "general.architecture"
        ):
            digest.update(f"{name}\0{self.metadata[name]!r}\0".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- the reader


class _Cursor:
    """The start of a file read on demand, never past :data:`METADATA_LIMIT` bytes or the file's end."""

    def __init__(self, file: BinaryIO, path: Path, size: int) -> None:
        self.file, self.path, self.size = file, path, size
        self.data = bytearray()
        self.pos = 0

    def _fill(self, end: int) -> None:
        """Read the file up to byte ``end`` (in chunks of at least 1 MiB), never past its end or the limit."""
        if end > self.size:
            raise _error(self.path, f"is truncated: it ends at byte {self.size:,}, inside its metadata")
        if end > METADATA_LIMIT:
            raise _error(self.path, f"holds more than {METADATA_LIMIT:,} bytes of metadata")
        while len(self.data) < end:
            more = self.file.read(min(max(end - len(self.data), 2**20), self.size - len(self.data)))
            if not more:
                raise _error(self.path, "is truncated (it shrank while it was read)")
            self.data += more

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            self._fill(end)
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self, what: str) -> str:
        return self.strings(1, what)[0]

    def strings(self, count: int, what: str) -> list[str]:
        """``count`` strings in a row (a token list, merges): one tight loop, as a vocabulary holds 10^5."""
        found, data, pos = [], self.data, self.pos
        for _ in range(count):
            if pos + 8 > len(data):
                self._fill(pos + 8)
            (length,) = _LENGTH.unpack_from(data, pos)
            if length > modeldir.TEXT_LIMIT:
                raise _error(
                    self.path, f"declares a {what} of {length:,} bytes, over {modeldir.TEXT_LIMIT:,}"
                )
            start, pos = pos + 8, pos + 8 + length
            if pos > len(data):
                self._fill(pos)
            try:
                found.append(data[start:pos].decode("utf-8"))
            except UnicodeDecodeError:
                raise _error(self.path, f"holds a {what} that is not UTF-8") from None
        self.pos = pos
        return found

    def count(self, limit: int, what: str) -> int:
        value = int(self.unpack("<Q"))
        if value > limit:
            raise _error(self.path, f"declares {value:,} {what}, over the limit of {limit:,}")
        return value

    def value(self, kind: int, key: str, depth: int = 0) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string(f"string value of {key}")
        if kind == _ARRAY:
            if depth >= MAX_NESTING:
                raise _error(self.path, f"nests arrays more than {MAX_NESTING} deep in {key!r}")
            item = self.unpack("<I")
            count = self.count(MAX_ITEMS, f"entries in {key}")
            if item == _STRING:
                return self.strings(count, f"string value of {key}")
            if item in _SCALARS:  # one unpack for the whole array (token types, scores)
                fmt = "<" + _SCALARS[item][1] * count
                return list(struct.unpack(fmt, self.take(struct.calcsize(fmt))))
            return [self.value(item, key, depth + 1) for _ in range(count)]
        raise _error(self.path, f"holds value type {kind} for {key!r}, which is not a GGUF value type")


def _error(path: Path, why: str) -> TemplatecheckError:
    return TemplatecheckError(f"GGUF file {str(path)!r} {why}; re-convert or re-download the file")


def read(path: Path, label: str) -> GgufFile:
    """The metadata of the GGUF file at ``path`` (a regular file inside its folder), every count bounded and
    every tensor inside the file (see the module's docstring)."""
    require_package(label)
    with modeldir.open_checked(path, modeldir.boundary(path.parent), sys.maxsize) as file:
        cursor = _Cursor(file, path, os.fstat(file.fileno()).st_size)
        if cursor.take(4) != b"GGUF":
            raise _error(path, "does not start with the GGUF magic bytes: it is not a GGUF file")
        version = cursor.unpack("<I")
        if version not in (2, 3):
            raise _error(path, f"is GGUF version {version}; templatecheck reads versions 2 and 3")
        tensors, keys = cursor.count(MAX_TENSORS, "tensors"), cursor.count(MAX_KEYS, "metadata keys")
        metadata: dict[str, Any] = {}
        for _ in range(keys):
            key = cursor.string("key")
            metadata[key] = cursor.value(cursor.unpack("<I"), key)
        _check_tensors(cursor, tensors, metadata)
    if not isinstance(metadata.get("general.architecture"), str):
        raise _error(path, "has no general.architecture")
    return GgufFile(path, metadata).check()


def _check_tensors(cursor: _Cursor, count: int, metadata: dict[str, Any]) -> None:
    """Every tensor of the table has a known type and its data lies inside the file."""
    entries = []
    for _ in range(count):
        cursor.string("tensor name")
        rank = cursor.unpack("<I")
        if rank > 8:
            raise _error(cursor.path, f"holds a tensor of {rank:,} dimensions (GGUF tensors have at most 4)")
        dims = [cursor.unpack("<Q") for _ in range(rank)]
        kind, offset = cursor.unpack("<I"), cursor.unpack("<Q")
        entries.append((dims, kind, offset))
    alignment = metadata.get("general.alignment", 32)
    if not (isinstance(alignment, int) and 0 < alignment <= 2**16):
        raise _error(cursor.path, f"has general.alignment {modeldir.shown(alignment)}")
    start = -(-cursor.pos // alignment) * alignment
    if not entries:
        return
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for dims, kind, offset in entries:
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise _error(cursor.path, f"holds a tensor of unknown type {kind}") from None
        elements = 1
        for dim in dims:
            elements *= dim
        if start + offset + elements // block * size > cursor.size:
            raise _error(cursor.path, "holds a tensor whose data lies past the end of the file (truncated)")


# ------------------------------------------------------------------------------------------- the tokenizer

_TOKENIZERS: dict[str, PreTrainedTokenizerBase] = {}


def tokenizer(source: GgufFile, label: str) -> PreTrainedTokenizerBase:
    """The tokenizer transformers builds from the file (``AutoTokenizer.from_pretrained(dir,
    gguf_file=name)``), from a private folder that holds only a link to the file, so no other file of its
    folder is read; loaded once per process for files whose tokenizer metadata is identical."""
    if source.key in _TOKENIZERS:
        return _TOKENIZERS[source.key]
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        with tempfile.TemporaryDirectory(prefix="templatecheck-gguf-") as folder:
            (Path(folder) / "model.gguf").symlink_to(source.path.resolve())
            loaded = AutoTokenizer.from_pretrained(folder, gguf_file="model.gguf", trust_remote_code=False)
    except ModuleNotFoundError as exc:
        raise TemplatecheckError(
            f"model {label!r}: transformers' GGUF reader needs {exc.name}, which is not installed: "
            f"{_INSTALL}{' torch' if exc.name == 'torch' else ''}"
        ) from None
    except Exception as exc:
        raise TemplatecheckError(
            f"model {label!r}: transformers builds no tokenizer from {source.path} ({type(exc).__name__}: "
            f"{modeldir.shown(str(exc))}); transformers reads GGUF tokenizers of the models gpt2, llama, t5 "
            "and gemma4 (tokenizer.ggml.model)"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    _TOKENIZERS[source.key] = loaded
    return loaded


__all__ = ["CONTROL", "METADATA_LIMIT", "GgufFile", "is_gguf", "read", "require_package", "tokenizer"]
