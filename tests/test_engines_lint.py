"""Every claim of the static portability lint holds in the engines installed here: each rule's example renders
as stated in transformers, breaks (fails or prints other text) in every engine the rule names, and renders the
same in every engine it does not name; and the lint finds the rule in its own example."""

from __future__ import annotations

import pytest

from templatecheck.engines import ENGINES, FAILS, RULES, Engine, Rule, scan
from templatecheck.render import PINNED_CLOCK, Call, Limits, Renderer, RenderError, parse_template

RENDERER = Renderer()
USER = [{"role": "user", "content": "x"}]


def _breaks(engine: Engine, rule: Rule) -> bool:
    context = RENDERER.context(rule.example, Call(USER))
    got = engine.render_many(rule.example, [context], Limits(), PINNED_CLOCK)[0]
    if rule.effect == FAILS:
        return isinstance(got, RenderError)
    return not isinstance(got, RenderError) and got != rule.expected


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.construct)
def test_rule_example_renders_as_stated_in_transformers_and_is_found(rule: Rule) -> None:
    assert RENDERER.render(rule.example, USER).text == rule.expected
    assert rule in [h.rule for h in scan(parse_template(rule.example), rule.example)]


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.construct)
def test_rule_holds_in_the_engine(rule: Rule, engine: Engine) -> None:
    why = engine.missing()
    if why is not None:
        pytest.skip(f"{engine.title}: {why}")
    assert _breaks(engine, rule) is (engine.name in rule.engines)


@pytest.mark.parametrize(
    "source",
    [
        "{% for m in messages %}{{ loop.previtem.role if loop.previtem is defined }}{% endfor %}",
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
        "{% if messages[0] is mapping %}y{% endif %}",
        "{% for k, v in messages[0]|items %}{{ k }}{% endfor %}{% for k, v in messages[0].items() %}{{ v }}{% endfor %}",
        "{{- messages[0].content.strip() ~ messages[0].content.startswith('x') }}",
    ],
)
def test_constructs_that_survive_both_engines_have_no_rule(source: str) -> None:
    found = [
        h.rule.construct
        for h in scan(parse_template(source), source)
        if h.rule.construct != "printing a boolean"
    ]
    assert found == []
    for engine in ENGINES:
        if engine.missing() is None:
            context = RENDERER.context(source, Call(USER))
            got = engine.render_many(source, [context], Limits(), PINNED_CLOCK)[0]
            assert not isinstance(got, RenderError), got
