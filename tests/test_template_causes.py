"""The causes of the template layer as a whole: every one has a test that triggers it, no finding goes without a
cause, and the capability probe survives templates that do not parse or render."""

from __future__ import annotations

import re

import pytest

from templatecheck.capabilities import probe
from templatecheck.causes import CAUSES
from templatecheck.checks import REGISTRY
from templatecheck.checks.roles import survey
from templatecheck.result import Layer, Outcome
from tests.conftest import ROOT, subject, subject_with_template

TEMPLATE_CHECKS = [name for name, c in REGISTRY.items() if c.layer is Layer.TEMPLATE and name != "sandbox"]
TESTS = "".join(
    (ROOT / "tests" / f).read_text()
    for f in ("test_checks_template.py", "test_checks_tools.py", "test_checks_agent.py")
)
ROLE_TESTS = (ROOT / "tests" / "test_checks_roles.py").read_text()


@pytest.mark.parametrize("check", TEMPLATE_CHECKS)
def test_every_cause_of_the_template_layer_is_triggered_by_a_test(check: str) -> None:
    """Each cause key is named in a test that renders a template triggering it (role orders: by their key)."""
    owned = REGISTRY[check].causes
    assert owned, f"{check} registers no cause"
    for key in owned:
        order = re.match(r"role_policy\.(\w+)_(dropped|crash)$", key)
        if order:
            assert f'"{order.group(1)}":' in ROLE_TESTS, key  # a row of the parametrized role-order tests
        else:
            assert f'"{key}"' in TESTS + ROLE_TESTS, f"no test triggers {key}"


def test_every_cause_says_why_its_severity() -> None:
    for check in TEMPLATE_CHECKS:
        for key in REGISTRY[check].causes:
            assert CAUSES[key].why.strip() and not CAUSES[key].why.endswith("."), key


SOURCES = {
    "does not parse": "{% for m in messages %}{{ m.content }}",
    "crashes": "{{ messages[0].content.nope() }}",
    "renders nothing": "",
    "raises": "{{ raise_exception('no') }}",
}


@pytest.mark.parametrize("source", list(SOURCES.values()), ids=list(SOURCES))
def test_probes_and_checks_survive_templates_that_do_not_render(source: str) -> None:
    target = subject_with_template("hermes-3-tiny", source)
    caps = survey(target)
    assert not (caps.system or caps.tools or caps.tool_calls or caps.list_content)
    results = {name: REGISTRY[name](target) for name in TEMPLATE_CHECKS}
    failing = [name for name, r in results.items() if r.outcome is Outcome.FAILED]
    assert failing == ["renders"], failing
    assert all(not f.cause.endswith(".unclassified") for r in results.values() for f in r.findings)


def test_the_probe_tells_a_repr_from_absent_list_content() -> None:
    printed = subject_with_template("hermes-3-tiny", "{% for m in messages %}{{ m.content }}{% endfor %}")
    assert probe(printed).list_content is False and probe(printed).repr_only == frozenset({"list content"})
    assert probe(subject("hermes-3-tiny")).repr_only == frozenset()
