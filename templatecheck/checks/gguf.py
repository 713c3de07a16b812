"""Engine layer, GGUF: a GGUF file against the model it was converted from (``--tc-compare-to DIR_OR_ID``).

A GGUF carries its own copy of the template and the tokenizer, made once by ``convert_hf_to_gguf.py``; the
repository it came from moves on, and converters have bugs. What a server of the file (llama.cpp, Ollama,
LM Studio) does differs from what the original does when the copy differs in behaviour: the template renders
another prompt, a control token has another id or is not a single token, BOS is added where the original
adds none, or a token the original stops on is not a stop id of the file. Each is one finding with the fix a
publisher applies to the file.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from templatecheck import conversation as conv
from templatecheck.capabilities import probe
from templatecheck.causes import defect
from templatecheck.checks.base import check
from templatecheck.errors import TemplatecheckError
from templatecheck.model import Model, Subject, load_model
from templatecheck.render import RenderError
from templatecheck.result import Finding, Layer, note, skipped
from templatecheck.sample import sample
from templatecheck.text import diff, visible

if TYPE_CHECKING:
    from templatecheck.gguf import GgufFile

STALE_TEMPLATE = defect(
    "gguf_matches_original.stale_template",
    "the GGUF's template renders the suite's conversations otherwise than the original's (an older copy, or "
    "another template): servers of the file prompt the model in a format the original does not use",
)
CONTROL_TOKEN_ID = defect(
    "gguf_matches_original.control_token_id",
    "a control token of the original has another id in the GGUF, or none: the model reads other tokens than "
    "it was trained on",
)
CONTROL_TOKEN_SPLIT = defect(
    "gguf_matches_original.control_token_split",
    "the GGUF's tokenizer encodes a control token as several tokens (it is not typed control in "
    "tokenizer.ggml.token_type): the model reads text where it was trained on one token",
)
ADD_BOS = defect(
    "gguf_matches_original.add_bos",
    "the GGUF's add-BOS flag differs from the original tokenizer's (or is missing): engines that follow it "
    "prompt with two BOS tokens, or none",
)
STOP_SET = defect(
    "gguf_matches_original.stop_set",
    "a token the original stops on is not an EOS, EOT or EOM id of the GGUF: a server of the file generates "
    "past the end of the assistant's turn",
)

#: Original models by ``--tc-compare-to`` value, loaded once per process.
_ORIGINALS: dict[str, Model] = {}


def original(spec: str) -> Model:
    """The model ``--tc-compare-to`` names, loaded once; its load error names the option."""
    if spec not in _ORIGINALS:
        try:
            _ORIGINALS[spec] = load_model(spec)
        except TemplatecheckError as error:
            raise TemplatecheckError(f"--tc-compare-to {spec}: {error}") from None
    return _ORIGINALS[spec]


def _reconvert(source: Model) -> str:
    revision = f" at revision {source.ref.revision}" if source.ref.revision else ""
    return f"re-convert the file with llama.cpp's convert_hf_to_gguf.py from {source.name}{revision}"


def _conversations(subject: Subject) -> list[tuple[conv.Conversation, bool]]:
    """The plain conversations and the suite's sample, each with whether it gets the generation prompt."""
    drawn = sample(probe(subject).support, count=max(1, subject.options.examples // 10))
    chosen = [*conv.PLAIN.values(), *drawn]
    return [(c, c[-1]["role"] != "assistant") for c in chosen]


def _renders(subject: Subject, cases: list[tuple[conv.Conversation, bool]]) -> list[str | RenderError]:
    """The rendering of each case, in two batches (with and without the generation prompt)."""
    out: dict[int, str | RenderError] = {}
    for prompt in (True, False):
        chosen = [i for i, (_, p) in enumerate(cases) if p is prompt]
        results = subject.render_each([cases[i][0] for i in chosen], add_generation_prompt=prompt)
        out.update(zip(chosen, results, strict=True))
    return [out[i] for i in range(len(cases))]


def _templates(subject: Subject, source: Model) -> list[Finding]:
    """The GGUF's template renders every conversation as the original's template of the same name does."""
    name = subject.template.name
    theirs = source.templates.get(name)
    if theirs is None:
        return [
            STALE_TEMPLATE(
                f"the GGUF has a template {name!r} that the original {source.name} has not (it has: "
                f"{', '.join(sorted(source.templates)) or 'none'})",
                fix=_reconvert(source),
            )
        ]
    cases = _conversations(subject)
    ours, reference = _renders(subject, cases), _renders(Subject(source, theirs, subject.options), cases)
    differ = [
        i
        for i, (a, b) in enumerate(zip(ours, reference, strict=True))
        if isinstance(a, RenderError) != isinstance(b, RenderError) or (isinstance(a, str) and a != b)
    ]
    if not differ:
        return []
    first = differ[0]
    got, expected = ours[first], reference[first]
    evidence = (
        diff(expected, got, labels=("original", "GGUF"))
        if isinstance(got, str) and isinstance(expected, str)
        else f"  original: {visible(str(expected))[:200]}\n  GGUF: {visible(str(got))[:200]}"
    )
    return [
        STALE_TEMPLATE(
            f"the GGUF's template {name!r} renders {len(differ)} of {len(cases)} conversations otherwise than "
            f"the original's ({theirs.origin} of {source.name}); the first:\n{conv.describe(cases[first][0])}\n"
            f"{evidence}",
            fix=f"{_reconvert(source)}, or replace the template: gguf-new-metadata --chat-template-config "
            f"{source.name}/tokenizer_config.json IN.gguf OUT.gguf",
        )
    ]


def _control_tokens(subject: Subject, meta: GgufFile, source: Model) -> list[Finding]:
    """Every special added token of the original has its id in the GGUF and encodes there as that one id."""
    index: dict[str, int] = {}
    for i, token in enumerate(meta.tokens):
        index.setdefault(token, i)
    types, moved, split = meta.token_types, [], []
    decoder = (
        getattr(source.tokenizer, "added_tokens_decoder", None) or {}
    )  # a tokenizer without added tokens
    for token_id, added in sorted(decoder.items()):
        if not added.special:
            continue
        found = index.get(added.content)
        if found != token_id:
            moved.append(f"{added.content!r}: id {token_id} in the original, {found} in the GGUF")
            continue
        ids = subject.model.tokenizer.encode(added.content, add_special_tokens=False)
        if ids != [token_id]:
            kind = types[token_id] if token_id < len(types) else None
            split.append(f"{added.content!r} (id {token_id}, token type {kind}) encodes as {ids}")
    findings = []
    if moved:
        findings.append(
            CONTROL_TOKEN_ID(
                f"{_count(moved, 'control token')} of the original {'has' if len(moved) == 1 else 'have'} "
                "another id in the GGUF: " + "; ".join(moved),
                fix=_reconvert(source),
            )
        )
    if split:
        findings.append(
            CONTROL_TOKEN_SPLIT(
                f"the GGUF's tokenizer splits {_count(split, 'control token')}: " + "; ".join(split),
                fix=f"type them control (3) in tokenizer.ggml.token_type: {_reconvert(source)} (it types the "
                "original's special added tokens control)",
            )
        )
    return findings


def _count(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _bos(subject: Subject, meta: GgufFile, source: Model) -> list[Finding]:
    """The file's ``add_bos_token`` says what the original tokenizer does: add BOS to an encoded text or not."""
    bos = source.tokenizer.bos_token_id
    adds = bos is not None and source.tokenizer.encode("x")[:1] == [bos]
    flag = meta.flag("add_bos_token")
    if flag is adds:
        return []
    token = source.tokenizer.bos_token
    try:
        written = bool(token) and subject.render(conv.USER_ONLY, add_generation_prompt=True).startswith(token)
        starts = f"starts with BOS ({token})" if written else "writes no BOS"
    except RenderError:
        written, starts = False, "could not be rendered"
    said = "does not set it" if flag is None else f"sets it {str(flag).lower()}"
    return [
        ADD_BOS(
            f"the original's tokenizer {'adds' if adds else 'adds no'} BOS when it encodes a text, and the GGUF "
            f"{said} (tokenizer.ggml.add_bos_token); the template's rendering {starts}, so engines that follow the "
            f"file prompt with {int(bool(flag)) + written} BOS tokens where the original has {int(adds) + written}",
            fix=(
                f"set tokenizer.ggml.add_bos_token to {str(adds).lower()}: gguf-set-metadata FILE.gguf "
                f"tokenizer.ggml.add_bos_token {'1' if adds else shlex.quote('')}"
                if flag is not None
                else f"{_reconvert(source)} (it writes tokenizer.ggml.add_bos_token)"
            ),
        )
    ]


def _stops(meta: GgufFile, source: Model) -> list[Finding]:
    """Every token the original stops on is a stop id of the file (EOS, EOT or EOM)."""
    from templatecheck.tokens import stop_set

    expected = stop_set(source)
    missing = [i for i in expected.ids if i not in meta.stop_ids]
    if not missing:
        return []
    names = {i: str(source.tokenizer.convert_ids_to_tokens(i)) for i in missing}
    free = [n for n in ("eot", "eom", "eos") if meta.token_id(n) is None] or ["eot"]
    settings = " ".join(
        f"--special-token {slot} {shlex.quote(names[i])}" for slot, i in zip(free, missing, strict=False)
    )
    return [
        STOP_SET(
            f"the original stops on {', '.join(f'{names[i]!r} ({i})' for i in missing)} ({expected.source}), "
            f"which the GGUF does not name (its stop ids: EOS {meta.token_id('eos')}, EOT {meta.token_id('eot')}, "
            f"EOM {meta.token_id('eom')})",
            fix=f"gguf-new-metadata {settings} IN.gguf OUT.gguf (tokenizer.ggml.eot_token_id, eom_token_id)",
        )
    ]


@check(Layer.ENGINE, needs="parses", named=True)
def gguf_matches_original(subject: Subject) -> list[Finding]:
    """A GGUF file that behaves otherwise than the model it was converted from (``--tc-compare-to``): a stale
    or different template (compared on the plain conversations and the suite's sample, not as text), a
    control token with another id or split into several, another add-BOS flag, a stop token of the original
    that the file does not name."""
    meta = subject.model.gguf
    if subject.options.compare_to is None:
        return [
            skipped("no --tc-compare-to DIR_OR_ID given (the original model a GGUF file is compared with)")
        ]
    if meta is None:
        return [skipped(f"{subject.model.name} is not a GGUF file (--tc-compare-to compares a GGUF --model)")]
    source = original(subject.options.compare_to)
    findings = [
        *_templates(subject, source),
        *_control_tokens(subject, meta, source),
        *_bos(subject, meta, source),
        *_stops(meta, source),
    ]
    return findings or [
        note(
            f"the GGUF matches {source.name}: its template on the plain conversations and the sample, the "
            "control-token ids and their single-token encoding, BOS handling and the stop set"
        )
    ]


__all__ = ["gguf_matches_original", "original"]
