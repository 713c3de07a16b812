"""The ``sandbox`` check and attribute names computed at run time, proven both ways: templates that reach for
fields by fixed or harmless names pass; names built to reach for internals are findings with their messages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from templatecheck.checks.sandbox import Attempt, escape_attempts, sandbox
from templatecheck.model import read_corpus
from templatecheck.render import RenderError
from templatecheck.result import Outcome
from tests.conftest import SHARED, needs_shared, subject_with_template

_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Templates that read fields by fixed names, by names that fold to public ones, or subscript by variables.
ORDINARY = [
    "{{ messages | selectattr('role', 'equalto', messages[0].role) | list | length }}",
    "{{ messages | map(attribute='content') | join(' ') }}",
    "{{ messages[0] | attr('con' ~ 'tent') }}",
    "{% for m in messages %}{% for key in m %}{{ m[key] }}{% endfor %}{% endfor %}",
    "{{ messages | sort(attribute='role') | map(attribute='role') | join }}",
    "{{ messages | groupby('role') | list | length }}",
    "{{ messages | selectattr('role', 'equalto', '_' ~ 'x') | list | length }}",
]


@pytest.mark.parametrize("source", ORDINARY)
def test_ordinary_attribute_access_passes(source: str) -> None:
    result = sandbox(subject_with_template("hermes-3-tiny", source + _CHAT))
    assert result.outcome is Outcome.PASSED, result.message
    assert escape_attempts(source) == []


#: (template, the name the check reports, the filter the message names).
FOLDED = [
    ("{{ messages | attr('_' * 2 ~ 'class' ~ '_' * 2) }}", "__class__", "the attr filter"),
    ("{{ messages | map(attribute='_' * 2 ~ 'init' ~ '_' * 2) | list }}", "__init__", "the map filter"),
    ("{{ messages | selectattr('__cla' + 'ss__') | list }}", "__class__", "the selectattr filter"),
    ("{{ messages | rejectattr('_' ~ '_dict_' ~ '_') | list }}", "__dict__", "the rejectattr filter"),
    ("{{ messages | sort(attribute=2 * '_' ~ 'len__') }}", "__len__", "the sort filter"),
    ("{{ messages | groupby(attribute='_' ~ 'x') | list }}", "_x", "the groupby filter"),
    ("{{ messages | sum(attribute='_' ~ 'x') }}", "_x", "the sum filter"),
    ("{{ messages | unique(attribute='_' ~ 'x') | list }}", "_x", "the unique filter"),
    ("{{ messages | max(attribute='_' ~ 'x') }}", "_x", "the max filter"),
    ("{{ messages | min(false, '_' ~ 'x') }}", "_x", "the min filter"),
    ("{{ messages | attr('a.' ~ '_' * 2 ~ 'class' ~ '_' * 2) }}", "a.__class__", "the attr filter"),
    ("{{ cycler['_' * 2 ~ 'init' ~ '_' * 2] }}", "__init__", "a subscript"),
]


@pytest.mark.parametrize(("source", "name", "given"), FOLDED)
def test_a_computed_name_that_folds_to_an_internal_is_reported_with_its_value(
    source: str, name: str, given: str
) -> None:
    result = sandbox(subject_with_template("hermes-3-tiny", source + _CHAT))
    assert result.outcome is Outcome.FAILED
    finding = next(f for f in result.findings if f.cause == "sandbox.escape_attempt")
    assert finding.message == (
        f"security: the template computes the attribute name {name!r} (line 1, given to {given}), which a chat "
        "template has no use for: a sandbox escape attempt disguised from a literal search (the sandbox "
        "blocks it)"
    )


#: Names the check cannot evaluate: variables, filters, names too long to be names.
UNKNOWN = [
    ("{% set n = messages[0].content %}{{ messages | attr(n) }}", "attr"),
    ("{{ messages | map(attribute=messages[0].role) | list }}", "map"),
    ("{{ messages | selectattr(messages[0].content | lower) | list }}", "selectattr"),
    ("{{ messages | attr('_' * 1000) }}", "attr"),
    ("{{ messages | attr(('_', 'class') | join) }}", "attr"),
    ("{{ messages | attr(name=messages[0].role) }}", "attr"),
]


@pytest.mark.parametrize(("source", "given"), UNKNOWN)
def test_a_name_computed_at_run_time_is_reported_as_computed(source: str, given: str) -> None:
    result = sandbox(subject_with_template("hermes-3-tiny", source + _CHAT))
    assert result.outcome is Outcome.FAILED
    finding = next(f for f in result.findings if f.cause == "sandbox.escape_attempt")
    assert finding.message == (
        f"security: the template computes the attribute name it gives to the {given} filter at run time (line "
        "1): a chat template reads fixed fields, and a name built at run time can reach for Python internals "
        "(the sandbox blocks those)"
    )


def test_the_sandbox_blocks_what_the_check_reports() -> None:
    """The finding is about an attempt the sandbox stops: the folded name gives nothing of the internals (the
    sandbox's ``attr`` answers undefined for an unsafe attribute), though the template renders."""
    source = (
        "{{ messages | attr('_' * 2 ~ 'class' ~ '_' * 2) }}|{{ messages | attr('_' * 2 ~ 'len' ~ '_' * 2) }}"
    )
    assert subject_with_template("hermes-3-tiny", source).render([{"role": "user", "content": "hi"}]) == "|"


def test_folding_a_long_name_builds_nothing() -> None:
    """The check folds without Jinja: a name of a trillion characters is not built, only refused as unknown."""
    start = time.perf_counter()
    found = escape_attempts("{{ messages | attr('_' * 1000000000000 ~ 'x') }}")
    assert found == [Attempt(1, None, "attr")]
    assert time.perf_counter() - start < 1.0


def test_lines_are_those_of_the_filter() -> None:
    source = "line one\n{{ messages | attr('_' ~ '_class__') }}\n{{ messages | attr(x) }}"
    assert escape_attempts(source) == [Attempt(2, "__class__", "attr"), Attempt(3, None, "attr")]


@needs_shared
def test_no_real_template_computes_an_attribute_name() -> None:
    """The real templates read fixed fields: the new findings have no false positive in the corpus."""
    templates = read_corpus(Path(SHARED) / "corpus" / "templates")
    assert len(templates) > 300
    flagged = []
    for name, template in templates.items():
        try:
            if escape_attempts(template.source):
                flagged.append(name)
        except RenderError:
            continue  # a corpus template that does not parse is the renders check's
    assert flagged == []
