"""The reference formats against real data: the corpus' templates and goldens, and the real tokenizers.

What agrees and what differs is the issue's closing table (``python benchmarks/reference_corpus.py``
prints it in full); these tests pin the findings that are known facts about the models. Skipped when
../shared is absent.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from templatecheck.checks.reference import reference
from templatecheck.model import Subject, load_model
from templatecheck.result import Outcome
from tests.conftest import ROOT, SHARED, needs_shared

pytestmark = needs_shared
CORPUS = SHARED / "corpus"


def _survey_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reference_corpus", ROOT / "benchmarks" / "reference_corpus.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def survey() -> tuple[ModuleType, dict[str, object]]:
    module = _survey_module()
    rows = module.survey(CORPUS, examples=10)
    return module, {row.template: row for row in rows}


def verdict(rows: dict[str, object], template: str) -> str:
    return rows[template].verdict  # type: ignore[attr-defined, no-any-return]


def test_the_reference_formats_agree_with_the_official_templates_that_follow_them(
    survey: tuple[ModuleType, dict[str, object]],
) -> None:
    _, rows = survey
    for template in (
        "meta-llama__Meta-Llama-3-8B-Instruct@llamacpp-testschat#default",
        "Qwen__Qwen2.5-7B-Instruct@llamacpp#default",
        "teknium__OpenHermes-2.5-Mistral-7B@llamacpp-testschat#default",
        "NousResearch__Hermes-2-Pro-Llama-3-8B@llamacpp-testschat#default",
        "google__gemma-7b-it@llamacpp-testschat#default",
        "google__gemma-2-2b-it@llamacpp#default",
        "HuggingFaceH4__zephyr-7b-beta@hfjs#default",
        "mistralai__mistral-common_v1_spm@mistral-common#default",
        "hf-internal-testing__llama-tokenizer@hfjs#default",
    ):
        assert verdict(rows, template) == "agrees", (template, rows[template].why())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("template", "family", "why"),
    [
        # Llama 3.1 (and 3.3) default the date to 26 Jul 2024 instead of today's.
        ("meta-llama__Llama-3.1-8B-Instruct@llamacpp#default", "llama3.1", "Today Date: 26 Jul 2024"),
        ("meta-llama__Llama-3.3-70B-Instruct@llamacpp#default", "llama3.1", "Today Date: 26 Jul 2024"),
        # Llama 3.2 JSON-quotes a string tool result (a string is iterable to Jinja, so it goes through tojson).
        ("meta-llama__Llama-3.2-3B-Instruct@llamacpp#default", "llama3.1", '"{\\\\"temperature'),
        # Meta-Llama-3-8B-Instruct as first released: the assistant header even without add_generation_prompt.
        ("meta-llama__Meta-Llama-3-8B-Instruct@llamacpp-tct#default", "llama3", "<|start_header_id|>assist"),
        # Hermes 3's default template inserts a system prompt of its own.
        ("NousResearch__Hermes-3-Llama-3.1-8B@llamacpp-testschat#default", "chatml", "You are a helpful"),
        # Mistral's v3 templates drop the system prompt unless the conversation ends with the user.
        (
            "mistralai__Mistral-Nemo-Instruct-2407@hfjs#default",
            "mistral-v3-tekken",
            "[INST]What is the capital",
        ),
        # Mistral's own v3 template, rendered as transformers does, HTML-escapes tool calls.
        ("mistralai__mistral-common_v3_spm@mistral-common#default", "mistral-v3", "&#34;name&#34;"),
        # Phi-3 mini/medium write the assistant header after every user turn; Phi-3.5 ends with <|endoftext|>.
        ("microsoft__Phi-3-mini-4k-instruct@llamacpp-tct#default", "phi3", "<|assistant|>"),
        ("microsoft__Phi-3.5-mini-instruct@llamacpp#default", "phi3", "<|endoftext|>"),
    ],
)
def test_known_deviations_of_real_templates(
    survey: tuple[ModuleType, dict[str, object]], template: str, family: str, why: str
) -> None:
    _, rows = survey
    row = rows[template]
    assert (row.family, row.verdict) == (family, "differs")  # type: ignore[attr-defined]
    assert why in row.why(), row.why()  # type: ignore[attr-defined]


def test_every_family_is_found_in_the_corpus_and_every_template_compares(
    survey: tuple[ModuleType, dict[str, object]],
) -> None:
    module, rows = survey
    families = {row.family for row in rows.values()}  # type: ignore[attr-defined]
    assert families >= {
        "chatml", "qwen2.5", "llama2", "llama3", "llama3.1", "mistral-v1", "mistral-v3", "mistral-v3-tekken",
        "mistral-v7", "mistral-v7-tekken", "gemma", "phi3", "zephyr",
    }  # fmt: skip
    assert not [t for t, row in rows.items() if row.verdict == "broken"]  # type: ignore[attr-defined]
    table = module.table([(row.family, row.verdict) for row in rows.values()])  # type: ignore[attr-defined]
    assert table[0].split() == ["family", "agree", "differ", "n/c"]


def test_goldens_of_each_family(survey: tuple[ModuleType, dict[str, object]]) -> None:
    """The corpus' plain-Jinja goldens, rendered by the reference of their template's family."""
    module, rows = survey
    checked = module.goldens(CORPUS, list(rows.values()))
    by = {g.golden: g for g in checked}
    for golden in (
        "llamacpp-testschat-2024-10-31/meta-llama-Meta-Llama-3.1-8B-Instruct-simple.json",
        "llamacpp-testschat-2024-10-31/meta-llama-Llama-3.2-3B-Instruct-system.json",
        "llamacpp-test-chat-template/12-Llama-3.json",
        "minja-2024-09-30/Qwen-Qwen2.5-7B-Instruct-tool_use.json",
        "llamacpp-testschat-2024-10-31/mistralai-Mistral-Nemo-Instruct-2407-simple.json",
        "llamacpp-testschat-2024-10-31/mistralai-Mixtral-8x7B-Instruct-v0.1-system.json",
        "llamacpp-testschat-2024-10-31/google-gemma-2-2b-it-simple.json",
        "minja-2024-09-30/microsoft-Phi-3.5-mini-instruct-system.json",
        "hfjs-e2e/custom/HuggingFaceH4__zephyr-7b-beta_add_generation_prompt_true.json",
        "hfjs-e2e/default/llama.json",
        "minja-2024-09-30/teknium-OpenHermes-2.5-Mistral-7B-system.json",
    ):
        assert by[golden].verdict == "agrees", (golden, by[golden].why)
    agree = sum(1 for g in checked if g.verdict == "agrees")
    assert len(checked) >= 120 and agree >= 60, module.table([(g.family, g.verdict) for g in checked])


@pytest.mark.parametrize(
    ("name", "outcome", "line"),
    [
        ("llama-3.1-8b-instruct", Outcome.FAILED, "    +Today Date: 26 Jul 2024␤"),
        (
            "llama-3-8b-instruct-original",
            Outcome.FAILED,
            "    +What is the capital of France?<|eot_id|><|start_header_id|>assistant",
        ),
        ("hermes-3-llama-3.1-8b", Outcome.FAILED, "    +You are a helpful assistant.<|im_end|>␤"),
        ("mistral-7b-instruct-v0.3", Outcome.FAILED, "[TOOL_CALLS] [{&#34;name&#34;: &#34;get_weather&#34;"),
    ],
)
def test_the_reference_check_on_the_real_tokenizer_directories(
    name: str, outcome: Outcome, line: str
) -> None:
    model = load_model(str(SHARED / "models" / name))
    result = reference(Subject(model, model.templates["default"]))
    assert result.outcome is outcome
    assert line in result.message, result.message
