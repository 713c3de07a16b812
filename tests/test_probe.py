"""The torch engine of the generation layer: loading, greedy generation, likelihoods, evaluation."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from templatecheck import probe  # noqa: E402
from templatecheck.errors import TemplatecheckError  # noqa: E402
from templatecheck.model import Subject, load_model  # noqa: E402
from templatecheck.options import Options  # noqa: E402
from tests.conftest import FIXTURES, fixture_model  # noqa: E402

TRAINED = "tiny-chatml"


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> probe.Loaded:
    """A randomly initialised Llama with the fixture tokenizer: generation parity does not need training."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("random")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        shutil.copyfile(FIXTURES / TRAINED / name, directory / name)
    torch.manual_seed(0)
    config = LlamaConfig(**json.loads((directory / "config.json").read_text()))
    LlamaForCausalLM(config).save_pretrained(directory)
    return probe.load(load_model(str(directory)), "cpu")


ROWS = [[1024, 5, 6, 7, 8, 9, 10], [1024, 11, 12], [1024, 13, 14, 15, 16], [1024, 17]]


def test_greedy_equals_model_generate_token_for_token(random_model: probe.Loaded) -> None:
    stop, pad, budget = [1027, 40], 1027, 12
    ours = probe.greedy(random_model, ROWS, [budget] * len(ROWS), stop, pad)
    ids, mask = probe._left_pad(ROWS, pad, random_model.device)
    theirs = random_model.module.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=budget,
        do_sample=False,
        eos_token_id=stop,
        pad_token_id=pad,
    )[:, ids.shape[1] :].tolist()
    for mine, row in zip(ours, theirs, strict=True):
        end = next((i + 1 for i, t in enumerate(row) if t in stop), len(row))
        assert mine == row[:end]


def test_each_row_keeps_its_own_budget(random_model: probe.Loaded) -> None:
    out = probe.greedy(random_model, ROWS, [3, 1, 5, 2], [], 1027)
    assert [len(r) for r in out] == [3, 1, 5, 2]
    alone = probe.greedy(random_model, ROWS[2:3], [5], [], 1027)
    assert alone[0] == out[2]  # padding and batching do not change a row's continuation


def test_answer_logprobs_equal_a_direct_computation(random_model: probe.Loaded) -> None:
    answers = [[20, 21], [22], [23, 24, 25], [26]]
    got = probe.answer_logprobs(random_model, ROWS, answers, 1027)
    for row, answer, value in zip(ROWS, answers, got, strict=True):
        ids = torch.tensor([[*row, *answer]])
        with torch.no_grad():
            logprobs = random_model.module(input_ids=ids).logits[0].float().log_softmax(-1)
        expected = sum(float(logprobs[len(row) - 1 + j, t]) for j, t in enumerate(answer)) / len(answer)
        assert value == pytest.approx(expected, abs=1e-4)


def test_batches_respect_the_token_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "BATCH_TOKENS", 10)
    batches = probe._batches([4, 2, 5, 3, 9])
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max([4, 2, 5, 3, 9][i] for i in batch) <= 10


def test_weights_load_once_per_directory_and_device() -> None:
    model = fixture_model(TRAINED)
    first = probe.load(model, "cpu")
    assert probe.load(model, None) is first  # no CUDA here: the default is the CPU
    assert first.device.type == "cpu" and first.dtype == torch.float32
    assert sum(p.numel() for p in first.module.parameters()) < 2_000_000


def test_device_errors_say_what_to_use() -> None:
    with pytest.raises(TemplatecheckError, match="--tc-device 'gpu' is not a torch device; use cpu, cuda"):
        probe.pick_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            TemplatecheckError, match=r"--tc-device 'cuda': CUDA is not available .* use --tc-device cpu"
        ):
            probe.pick_device("cuda")
    assert probe.pick_device("cpu").type == "cpu"


def test_stop_tokens_from_generation_config_or_tokenizer() -> None:
    model = fixture_model(TRAINED)
    assert probe.stop_tokens(model) == ((1027,), "generation_config.json eos_token_id")
    assert probe.stop_tokens(replace(model, generation_config={"eos_token_id": [1025, 1030]}))[0] == (
        1025,
        1030,
    )
    stop, source = probe.stop_tokens(replace(model, generation_config=None))
    assert stop == (1027,) and source == "the tokenizer's eos_token '<|im_end|>' (no generation_config.json)"
    stop, source = probe.stop_tokens(replace(model, generation_config={"bos_token_id": 1024}))
    assert source == "the tokenizer's eos_token '<|im_end|>' (no eos_token_id in generation_config.json)"


