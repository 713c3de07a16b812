"""What the model receives: the token ids a rendered prompt becomes along each consumer path, the tokens
generation stops on, and the tokenizer's control tokens, per template of a model.

The consumer paths (:data:`~templatecheck.causes.CONSUMERS`) differ only in how the rendering is encoded:

- ``apply_chat_template``: transformers' ``apply_chat_template(tokenize=True)`` renders the template, then
  calls ``tokenizer(rendering, add_special_tokens=False)`` (transformers 4.4x to 5.x; the ``round_trip``
  check compares it with the real call on the model under test, so a tokenizer that overrides it is caught);
- ``server``: vLLM, SGLang and TGI render with ``apply_chat_template(tokenize=False)`` and encode the text
  without special tokens (their chat endpoints' ``add_special_tokens`` defaults to false);
- ``naive``: ``tokenizer(prompt)``, what hand-written harness code does: the tokenizer's post-processor adds
  its special tokens (BOS for Llama and Mistral tokenizers) on top of what the template wrote.

:func:`encode` is the one "encode without special tokens" the checks use. Nothing here imports transformers:
the tokenizer is the model's, loaded on first use.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

import jinja2.nodes

from templatecheck.modeldir import is_token_id, shown
from templatecheck.render import nodes_of, parse_template, template_variables
from templatecheck.text import tokens as shown_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from templatecheck.model import Model, Subject


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``text`` encoded without special tokens: the ``apply_chat_template`` and ``server`` paths."""
    return _encoded(tokenizer, "plain", text, lambda: tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_naive(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``text`` encoded with the tokenizer's special tokens, ``tokenizer(text)``: the ``naive`` path."""
    return _encoded(tokenizer, "naive", text, lambda: tokenizer(text)["input_ids"])


def encode_as_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``text`` encoded as plain text, special-token strings split (``split_special_tokens=True``): what a
    client that sanitizes user text sends for it."""
    return _encoded(
        tokenizer,
        "as text",
        text,
        lambda: tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"],
    )


class _Encodings:
    """The encodings one tokenizer made (several checks encode the same rendering), bounded by the characters
    kept, least recently used first out. A key holds the tokenizer's size, so a token added since is seen."""

    MAX_CHARS = 1 << 24

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[str, str, int], tuple[int, ...]] = OrderedDict()
        self.chars = 0

    def get(self, key: tuple[str, str, int], make: Callable[[], Any]) -> list[int]:
        found = self.entries.get(key)
        if found is None:
            found = tuple(int(i) for i in make())
            self.entries[key] = found
            self.chars += len(key[1])
            while self.chars > self.MAX_CHARS and self.entries:
                self.chars -= len(self.entries.popitem(last=False)[0][1])
        else:
            self.entries.move_to_end(key)
        return list(found)


_ENCODINGS: weakref.WeakKeyDictionary[Any, _Encodings] = weakref.WeakKeyDictionary()


def _encoded(tokenizer: Any, path: str, text: str, make: Callable[[], Any]) -> list[int]:
    """``make()``'s ids, kept per tokenizer and text (a tokenizer that cannot be kept track of is asked
    every time)."""
    try:
        kept = _ENCODINGS.setdefault(tokenizer, _Encodings())
    except TypeError:  # not weakly referenceable, or unhashable
        return list(make())
    return kept.get((path, text, len(tokenizer)), make)


#: How each consumer path turns a rendering into token ids.
PATHS: dict[str, Callable[[PreTrainedTokenizerBase, str], list[int]]] = {
    "apply_chat_template": encode,
    "server": encode,
    "naive": encode_naive,
}


# ------------------------------------------------------------------------------------------------- stop set


@dataclass(frozen=True)
class StopSet:
    """The token ids generation stops on, where they come from, and what is wrong with the file they come
    from (``problem``, ``None`` when nothing is)."""

    ids: tuple[int, ...]
    source: str
    problem: str | None = None


def stop_set(model: Model) -> StopSet:
    """``eos_token_id`` of ``generation_config.json`` (an id or a list of ids), validated; else the tokenizer's
    eos. An invalid value is reported in ``problem`` (naming the file and the value) and its valid ids, or the
    tokenizer's eos when it has none, are used."""
    tokenizer = model.tokenizer
    path = model.directory / "generation_config.json"
    config = model.generation_config
    fallback = (int(tokenizer.eos_token_id),) if tokenizer.eos_token_id is not None else ()
    eos_name = f"the tokenizer's eos_token {tokenizer.eos_token!r}" if fallback else "no token at all"
    if model.gguf is not None:  # validated as the file was read
        return StopSet(model.gguf.stop_ids or fallback, "the GGUF's tokenizer.ggml.eos/eot/eom_token_id")
    if config is None:
        return StopSet(fallback, f"{eos_name} (no generation_config.json)")
    if not isinstance(config, dict):
        problem = f"{path} is not a JSON object (it holds {type(config).__name__} {shown(config)})"
        return StopSet(fallback, f"{eos_name} (generation_config.json is not valid)", problem)
    eos = config.get("eos_token_id")
    if eos is None:
        return StopSet(fallback, f"{eos_name} (no eos_token_id in generation_config.json)")
    entries = eos if isinstance(eos, list) else [eos]
    vocabulary = len(tokenizer)
    valid = tuple(dict.fromkeys(e for e in entries if is_token_id(e, vocabulary)))
    if entries and len(valid) == len(entries):
        return StopSet(valid, "generation_config.json eos_token_id")
    bad = [e for e in entries if not is_token_id(e, vocabulary)]
    problem = (
        f"{path}: eos_token_id is {shown(eos)}, which is not a token id or a list of token ids of this "
        f"tokenizer (ids are integers from 0 to {vocabulary - 1}; "
        f"{'bad entries: ' + shown(bad) if bad else 'the list is empty'})"
    )
    if valid:
        return StopSet(valid, "generation_config.json eos_token_id (its valid entries)", problem)
    return StopSet(fallback, f"{eos_name} (generation_config.json eos_token_id is not valid)", problem)


# ------------------------------------------------------------------------------------------------ the view


@lru_cache(maxsize=256)
def template_literals(source: str) -> tuple[str, ...]:
    """The template's raw text and string constants (what it writes verbatim), kept per source."""
    ast = parse_template(source)
    found = [node.data for node in nodes_of(ast, jinja2.nodes.TemplateData)]
    found += [node.value for node in nodes_of(ast, jinja2.nodes.Const) if isinstance(node.value, str)]
    return tuple(found)


@dataclass(frozen=True)
class Tokens:
    """The tokenizer facts of one template of a model that the tokenizer checks share (see the module
    docstring); build it with :func:`tokens_of`."""

    tokenizer: PreTrainedTokenizerBase
    source: str
    stop: StopSet

    @cached_property
    def bos_id(self) -> int | None:
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else None

    @cached_property
    def bos(self) -> str | None:
        return str(self.tokenizer.bos_token) if self.bos_id is not None else None

    @cached_property
    def special(self) -> frozenset[int]:
        """The ids of the special tokens: control tokens that ``skip_special_tokens`` drops."""
        added = {int(i) for i, t in self.tokenizer.added_tokens_decoder.items() if t.special}
        return frozenset(added | {int(i) for i in self.tokenizer.all_special_ids})

    @cached_property
    def added(self) -> frozenset[int]:
        """The ids of every added token, special or not."""
        return frozenset(int(i) for i in self.tokenizer.added_tokens_decoder)

    @cached_property
    def written(self) -> tuple[str, ...]:
        """The control tokens the template writes, longest first: the special tokens among its literals or the
        special-token variables it reads (``bos_token``), and the added tokens among its literals (transformers'
        ``sanitize_control_tokens`` treats the same tokens as control tokens)."""
        literals = "\0".join(template_literals(self.source))
        found = {
            t.content
            for t in self.tokenizer.added_tokens_decoder.values()
            if t.content in literals and not t.content.isspace()
        }
        names = template_variables(self.source)
        found |= {
            str(v) for k, v in self.tokenizer.special_tokens_map.items() if k in names and isinstance(v, str)
        }
        return tuple(sorted(found, key=lambda t: (-len(t), t)))

    @cached_property
    def naive_adds(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The ids the ``naive`` path adds before and after the text."""
        bare, full = encode(self.tokenizer, "x"), encode_naive(self.tokenizer, "x")
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return tuple(full[:start]), tuple(full[start + len(bare) :])
        return (), ()

    def path(self, consumer: str, text: str) -> list[int]:
        """The ids ``text`` (a rendering) becomes along ``consumer``'s path."""
        return PATHS[consumer](self.tokenizer, text)

    def paths(self, text: str) -> dict[str, list[int]]:
        """The ids ``text`` becomes along every consumer path (the paths that encode alike share one call)."""
        plain = encode(self.tokenizer, text)
        return {name: plain if fn is encode else fn(self.tokenizer, text) for name, fn in PATHS.items()}

    def name(self, token: int) -> str:
        """``'<|eot_id|>' (128009)``."""
        return f"{self.tokenizer.convert_ids_to_tokens(token)!r} ({token})"

    def names(self, ids: tuple[int, ...] | list[int] | frozenset[int]) -> str:
        """``[128001 '<|end_of_text|>', ...]``, sorted, or ``[]``."""
        listed = ", ".join(f"{i} {self.tokenizer.convert_ids_to_tokens(i)!r}" for i in sorted(ids))
        return f"[{listed}]"

    def shown(self, ids: list[int], limit: int = 12) -> str:
        """The first ``limit`` tokens as ``[id 'piece']``, whitespace visible."""
        return shown_tokens(ids, self.tokenizer.convert_ids_to_tokens(ids), limit)


def tokens_of(subject: Subject) -> Tokens:
    """The tokens view of ``subject``'s template, built once per template of the model."""
    key = ("tokens", *subject.template.key)
    found = subject.model.cache.get(key)
    if not isinstance(found, Tokens):
        found = Tokens(subject.model.tokenizer, subject.template.source, stop_set(subject.model))
        subject.model.cache[key] = found
    return found


__all__ = [
    "PATHS",
    "StopSet",
    "Tokens",
    "encode",
    "encode_as_text",
    "encode_naive",
    "stop_set",
    "template_literals",
    "tokens_of",
]
