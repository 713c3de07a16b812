"""What is under test: a model's tokenizer, its named chat templates and its generation settings.

A model is a local directory or a Hub repo id (``org/name`` or ``org/name@revision``). For a Hub id only the
files the checks read are downloaded, through ``huggingface_hub`` (its cache, progress bars, ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` apply). Templates are read from every place transformers reads them, with its precedence:
``chat_template.jinja`` and ``additional_chat_templates/*.jinja`` when present, else the ``chat_template``
entry of ``tokenizer_config.json`` (a string, or a list of named templates), else a processor's
``chat_template.json``. The tokenizer is loaded with ``AutoTokenizer`` on first use, never with
``trust_remote_code``. Every file of the directory is read as untrusted input (:mod:`templatecheck.modeldir`:
regular files inside the directory only, size and nesting bounds, token fields validated).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from templatecheck import conversation, gguf, modeldir
from templatecheck.errors import TemplatecheckError
from templatecheck.options import Options
from templatecheck.render import Call, Limits, Rendered, Renderer, RenderError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from templatecheck.gguf import GgufFile

#: What a Hub download fetches: everything the static checks read, never weights.
CHECK_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "tekken.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "additional_chat_templates/*.jinja",
    "generation_config.json",
    "config.json",
)

#: What ``--tc-generate`` downloads as well, only then: the weights, as safetensors.
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json")

#: A Hub repo id: ``owner/name``, each part letters, digits and ``-_.``, not starting with ``-`` or ``.``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9_][\w.-]*$")


@dataclass(frozen=True)
class ModelRef:
    """A model as the user named it: a directory, or a Hub id with an optional revision."""

    text: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """A directory, else an ``owner/name[@revision]`` Hub id; anything else is an error naming the value
        (a bare ``name`` is never looked up on the Hub: it is a mistyped path far more often than a model)."""
        path = Path(text).expanduser()
        if path.is_dir() or (os.path.lexists(path) and gguf.is_gguf(path)):
            return cls(text, path=path)
        if path.exists():
            raise TemplatecheckError(
                f"model {text!r} is a file, not a directory: pass the model's directory, or a .gguf file"
            )
        repo_id, at, revision = text.partition("@")
        looks_like_path = text.startswith((".", "/", "~")) or "\\" in text
        if looks_like_path or not _HUB_ID.match(repo_id) or (at and not revision):
            raise TemplatecheckError(
                f"model {text!r}: no such directory, and not a Hub repo id (expected 'owner/name' or "
                "'owner/name@revision'); check the path, or give the Hub id with its owner"
            )
        return cls(text, repo_id=repo_id, revision=revision or None)

    @property
    def is_gguf(self) -> bool:
        """Whether the model is a GGUF file (:mod:`templatecheck.gguf`) rather than a directory."""
        return self.path is not None and gguf.is_gguf(self.path)

    @property
    def name(self) -> str:
        """The name ids, summaries, reports and baselines carry: the directory's own name (``.`` is named by
        the folder it resolves to), or the Hub id with the revision asked for (``owner/name@rev``)."""
        if self.repo_id is not None:
            return self.repo_id + (f"@{self.revision}" if self.revision else "")
        assert self.path is not None
        return self.path.resolve().name or str(self.path)


def short_name(text: str) -> str:
    """The name of a model given as ``text`` that did not load: its folder's own name for a path (``.`` and
    ``..`` resolved), else the text itself (``owner/name@rev``)."""
    path = Path(text).expanduser()
    if text.startswith((".", "/", "~")) or "\\" in text or path.exists():
        return path.resolve().name or text
    return text


@dataclass(frozen=True)
class Template:
    """One named chat template and the file it came from."""

    name: str
    source: str
    origin: str

    @property
    def key(self) -> tuple[str, str]:
        """What the static checks read of the template: whether it is a ``tool_use`` template (one transformers
        selects only with tools, named so in a model, or ``<file>#tool_use`` in a corpus) and its text. Two
        templates with one key get the same verdicts (a folder of fine-tunes' templates holds many copies of
        one), so what was learnt of one, and its findings, is kept under the key for the other."""
        if self.name == "tool_use":
            return ("tool_use", self.source)
        return ("#tool_use" if self.name.endswith("#tool_use") else "", self.source)


def resolve(ref: ModelRef, patterns: tuple[str, ...] = CHECK_FILES) -> Path:
    """The local directory for ``ref``, downloading the files of a Hub model that match ``patterns`` if needed."""
    if ref.path is not None:
        return ref.path
    assert ref.repo_id is not None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=list(patterns)))
    except GatedRepoError:
        raise TemplatecheckError(
            f"model {ref.text!r} is gated: accept its terms on the Hub, then set HF_TOKEN or run `hf auth login`"
        ) from None
    except RevisionNotFoundError:
        raise TemplatecheckError(
            f"model {ref.text!r}: revision {ref.revision!r} does not exist; check the branch, tag or commit"
        ) from None
    except RepositoryNotFoundError:
        raise TemplatecheckError(
            f"model {ref.text!r}: no such repository on the Hub (or it is private: set HF_TOKEN); "
            "check the id, or pass a local directory"
        ) from None
    except LocalEntryNotFoundError:
        raise TemplatecheckError(
            f"model {ref.text!r} is not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline or HF_HUB_OFFLINE=1); download it once while online, or pass a local directory"
        ) from None
    except HFValidationError as exc:
        raise TemplatecheckError(f"model {ref.text!r} is not a valid Hub repo id: {exc}") from None


def _name_ok(name: str, where: Path) -> str:
    """A template name as read from ``where``; refused unless it is printable text (it becomes a test id, a
    pin name and a report heading, so a control character or an undecodable byte would reach the terminal)."""
    if not name.isprintable():
        raise TemplatecheckError(
            f"{str(where)!r}: the template name {name!r} holds a control character or a byte that is not "
            "UTF-8; rename the template"
        )
    return name


def read_templates(directory: Path) -> dict[str, Template]:
    """Every named chat template of the model in ``directory``, as transformers would load them; every file is
    read as untrusted (:mod:`templatecheck.modeldir`)."""
    root = modeldir.boundary(directory)
    found: dict[str, Template] = {}
    jinja = directory / "chat_template.jinja"
    if modeldir.present(jinja):
        found["default"] = Template("default", modeldir.read_text(jinja, root), jinja.name)
    extra = directory / modeldir.TEMPLATE_FOLDER
    for file in modeldir.read_files(directory):
        if file.parent == extra:
            name = _name_ok(file.stem, file)
            found[name] = Template(name, modeldir.read_text(file, root), f"{extra.name}/{file.name}")
    if found:
        return found
    config_path = directory / "tokenizer_config.json"
    config = modeldir.read_object(config_path, root) if modeldir.present(config_path) else {}
    entry, origin = config.get("chat_template"), config_path.name
    if entry is None and modeldir.present(directory / "chat_template.json"):
        entry = modeldir.read_object(directory / "chat_template.json", root).get("chat_template")
        origin = "chat_template.json"
    if isinstance(entry, str):
        return {"default": Template("default", entry, origin)}
    if isinstance(entry, list):
        for item in entry:
            if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)):
                raise TemplatecheckError(
                    f"{directory / origin}: chat_template list entries need 'name' and 'template', "
                    f"got {modeldir.shown(item)}"
                )
            name = _name_ok(item["name"], directory / origin)
            found[name] = Template(name, str(item.get("template", "")), f"{origin} [{name}]")
        return found
    if entry is not None:
        raise TemplatecheckError(
            f"{directory / origin}: chat_template must be a string or a list, got {modeldir.shown(entry)}"
        )
    return {}


def read_corpus(folder: Path) -> dict[str, Template]:
    """Every template in ``folder/*.json``, named ``<file stem>#<template name>``: the format of public
    chat-template corpora (see :mod:`templatecheck.corpus`)."""
    templates: dict[str, Template] = {}
    for file in sorted(folder.glob("*.json")):
        entry = json.loads(file.read_text(encoding="utf-8")).get("chat_template")
        named = {"default": entry} if isinstance(entry, str) else dict(entry or {})
        for name, source in named.items():
            label = f"{file.stem}#{name}"
            templates[label] = Template(label, str(source), file.name)
    return templates


def templates_in_folder(folder: Path) -> dict[str, Template]:
    """Candidate templates for ``--tc-chat-template DIR``: every ``*.jinja`` file, and every template of the
    corpus-format ``*.json`` files (see :mod:`templatecheck.corpus`)."""
    found = {t.name: t for t in map(template_from_file, sorted(folder.glob("*.jinja")))}
    try:
        found.update(read_corpus(folder))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise TemplatecheckError(
            f"--tc-chat-template {folder}: a .json file there is not a template file ({exc})"
        ) from None
    if not found:
        raise TemplatecheckError(
            f"--tc-chat-template {folder}: the folder holds no *.jinja template and no template *.json file"
        )
    return found


def template_from_file(path: Path) -> Template:
    """A candidate template file, for ``--tc-chat-template FILE`` (a regular file of at most
    :data:`~templatecheck.modeldir.TEXT_LIMIT` bytes, anywhere)."""
    return Template(path.stem, modeldir.read_text(path, None), str(path))


@dataclass
class Model:
    """A model under test. The tokenizer loads on first use (it imports transformers)."""

    ref: ModelRef
    directory: Path
    templates: dict[str, Template]
    generation_config: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    limits: Limits = field(default_factory=Limits)
    #: Per-template results of probes (capabilities, samples), so that checks share them.
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    #: The metadata of a model that is a GGUF file (``directory`` is then the file's folder).
    gguf: GgufFile | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.ref.name

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self.gguf is not None:
            return gguf.tokenizer(self.gguf, self.ref.text)
        return shared_tokenizer(self.directory, self.ref.text)

    @cached_property
    def renderer(self) -> Renderer:
        special = {k: str(v) for k, v in self.tokenizer.special_tokens_map.items() if isinstance(v, str)}
        return Renderer(special_tokens=special, limits=self.limits)


_WEIGHTS: dict[str, Path] = {}


def weights_directory(model: Model) -> Path:
    """The directory with the model's weights: for a Hub id they are downloaded now, once per process."""
    if model.ref.repo_id is None:
        return model.directory
    if model.ref.text not in _WEIGHTS:
        _WEIGHTS[model.ref.text] = resolve(model.ref, (*CHECK_FILES, *WEIGHT_FILES))
    return _WEIGHTS[model.ref.text]


@dataclass
class _Tokenizers:
    """The tokenizers this process loaded, by the content of their files (see :func:`tokenizer_key`)."""

    loaded: dict[str, PreTrainedTokenizerBase] = field(default_factory=dict)
    #: How many times a tokenizer was loaded from files (models that share one load it once).
    loads: int = 0


_TOKENIZERS = _Tokenizers()


def tokenizer_loads() -> int:
    """How many tokenizers this process has loaded from files."""
    return _TOKENIZERS.loads


def tokenizer_key(directory: Path) -> str:
    """The sha256 of what ``AutoTokenizer.from_pretrained(directory)`` reads: the tokenizer files, the
    configuration files, and ``tokenizer_config.json`` without its ``chat_template`` (templates are passed to
    every render explicitly, so models that differ only there share a tokenizer)."""
    import hashlib

    root = modeldir.check_directory(directory)
    digest = hashlib.sha256()
    for path in modeldir.read_files(directory):
        if path.parent != directory or path.name in _TEMPLATE_FILES:
            continue
        if path.name == "tokenizer_config.json":
            config = modeldir.read_object(path, root)
            config.pop("chat_template", None)
            data = json.dumps(config, sort_keys=True).encode()
        else:
            data = modeldir.read_bytes(path, root, modeldir.limit_for(path.name))
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


_TEMPLATE_FILES = frozenset({"chat_template.jinja", "chat_template.json", "generation_config.json"})


def shared_tokenizer(directory: Path, label: str) -> PreTrainedTokenizerBase:
    """The tokenizer of ``directory`` (see :func:`load_tokenizer`), loaded once per process for every model
    whose tokenizer files are identical (:func:`tokenizer_key`)."""
    key = tokenizer_key(directory)
    if key not in _TOKENIZERS.loaded:
        _TOKENIZERS.loaded[key] = load_tokenizer(directory, label)
        _TOKENIZERS.loads += 1
        settle()
    return _TOKENIZERS.loaded[key]


def settle() -> None:
    """What a load left alive (transformers, torch, a tokenizer, the draw) stays alive for the run: freeze
    it (:func:`gc.freeze`), so that the garbage collections that the checks' allocations trigger do not walk
    those objects again every time (a tenth of a check's time in a process with transformers loaded)."""
    import gc

    gc.freeze()


def check_tokenizer_files(directory: Path, label: str) -> None:
    """What :func:`load_tokenizer` checks before transformers reads anything: the files it reads are safe to
    read (:func:`~templatecheck.modeldir.check_directory`), there are tokenizer files, and no custom code."""
    root = modeldir.check_directory(directory)
    if not any(
        modeldir.present(directory / f)
        for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tekken.json")
    ):
        raise TemplatecheckError(
            f"model {label!r}: {directory} has no tokenizer files (tokenizer.json, tokenizer.model, vocab.json); "
            "point --model at the model's root directory"
        )
    config_path = directory / "tokenizer_config.json"
    if modeldir.present(config_path) and "auto_map" in modeldir.read_object(config_path, root):
        raise TemplatecheckError(
            f"model {label!r}: its tokenizer needs custom code (auto_map in tokenizer_config.json), which "
            "templatecheck never runs (no trust_remote_code); test a model with a standard tokenizer class"
        )


def load_tokenizer(directory: Path, label: str) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained(directory)`` without remote code, with errors that say what to do; the
    files are checked first (:func:`check_tokenizer_files`)."""
    check_tokenizer_files(directory, label)
    if "transformers" not in sys.modules:
        # transformers advises at import that torch is missing; the static checks need no torch.
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except Exception as exc:
        raise TemplatecheckError(
            f"model {label!r}: the tokenizer in {directory} does not load ({type(exc).__name__}: {exc}); "
            "check the tokenizer files"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def load_model(text: str, *, chat_template: str | None = None, limits: Limits | None = None) -> Model:
    """Resolve and read a model; ``chat_template`` selects one named template or a candidate file."""
    ref = ModelRef.parse(text)
    source = gguf.read(ref.path, text) if ref.is_gguf and ref.path is not None else None
    if source is not None:
        directory = source.path.parent
        templates = {n: Template(n, t, "GGUF " + _gguf_key(n)) for n, t in source.templates().items()}
    else:
        directory = resolve(ref)
        modeldir.check_directory(directory)
        templates = read_templates(directory)
    if chat_template is not None:
        candidate = Path(chat_template).expanduser()
        if candidate.is_file():
            chosen = template_from_file(candidate)
            templates = {chosen.name: chosen}
        elif candidate.is_dir():
            templates = templates_in_folder(candidate)
        elif chat_template in templates:
            templates = {chat_template: templates[chat_template]}
        else:
            raise TemplatecheckError(
                f"--tc-chat-template {chat_template!r}: no such file, and model {text!r} has no template of that "
                f"name (it has: {', '.join(sorted(templates)) or 'none'})"
            )
    if not templates:
        where = (
            "tokenizer.chat_template and tokenizer.chat_templates"
            if source is not None
            else "chat_template.jinja, additional_chat_templates/, tokenizer_config.json and chat_template.json"
        )
        raise TemplatecheckError(
            f"model {text!r} has no chat template (looked in {where}); a base model has none: pass "
            "--tc-chat-template FILE to test a candidate template"
        )
    generation_config, config = source.configs() if source is not None else read_configs(directory)
    return Model(
        ref=ref,
        directory=directory,
        templates=templates,
        generation_config=generation_config,
        config=config,
        limits=limits or Limits(),
        gguf=source,
    )


def _gguf_key(name: str) -> str:
    return "tokenizer.chat_template" + ("" if name == "default" else f".{name}")


def read_configs(directory: Path) -> tuple[Any, dict[str, Any] | None]:
    """``generation_config.json`` and ``config.json`` of ``directory`` (``None`` where absent), with the token
    fields of those and of the tokenizer's configuration validated: one clear error for a bad value.

    ``eos_token_id`` of ``generation_config.json``, and a ``generation_config.json`` that is not an object, are
    left to the ``end_of_turn`` check, which reports them as findings (they decide where generation stops) and
    falls back on the tokenizer's eos.
    """
    root = modeldir.boundary(directory)
    paths = {name: directory / name for name in modeldir.CONFIG_FILES}
    read = {name: modeldir.read_object(p, root) for name, p in paths.items() if modeldir.present(p)}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if name in read:
            modeldir.check_tokens(read[name], paths[name])
    config = read.get("config.json")
    vocabulary = modeldir.vocabulary_size(config)
    if config is not None:
        modeldir.check_ids(config, paths["config.json"], vocabulary)
    gen_path = directory / "generation_config.json"
    generation = modeldir.read_json(gen_path, root) if modeldir.present(gen_path) else None
    if isinstance(generation, dict):
        modeldir.check_ids(generation, gen_path, vocabulary, skip=("eos_token_id",))
    return generation, config


@dataclass(frozen=True)
class Subject:
    """One template of one model: what a check examines."""

    model: Model
    template: Template
    options: Options = field(default_factory=Options)

    def render(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        """The rendering of ``messages``; raises :class:`~templatecheck.render.RenderError`."""
        return self.render_full(messages, **kwargs).text

    def render_full(self, messages: list[dict[str, Any]], **kwargs: Any) -> Rendered:
        """The rendering with its ``{% generation %}`` spans.

        Tools are passed as a client would: a template named ``tool_use`` (which transformers selects only
        when tools are passed) always gets one, and a conversation with tool calls gets definitions of the
        tools it calls, unless the caller passes ``tools`` itself.
        """
        return self.model.renderer.render(self.template.source, messages, **self.arguments(messages, kwargs))

    def prefetch(self, conversations: Sequence[list[dict[str, Any]]], **kwargs: Any) -> None:
        """Send ``conversations`` to the render worker in one batch ahead of the renders a check asks for one at
        a time, and return at once (the renderer keeps what each gives, so a later :meth:`render` waits at
        most for its own answer, while the worker renders the rest)."""
        self.prefetch_each([(messages, kwargs) for messages in conversations])

    def prefetch_each(self, renders: Sequence[tuple[list[dict[str, Any]], dict[str, Any]]]) -> None:
        """:meth:`prefetch` with arguments of their own for each conversation."""
        calls = [self._call(messages, kwargs) for messages, kwargs in renders]
        self.model.renderer.prefetch(self.template.source, calls)

    def render_each(
        self, conversations: Sequence[list[dict[str, Any]]], *, fresh: bool = False, **kwargs: Any
    ) -> list[str | RenderError]:
        """The rendering of each conversation (or its error), rendered in one batch (``fresh``: each rendered
        anew, not answered from an equal render made before)."""
        calls = self.calls(conversations, **kwargs)
        results = self.model.renderer.render_many(self.template.source, calls, fresh=fresh)
        return [r.text if isinstance(r, Rendered) else r for r in results]

    def calls(self, conversations: Sequence[list[dict[str, Any]]], **kwargs: Any) -> list[Call]:
        """The render calls of :meth:`render_each`, for another renderer."""
        return [self._call(messages, kwargs) for messages in conversations]

    def _call(self, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> Call:
        arguments = self.arguments(messages, kwargs)
        return Call(
            messages,
            arguments.pop("add_generation_prompt", False),
            arguments.pop("continue_final_message", False),
            arguments.pop("tools", None),
            arguments.pop("documents", None),
            arguments,
        )

    def arguments(self, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments a render of ``messages`` with ``kwargs`` gets, as ``apply_chat_template``'s
        would be: the run's ``--tc-template-var`` values, and the tools a client sends (:meth:`client_tools`)."""
        arguments = {**self.options.template_vars, **kwargs}
        if "tools" not in arguments:
            arguments["tools"] = self.client_tools(messages)
        return arguments

    def client_tools(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """The tool definitions a client would send with ``messages`` (see :meth:`render_full`)."""
        called = conversation.tools_for(messages)
        if called:
            return called
        # a corpus names its templates ``<file>#<name>``: its ``tool_use`` templates need tools as well
        return [conversation.WEATHER_TOOL] if self.template.key[0] else None