@pytest.mark.parametrize("eos", [True, -1, 1e20, 1.5, "abc", {"id": 1027}, [1027, "x"], [], 10**6])
def test_stop_tokens_refuse_what_is_not_a_token_id(eos: Any) -> None:
    """Generation stops where the static checks say: an invalid eos_token_id is never used as an id (the
    end_of_turn check reports it); its valid entries, else the tokenizer's eos, are."""
    model = replace(fixture_model(TRAINED), generation_config={"eos_token_id": eos}, cache={})
    stop, source = probe.stop_tokens(model)
    assert stop == (1027,)
    assert "its valid entries" in source if eos == [1027, "x"] else "is not valid" in source


def test_a_directory_without_safetensors_is_one_clear_error() -> None:
    model = fixture_model("hermes-3-tiny")
    with pytest.raises(
        TemplatecheckError, match=r"no \*.safetensors weights in .*hermes-3-tiny; --tc-generate loads"
    ):
        probe.load(model, "cpu")


def test_evaluation_of_the_trained_model() -> None:
    model = fixture_model(TRAINED)
    ev = probe.evaluate(Subject(model, model.templates["default"], Options(generate=True)))
    assert probe.evaluate(Subject(model, model.templates["default"], Options(generate=True))) is ev
    names = [s.name for s in ev.scores]
    assert names[0] == "shipped" and "chatml" in names and "llama-3" in names
    assert "chatml + system prompt" in ev.shipped.same_as  # the template is ChatML with that system prompt
    assert "shipped + system prompt" in ev.shipped.same_as
    assert all(len(s.replies) == 24 for s in ev.scores)
    assert ev.shipped.correct >= 16 and ev.shipped.stopped == 24  # a tiny model: 19/24 when it was trained
    assert ev.shipped.loglik > -1.5
    assert ev.tools is None  # the default template renders no tools
    reply = ev.shipped.replies[0]
    assert reply.text == "apple" and reply.raw == "apple" and reply.ids[-1] == 1027 and reply.stopped
    assert ev.generated > 0 and ev.seconds > 0 and ev.device == "cpu" and ev.dtype == "float32"


def test_evaluation_with_tools_and_a_probe_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps(
            {
                "name": "mine",
                "messages": [{"role": "user", "content": "Reply with the word tea and nothing else."}],
                "answer": "tea",
            }
        )
        + "\n"
    )
    model = fixture_model(TRAINED)
    ev = probe.evaluate(
        Subject(model, model.templates["tool_use"], Options(generate=True, probe_file=str(path)))
    )
    assert len(ev.shipped.replies) == 25 and ev.shipped.replies[-1].probe.name == "mine"
    assert ev.tools is not None and ev.call_format is not None
    assert len(ev.tools.replies) == 4
    # the tiny model writes well-formed calls; copying the city right is beyond it (it says Berlin)
    assert all(r.call is not None and r.call.name == "get_weather" and r.stopped for r in ev.tools.replies)
    assert ev.tools.correct == sum(r.call == r.probe.call for r in ev.tools.replies)
    # the families write no tool definitions: a tool_use template is compared with its own variants only
    assert [s.name for s in ev.scores][1:] == [
        "shipped + system prompt",
        "shipped without BOS",
        "shipped with double BOS",
    ]


def test_weights_that_do_not_load_are_one_clear_error(tmp_path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        shutil.copyfile(FIXTURES / TRAINED / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(
        TemplatecheckError, match=r"the weights in .* do not load as a causal LM \(.*\); --tc-generate needs"
    ):
        probe.load(load_model(str(tmp_path)), "cpu")


def test_remote_code_is_never_run(tmp_path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        shutil.copyfile(FIXTURES / TRAINED / name, tmp_path / name)
    config = json.loads((FIXTURES / TRAINED / "config.json").read_text())
    config.update(model_type="custom-tiny", auto_map={"AutoModelForCausalLM": "modeling_custom.Custom"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(TemplatecheckError, match="do not load as a causal LM"):
        probe.load(load_model(str(tmp_path)), "cpu")


# ------------------------------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.lists(st.integers(1, 6000), max_size=60))
def test_batches_partition_the_rows_within_the_budget(lengths: list[int]) -> None:
    batches = probe._batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= probe.BATCH_TOKENS


@settings(max_examples=8, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(ROWS))), st.integers(1, 6)), min_size=1, max_size=5))
def test_a_rows_continuation_does_not_depend_on_its_batch(
    random_model: probe.Loaded, picks: list[tuple[int, int]]
) -> None:
    rows = [ROWS[i] for i, _ in picks]
    budgets = [b for _, b in picks]
    together = probe.greedy(random_model, rows, budgets, [1027], 1027)
    for row, budget, out in zip(rows, budgets, together, strict=True):
        assert probe.greedy(random_model, [row], [budget], [1027], 1027) == [out]
