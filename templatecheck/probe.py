"""Generations and likelihoods: the model's weights, run with torch on the probe set under prompt variants.

Only the generation layer imports this module, and only under ``--tc-generate``: it imports torch at once and
transformers when it loads weights. Weights load once per process and device (``AutoModelForCausalLM``, never
``trust_remote_code``; bf16 on CUDA, fp32 elsewhere); each template is evaluated once per process, and every
generation check reads that one :class:`Evaluation`.

Generation is greedy and batched: prompts are left-padded, grouped by length into batches of about
:data:`BATCH_TOKENS` tokens, prefilled in one forward pass each, then decoded one token per step with the KV
cache until every row has produced a stop token or spent its budget. A row's reply is what a chat client
would show: the tokens before the first stop token, decoded without special tokens. Likelihoods are the mean
log-probability per token of each expected answer appended to the prompt, from one more forward pass per batch.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from templatecheck.errors import TemplatecheckError
from templatecheck.evaluation import Evaluation, Plan, Reply, Scores
from templatecheck.model import Model, Subject, weights_directory
from templatecheck.probeset import BUILTIN, BUILTIN_TOOLS, Probe, read_probe_file
from templatecheck.render import RenderError
from templatecheck.tokens import encode, stop_set
from templatecheck.toolcalls import CallFormat, call_format, parse_call, same_call
from templatecheck.variants import Variant, variants

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Rows x padded width of one forward batch.
BATCH_TOKENS = 16384


# ------------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class Loaded:
    """A model's weights on a device."""

    module: PreTrainedModel
    device: torch.device
    seconds: float

    @property
    def dtype(self) -> torch.dtype:
        return self.module.dtype


_LOADED: dict[tuple[str, str], Loaded] = {}


