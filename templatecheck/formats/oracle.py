"""mistral-common as a token-level oracle for Mistral models (an optional dependency, imported lazily).

``pip install 'templatecheck[mistral]'`` installs it. The oracle is mistral-common's
``encode_chat_completion`` with the tokenizer of the model's own version: the model directory's
``tekken.json`` or ``tokenizer.model[.vN]`` when present (a bare ``tokenizer.model`` is read as the version of
the detected format), else mistral-common's bundled tokenizer of that version, provided it has the model's
vocabulary.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from templatecheck.tokens import encode

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

INSTALL = "pip install 'templatecheck[mistral]'"
PROBE = "Hello, world! The answer is 42."


class OracleUnavailable(Exception):
    """The oracle cannot run for this model: the reason is the skip reason shown to the user."""


class Rejected(Exception):
    """mistral-common does not accept the conversation."""


@dataclass(frozen=True)
class Oracle:
    """mistral-common's encoder for one model; ``source`` says which tokenizer file it uses."""

    tokenizer: Any  # mistral_common's MistralTokenizer
    source: str

    @property
    def bos_id(self) -> int:
        return int(self.tokenizer.instruct_tokenizer.tokenizer.bos_id)

    def encode(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
    ) -> list[int]:
        """Token ids of the conversation, ready for the model's reply; :class:`Rejected` if not accepted."""
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        # OpenAI-style callers write "" as the text of a tool-call message; mistral-common wants none.
        plain = [
            {k: v for k, v in m.items() if not (k == "content" and v == "" and m.get("tool_calls"))}
            for m in messages
        ]
        try:
            request = ChatCompletionRequest.from_openai(
                messages=plain, tools=[dict(t) for t in tools] if tools else None
            )
            return list(self.tokenizer.encode_chat_completion(request).tokens)
        except Exception as exc:  # mistral-common signals refusals with many exception types
            raise Rejected(f"{type(exc).__name__}: {exc}") from None

    def pieces(self, ids: Sequence[int]) -> list[str]:
        raw = self.tokenizer.instruct_tokenizer.tokenizer
        return [str(raw.id_to_piece(i)) for i in ids]


def load_oracle(directory: Path, version: str, tekken: bool, tokenizer: PreTrainedTokenizerBase) -> Oracle:
    """The oracle for the model in ``directory``; :class:`OracleUnavailable` says why there is none."""
    try:
        import mistral_common  # noqa: F401
    except ImportError:
        raise OracleUnavailable(f"mistral-common is not installed: {INSTALL}") from None
    known = _tekken_size(Path(directory), version, tekken)
    if known is not None and known[0] != len(tokenizer):
        raise OracleUnavailable(_other_vocabulary(known[0], len(tokenizer), known[1]))
    oracle = _load(str(directory), version, tekken)
    _same_vocabulary(oracle, tokenizer)
    return oracle


def _tekken_size(root: Path, version: str, tekken: bool) -> tuple[int, str] | None:
    """The vocabulary size of the Tekken tokenizer the oracle would load, with the oracle's name for it: the
    model's ``tekken.json``, or where the model has no tokenizer file for the oracle, mistral-common's bundled
    Tekken files when they all have one size. Read from the file's ``config`` without loading the tokenizer
    (that takes seconds), so a model whose tokenizer has another size, which cannot be compared, loads
    nothing; ``None`` when the size is unknown (then the oracle is loaded and compared)."""
    own = root / "tekken.json"
    if own.is_file():
        size = _config_size(own)
        return (size, str(own)) if size is not None else None
    if (version, tekken) != ("v3", True) or any(root.glob(f"tokenizer.model.{version}*")):
        return None
    try:
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        bundled = sorted(Path(MistralTokenizer._data_path()).glob("tekken_*.json"))
    except Exception:  # another mistral-common layout: load it and compare
        return None
    sizes = {_config_size(file) for file in bundled}
    size = sizes.pop() if len(sizes) == 1 else None
    return (size, _bundled_name(version, tekken)) if size is not None else None


