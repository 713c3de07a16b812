"""Prompt variants: what each renders, and that the family renderers agree with the fixture templates."""

from __future__ import annotations

import pytest

from templatecheck import conversation as conv
from templatecheck.probeset import BUILTIN, Probe
from templatecheck.variants import DEFAULT_SYSTEM, variants, with_system
from tests.conftest import subject, subject_with_template

BOS = "<|begin_of_text|>"
RECALL = next(p for p in BUILTIN if p.name == "recall-tree")
SYSTEM = next(p for p in BUILTIN if p.name == "system-banana")


def by_name(found: list) -> dict:  # type: ignore[type-arg]
    return {v.name: v for v in found}


def test_variants_of_a_chatml_template_that_writes_bos() -> None:
    found = by_name(variants(subject("hermes-3-tiny")))
    assert list(found) == [
        "shipped",
        "shipped + system prompt",
        "shipped without BOS",
        "shipped with double BOS",
        "chatml",
        "chatml + system prompt",
        "llama-3",
        "llama-3 + system prompt",
    ]
    shipped = found["shipped"].render(RECALL)
    assert shipped.startswith(BOS + '<|im_start|>user\nRemember this word: "tree".<|im_end|>\n')
    assert shipped.endswith("<|im_start|>assistant\n")
    assert found["shipped without BOS"].render(RECALL) == shipped.removeprefix(BOS)
    assert found["shipped with double BOS"].render(RECALL) == BOS + shipped
    assert found["shipped + system prompt"].render(RECALL) == (
        f"{BOS}<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n" + shipped.removeprefix(BOS)
    )
    # a probe with its own system message keeps it
    assert found["shipped + system prompt"].render(SYSTEM) == found["shipped"].render(SYSTEM)


@pytest.mark.parametrize("probe", BUILTIN[::5], ids=lambda p: p.name)
def test_family_renderers_equal_the_fixture_templates(probe: Probe) -> None:
    """The private ChatML and Llama-3 renderers write what fixtures/build.py's templates write."""
    hermes, llama = by_name(variants(subject("hermes-3-tiny"))), variants(subject("llama-3-tiny"))
    assert hermes["chatml"].render(probe) == hermes["shipped"].render(probe)
    assert by_name(llama)["llama-3"].render(probe) == by_name(llama)["shipped"].render(probe)
    assert hermes["llama-3"].render(probe) == by_name(llama)["shipped"].render(probe)


def test_a_template_without_bos_gets_a_with_bos_variant_and_no_bos_in_families() -> None:
    found = by_name(variants(subject("broken/no-bos")))
    assert "shipped without BOS" not in found and "shipped with double BOS" not in found
    shipped = found["shipped"].render(RECALL)
    assert found["shipped with BOS"].render(RECALL) == BOS + shipped
    assert found["chatml"].render(RECALL) == shipped  # the families follow the template's BOS convention


def test_families_need_their_control_tokens_in_the_vocabulary() -> None:
    source = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"
    found = by_name(variants(subject_with_template("hermes-3-tiny", source)))
    assert {"chatml", "llama-3"} <= set(found)  # the fixture tokenizer has both families' tokens
    assert (
        found["shipped"]
        .render(RECALL)
        .endswith("user: Which word did I ask you to remember? Reply with the word only.\nassistant:")
    )


def test_a_tool_use_template_is_compared_with_its_own_variants_only() -> None:
    found = by_name(variants(subject("hermes-3-tiny", "tool_use")))
    assert list(found) == [
        "shipped",
        "shipped + system prompt",
        "shipped without BOS",
        "shipped with double BOS",
    ]
    assert "<tools>" in found["shipped"].render(RECALL)


def test_with_system_only_adds_a_missing_system_message() -> None:
    assert with_system(conv.USER_ONLY) == [conv.system(DEFAULT_SYSTEM), *conv.USER_ONLY]
    assert with_system(conv.SYSTEM_USER) == conv.SYSTEM_USER