def pick_device(requested: str | None) -> torch.device:
    """``requested``, or CUDA when available, else CPU; an unusable device is an error that says why."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise TemplatecheckError(
            f"--tc-device {requested!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TemplatecheckError(
            f"--tc-device {requested!r}: CUDA is not available to torch {torch.__version__}; "
            "use --tc-device cpu, or install a CUDA build of torch"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TemplatecheckError(f"--tc-device {requested!r}: MPS is not available; use --tc-device cpu")
    return device


def load(model: Model, device: str | None = None) -> Loaded:
    """The weights of ``model`` on ``device``, loaded once per process (a Hub model's are downloaded now)."""
    target = pick_device(device)
    key = (str(model.directory), str(target))
    if key in _LOADED:
        return _LOADED[key]
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    directory = weights_directory(model)
    if not any(directory.glob("*.safetensors")):
        raise TemplatecheckError(
            f"model {model.ref.text!r}: no *.safetensors weights in {directory}; --tc-generate loads safetensors "
            "only (never pickled .bin files): convert the checkpoint, or run without --tc-generate"
        )
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    start = time.perf_counter()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        module = AutoModelForCausalLM.from_pretrained(
            str(directory), dtype=dtype, trust_remote_code=False, use_safetensors=True
        )
    except Exception as exc:
        raise TemplatecheckError(
            f"model {model.ref.text!r}: the weights in {directory} do not load as a causal LM "
            f"({type(exc).__name__}: {exc}); --tc-generate needs a model class of transformers (no remote code)"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    module.to(target).eval()  # type: ignore[arg-type]
    _LOADED[key] = Loaded(module, target, time.perf_counter() - start)
    return _LOADED[key]


def stop_tokens(model: Model) -> tuple[tuple[int, ...], str]:
    """The ids generation stops at, and where they come from: the model's stop set
    (:func:`~templatecheck.tokens.stop_set`: ``generation_config.json``'s ``eos_token_id`` validated against the
    vocabulary, else the tokenizer's EOS), so that generation stops where the static checks say it does."""
    stop = stop_set(model)
    return stop.ids, stop.source


# ---------------------------------------------------------------------------------------------- forward passes


def _batches(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices grouped by length into batches of at most BATCH_TOKENS padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[i] <= BATCH_TOKENS:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _left_pad(
    rows: Sequence[Sequence[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _forward_options(module: PreTrainedModel) -> tuple[str, bool]:
    """The name of the KV-cache argument (``cache`` in recent transformers) and whether ``logits_to_keep`` is."""
    parameters = inspect.signature(module.forward).parameters
    return ("cache" if "cache" in parameters else "past_key_values"), "logits_to_keep" in parameters


@torch.inference_mode()
def greedy(
    lm: Loaded, rows: Sequence[Sequence[int]], budgets: Sequence[int], stop: Sequence[int], pad: int
) -> list[list[int]]:
    """Greedy continuations of ``rows``: each ends with its first stop token or after its budget."""
    out: list[list[int]] = [[] for _ in rows]
    for batch in _batches([len(row) for row in rows]):
        replies = _greedy_batch(lm, [rows[i] for i in batch], [budgets[i] for i in batch], stop, pad)
        for i, tokens in zip(batch, replies, strict=True):
            out[i] = tokens
    return out


def _greedy_batch(
    lm: Loaded, rows: Sequence[Sequence[int]], budgets: Sequence[int], stop: Sequence[int], pad: int
) -> list[list[int]]:
    module, device = lm.module, lm.device
    cache_name, keep = _forward_options(module)
    ids, mask = _left_pad(rows, pad, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    extra: dict[str, Any] = {"logits_to_keep": 1} if keep else {}
    output = module(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
    stops = torch.tensor(list(stop) or [-1], device=device)
    limit = torch.tensor(list(budgets), device=device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    steps: list[torch.Tensor] = []
    for step in range(max(budgets)):
        chosen = output.logits[:, -1].argmax(-1)
        chosen = torch.where(done, torch.full_like(chosen, pad), chosen)
        steps.append(chosen)
        done |= torch.isin(chosen, stops) | (limit <= step + 1)
        if bool(done.all()):
            break
        cache = getattr(output, cache_name, None)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        output = module(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=mask.sum(-1, keepdim=True) - 1,
            use_cache=True,
            **{cache_name: cache},
        )
    generated = torch.stack(steps, dim=1).tolist()
    stop_set = set(stop)
    replies = []
    for row, budget in zip(generated, budgets, strict=True):
        row = row[:budget]
        end = next((i + 1 for i, t in enumerate(row) if t in stop_set), len(row))
        replies.append(row[:end])
    return replies


@torch.inference_mode()
def answer_logprobs(
    lm: Loaded, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], pad: int
) -> list[float]:
    """The mean log-probability per token (nats) of each answer right after its prompt."""
    rows = [[*p, *a] for p, a in zip(prompts, answers, strict=True)]
    out = [0.0] * len(rows)
    _, keep = _forward_options(lm.module)
    for batch in _batches([len(r) for r in rows]):
        ids, mask = _left_pad([rows[i] for i in batch], pad, lm.device)
        span = max(len(answers[i]) for i in batch) + 1
        if span == 1:
            continue  # no answer tokens in this batch
        extra: dict[str, Any] = {"logits_to_keep": span} if keep else {}
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = lm.module(input_ids=ids, attention_mask=mask, position_ids=positions, **extra).logits
        logprobs = logits[:, -span:-1].float().log_softmax(-1)
        targets = ids[:, -span + 1 :]
        picked = logprobs.gather(-1, targets[..., None])[..., 0]
        for j, i in enumerate(batch):
            n = len(answers[i])
            out[i] = float(picked[j, picked.shape[1] - n :].mean()) if n else 0.0
    return out


# ------------------------------------------------------------------------------------------------ evaluation


_EVALUATIONS: dict[tuple[Any, ...], Evaluation] = {}


def probes_for(path: str | None) -> tuple[tuple[Probe, ...], tuple[Probe, ...]]:
    """The (answer, tool) items: the built-in set plus the user's probe file."""
    extra = read_probe_file(Path(path)) if path else ()
    items = (*BUILTIN, *(p for p in extra if p.call is None))
    tools = (*BUILTIN_TOOLS, *(p for p in extra if p.call is not None))
    return items, tools


def evaluate(subject: Subject) -> Evaluation:
    """Run the probe set on ``subject`` under every variant (once per process per template and options)."""
    options, model = subject.options, subject.model
    key = (
        str(model.directory),
        subject.template.name,
        subject.template.source,
        options.device,
        options.max_new_tokens,
        options.probe_file,
    )
    if key not in _EVALUATIONS:
        lm = load(model, options.device)
        start = time.perf_counter()
        _EVALUATIONS[key] = run(plan(subject), lm, model.tokenizer, start)
    return _EVALUATIONS[key]


def plan(subject: Subject) -> Plan:
    """Render and tokenize every prompt of the evaluation of ``subject``; no forward pass yet."""
    tokenizer = subject.model.tokenizer
    items, tool_items = probes_for(subject.options.probe_file)
    stop, stop_source = stop_tokens(subject.model)
    budget = subject.options.max_new_tokens
    all_variants = variants(subject)
    shipped = all_variants[0]
    kept, unrendered = [], []
    for probe in items:
        try:
            shipped.render(probe)
            kept.append(probe)
        except RenderError as error:
            unrendered.append(f"{probe.name}: {error}")
    distinct: list[tuple[Variant, tuple[str, ...]]] = []
    same: dict[str, list[str]] = {}
    for variant in all_variants:
        try:
            texts = tuple(variant.render(p) for p in kept)
        except RenderError:
            continue  # a variant this template cannot express (a system prompt it refuses)
        twin = next((v.name for v, other in distinct if other == texts), None)
        if twin is None:
            distinct.append((variant, texts))
        else:
            same.setdefault(twin, []).append(variant.name)
    fmt = call_format(subject) if tool_items else None
    tools: list[tuple[Probe, str]] = []
    for probe in tool_items if fmt is not None else ():
        try:
            tools.append((probe, shipped.render(probe)))
        except RenderError as error:
            unrendered.append(f"{probe.name}: {error}")
    rows, budgets, answers = [], [], []
    for _, texts in distinct:
        for probe, text in zip(kept, texts, strict=True):
            rows.append(tuple(encode(tokenizer, text)))
            budgets.append(probe.max_new_tokens or budget)
            answers.append(tuple(_answer_ids(tokenizer, text, probe.answer)))
    for probe, text in tools:
        rows.append(tuple(encode(tokenizer, text)))
        budgets.append(probe.max_new_tokens or budget)
    return Plan(
        probes=tuple(kept),
        unrendered=tuple(unrendered),
        variants=tuple(distinct),
        same={k: tuple(v) for k, v in same.items()},
        tool_probes=tuple(p for p, _ in tools),
        call_format=fmt,
        stop=stop,
        stop_source=stop_source,
        pad=_pad_id(tokenizer, stop),
        budget=budget,
        rows=tuple(rows),
        budgets=tuple(budgets),
        answers=tuple(answers),
    )


def run(plan: Plan, lm: Loaded, tokenizer: PreTrainedTokenizerBase, start: float | None = None) -> Evaluation:
    """Generate and score every row of ``plan``: the forward passes of one evaluation."""
    start = time.perf_counter() if start is None else start
    generated = greedy(lm, plan.rows, plan.budgets, plan.stop, plan.pad)
    logliks = answer_logprobs(lm, plan.rows[: len(plan.answers)], plan.answers, plan.pad)
    rows = iter(zip(generated, [*logliks, *[None] * len(plan.tool_probes)], strict=True))
    scores = []
    for variant, _ in plan.variants:
        replies = [_reply(tokenizer, p, *next(rows), plan.stop, None) for p in plan.probes]
        scores.append(Scores(variant, tuple(replies), plan.same.get(variant.name, ())))
    tools = None
    if plan.call_format is not None:
        replies = [_reply(tokenizer, p, *next(rows), plan.stop, plan.call_format) for p in plan.tool_probes]
        tools = Scores(plan.variants[0][0], tuple(replies))
    return Evaluation(
        stop=plan.stop,
        stop_source=plan.stop_source,
        budget=plan.budget,
        scores=tuple(scores),
        tools=tools,
        call_format=plan.call_format,
        unrendered=plan.unrendered,
        seconds=time.perf_counter() - start,
        generated=sum(len(g) for g in generated),
        device=str(lm.device),
        dtype=str(lm.dtype).removeprefix("torch."),
    )


def _pad_id(tokenizer: PreTrainedTokenizerBase, stop: Sequence[int]) -> int:
    for candidate in (tokenizer.pad_token_id, *stop, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


def _answer_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str) -> list[int]:
    """The tokens ``answer`` adds after ``prompt`` (as the model would write it), else the answer alone."""
    head, whole = encode(tokenizer, prompt), encode(tokenizer, prompt + answer)
    if whole[: len(head)] == head and len(whole) > len(head):
        return whole[len(head) :]
    return encode(tokenizer, answer)


def _reply(
    tokenizer: PreTrainedTokenizerBase,
    probe: Probe,
    ids: list[int],
    loglik: float | None,
    stop: Sequence[int],
    fmt: CallFormat | None,
) -> Reply:
    stopped = bool(ids) and ids[-1] in stop
    body = ids[:-1] if stopped else ids
    text = str(tokenizer.decode(body, skip_special_tokens=True)).strip()
    raw = str(tokenizer.decode(body, skip_special_tokens=False))
    if fmt is not None and probe.call is not None:
        call = parse_call(raw, fmt)
        correct = call is not None and same_call(call, probe.call)
        return Reply(probe, tuple(ids), text, raw, stopped, correct, None, call)
    return Reply(probe, tuple(ids), text, raw, stopped, probe.is_correct(text), loglik)