def _config_size(path: Path) -> int | None:
    """``default_vocab_size`` of a Tekken file's leading ``config`` object (its first kilobytes)."""
    import json

    try:
        with path.open("rb") as file:
            head = file.read(1 << 16).decode("utf-8", errors="replace")
        at = head.index("{", head.index('"config"'))
        config, _ = json.JSONDecoder().raw_decode(head, at)
        size = config.get("default_vocab_size")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _other_vocabulary(theirs: int, ours: int, source: str) -> str:
    return (
        f"the model's tokenizer is not mistral-common's ({source}): different vocabulary "
        f"({ours} vs {theirs} tokens), so token ids cannot be compared"
    )


@lru_cache(maxsize=16)
def _load(directory: str, version: str, tekken: bool) -> Oracle:
    import warnings

    root = Path(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mistral-common warns about deprecated names
        try:
            return _from_files(root, version, tekken) or _bundled(version, tekken)
        except OracleUnavailable:
            raise
        except Exception as exc:
            raise OracleUnavailable(f"mistral-common cannot load the tokenizer in {root}: {exc}") from None


def _from_files(root: Path, version: str, tekken: bool) -> Oracle | None:
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    for file in [root / "tekken.json", *sorted(root.glob(f"tokenizer.model.{version}*"))]:
        if file.is_file():
            return Oracle(MistralTokenizer.from_file(str(file)), str(file))
    bare = root / "tokenizer.model"
    if bare.is_file() and not tekken:
        return Oracle(_from_bare_model(bare, version), str(bare))
    return None


def _bundled(version: str, tekken: bool) -> Oracle:
    """mistral-common's own tokenizer of ``version`` (its vocabulary is checked against the model's later)."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    name = _bundled_name(version, tekken)
    if (version, tekken) == ("v1", False):
        return Oracle(MistralTokenizer.v1(), name)
    if (version, tekken) == ("v3", False):
        return Oracle(MistralTokenizer.v3(), name)
    if (version, tekken) == ("v3", True):
        return Oracle(MistralTokenizer.v3(is_tekken=True), name)
    if (version, tekken) == ("v7", False):
        return Oracle(MistralTokenizer.v7(), name)
    raise OracleUnavailable(
        f"the model directory has no tokenizer file mistral-common can read (tekken.json, tokenizer.model), "
        f"and mistral-common bundles no {version}{' Tekken' if tekken else ''} tokenizer to compare with"
    )


def _bundled_name(version: str, tekken: bool) -> str:
    return f"mistral-common's bundled {version}{' Tekken' if tekken else ''} tokenizer"


def _from_bare_model(path: Path, version: str) -> Any:
    """mistral-common reads the version from the file name; a bare ``tokenizer.model`` is named for it."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    with tempfile.TemporaryDirectory(prefix="templatecheck-mistral-") as folder:
        named = Path(folder) / f"tokenizer.model.{version}"
        named.symlink_to(path.resolve())
        return MistralTokenizer.from_file(str(named))  # reads the whole model into memory


def _same_vocabulary(oracle: Oracle, tokenizer: PreTrainedTokenizerBase) -> None:
    raw = oracle.tokenizer.instruct_tokenizer.tokenizer
    theirs = list(raw.encode(PROBE, bos=False, eos=False))
    ours = encode(tokenizer, PROBE)
    controls = [t for t in ("[INST]", "[/INST]") if t in tokenizer.get_vocab()]
    same_controls = (
        all(raw.get_special_token(t) == tokenizer.convert_tokens_to_ids(t) for t in controls)
        if controls
        else True
    )
    if theirs != ours or raw.n_words != len(tokenizer) or not same_controls:
        raise OracleUnavailable(_other_vocabulary(raw.n_words, len(tokenizer), oracle.source))
