"""The engine layer: the adapters (MiniJinja as TGI sets it up, @huggingface/jinja through Node), their bounds,
and the ``minijinja``/``hfjs`` checks proven both ways on small templates, messages asserted.

A test of an engine that is not installed here skips with the command that installs it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from templatecheck.checks.engine import construct_hits, differences, group_of, hfjs, minijinja, portability
from templatecheck.checks.tools import tools
from templatecheck.engines import (
    HFJS,
    HFJS_INSTALL,
    MINIJINJA,
    Engine,
    NodeProcess,
    engines_command,
    node,
    node_dir,
)
from templatecheck.render import PINNED_CLOCK, Call, Limits, Renderer, RenderError
from templatecheck.result import CheckResult, Finding, Outcome
from templatecheck.session import Session
from templatecheck.worker import GRACE
from tests.conftest import subject, subject_with_template
from tests.hostile_cases import CANARY_ENV, CANARY_VALUE, TEMPLATES, WORKER_TEMPLATES, TemplateCase
from tests.test_checks_tools import ARGUMENTS, BASE, RESULT


def needs(engine: Engine) -> pytest.MarkDecorator:
    why = engine.missing()
    return pytest.mark.skipif(why is not None, reason=f"{engine.title}: {why}")


needs_minijinja = needs(MINIJINJA)
needs_hfjs = needs(HFJS)

RENDERER = Renderer()
USER = [{"role": "user", "content": "Hi"}]


def render(engine: Engine, source: str, limits: Limits | None = None) -> str | RenderError:
    context = RENDERER.context(source, Call(USER))
    return engine.render_many(source, [context], limits or Limits(), PINNED_CLOCK)[0]


def only(result: CheckResult, cause: str) -> Finding:
    found = [f for f in result.findings if f.cause == cause]
    assert len(found) == 1, [(f.cause, f.message) for f in result.findings]
    return found[0]


# ------------------------------------------------------------------------------------------------ adapters


@needs_minijinja
def test_minijinja_renders_as_tgi_sets_it_up() -> None:
    assert (
        render(MINIJINJA, "{{ messages[0].content.strip() }}|{{ strftime_now('%Y-%m-%d') }}")
        == "Hi|2026-01-15"
    )
    # TGI's Environment::new(): no trim_blocks, no lstrip_blocks
    assert render(MINIJINJA, "  {% if true %}\nx{% endif %}") == "  \nx"
    # TGI rewrites [::-1] to |reverse and drops {% generation %} before compiling
    assert render(MINIJINJA, "{{ [1, 2][::-1]|join }}{% generation %}y{% endgeneration %}") == "21y"


@needs_minijinja
def test_minijinja_failures_are_values_with_their_kind() -> None:
    refused = render(MINIJINJA, "{{ raise_exception('no system role') }}")
    assert isinstance(refused, RenderError) and refused.kind == "refused"
    assert "no system role" in refused.message
    syntax = render(MINIJINJA, "{{ x.foo( }}")
    assert isinstance(syntax, RenderError) and syntax.kind == "syntax"
    unknown = render(MINIJINJA, "\n{{ 'a'.removeprefix('a') }}")
    assert isinstance(unknown, RenderError) and unknown.kind == "raised"
    assert "removeprefix" in unknown.message and "<string>:2" in unknown.message


@needs_minijinja
def test_minijinja_renders_inside_the_worker_bounds() -> None:
    big = render(MINIJINJA, "{{ 'x' * 5000 }}", Limits(max_output_chars=1000))
    assert isinstance(big, RenderError) and big.kind == "output"
    spin = render(MINIJINJA, "{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}")
    assert isinstance(spin, RenderError) and spin.kind == "timeout", spin


@needs_hfjs
def test_hfjs_renders_with_our_clock_and_refusals() -> None:
    assert render(HFJS, "{{ strftime_now('%d %B %Y') }}|{{ messages[0].content }}") == "15 January 2026|Hi"
    refused = render(HFJS, "{{ raise_exception('no tools') }}")
    assert isinstance(refused, RenderError) and refused.kind == "refused" and "no tools" in refused.message
    syntax = render(HFJS, "{{ x.foo( }}")
    assert isinstance(syntax, RenderError) and syntax.kind == "syntax"


@needs_hfjs
def test_hfjs_process_is_killed_at_the_deadline_and_started_again() -> None:
    process = NodeProcess()
    try:
        context = RENDERER.context("", Call(USER))
        # loops over small ranges: a range of 10^8 would exhaust Node's heap before the deadline on a fast machine
        spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        answers = process.run(spin, [context, context], Limits(seconds=0.5), PINNED_CLOCK)
        assert answers[0]["error"] == "timeout" and "Node process was stopped" in answers[0]["message"]
        assert answers[1]["error"] == "timeout" and "not rendered again" in answers[1]["message"]
        assert process.run("ok", [context], Limits(), PINNED_CLOCK) == [{"ok": "ok"}]
        assert process.starts == 2
        big = process.run(
            "{% for i in range(3000) %}xx{% endfor %}", [context], Limits(max_output_chars=100), None
        )
        assert big[0]["error"] == "output"
    finally:
        process.close()


@needs_hfjs
def test_hfjs_process_has_an_empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert node().run("{{ 1 }}", [{}], Limits(), None) == [{"ok": "1"}]
    process = node()._process
    assert process is not None
    environ = Path(f"/proc/{process.pid}/environ").read_bytes()
    assert environ == b""


def test_an_engine_not_installed_names_its_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEMPLATECHECK_NODE_DIR", str(tmp_path / "none"))
    assert node_dir() == tmp_path / "none"
    why = HFJS.missing()
    assert why is not None and HFJS_INSTALL in why
    result = hfjs(subject("llama-3-tiny"))
    assert result.outcome is Outcome.SKIPPED
    assert "templatecheck engines install" in result.message
    assert engines_command([]) == 0
    assert "hfjs (@huggingface/jinja" in capsys.readouterr().out
    assert engines_command(["bogus"]) == 2


def test_another_installed_version_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    manifest = tmp_path / "node_modules" / "@huggingface" / "jinja" / "package.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"version": "0.2.0"}')
    monkeypatch.setenv("TEMPLATECHECK_NODE_DIR", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/node")
    assert (
        HFJS.missing()
        == f"{tmp_path} holds @huggingface/jinja 0.2.0, not 0.5.11: templatecheck engines install"
    )


def test_install_command_is_npm_into_the_node_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from templatecheck import engines

    monkeypatch.setenv("TEMPLATECHECK_NODE_DIR", str(tmp_path))
    assert engines.install_command(node_dir()) == [
        "npm", "install", "--no-audit", "--no-fund", "--prefix", str(tmp_path), "@huggingface/jinja@0.5.11",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ the classifier


def test_classifier_groups_what_differs() -> None:
    assert group_of("a\nb", 1, "\n", "\n\n") == "whitespace"
    assert group_of('{"a": 1}', 5, " ", "") == "tojson"
    assert group_of('"x<y"', 2, "<", "\\u003c") == "tojson"
    assert group_of("True", 0, "T", "t") == "printing"
    assert group_of("None", 0, "None", "") == "printing"
    assert group_of("['a']", 1, "'", '"') == "printing"
    assert group_of("abc", 1, "b", "q") == "other"


def test_one_difference_per_group_and_line() -> None:
    source = "{{ x }}\nline two {{ y }}"
    found = differences(source, [], HFJS, "A\nline two True and True", "A\nline two true and true")
    assert [(d.group, d.line) for d in found] == [("printing", 2)]


# ------------------------------------------------------------------------------------------ the checks

CHATML = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor -%}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)


@needs_minijinja
def test_minijinja_passes_a_portable_template() -> None:
    result = minijinja(subject_with_template("hermes-3-tiny", CHATML))
    assert result.outcome is Outcome.PASSED, result.message
    assert "render identically" in result.findings[-1].message


@needs_minijinja
def test_minijinja_fails_on_a_method_it_lacks() -> None:
    source = "{%- for m in messages %}\n{{- m.content.removeprefix('x') }}\n{%- endfor %}"
    result = minijinja(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    found = only(result, "minijinja.string_method")
    assert found.message.startswith("MiniJinja lacks a Python string or dict method the template calls")
    assert "line 2, `.removeprefix(...)`" in found.message
    assert found.fix == "slice after a `startswith` test"


@needs_minijinja
def test_minijinja_notes_untrimmed_block_tags_the_lint_reports() -> None:
    """TGI sets no trim_blocks: the whitespace that differs comes from a block tag ``portability`` names, which
    reports it (one root cause, one warning); MiniJinja's check notes it with the rendering that shows it."""
    source = "{% for m in messages %}\n{{ m.content }}\n{% endfor %}"
    target = subject_with_template("hermes-3-tiny", source)
    assert only(portability(target), "portability.untrimmed_blocks").outcome is Outcome.WARNING
    result = minijinja(target)
    assert result.outcome is Outcome.PASSED, result.message
    found = only(result, "portability.untrimmed_blocks")
    assert found.message.startswith(
        "also observed portability.untrimmed_blocks (reported by `portability`): MiniJinja renders the same text "
        "with other whitespace where a block tag relies on trim_blocks/lstrip_blocks: line 1, `%}⏎`"
    )
    assert "TGI renders without trim_blocks/lstrip_blocks" in (found.fix or "")


def test_whitespace_that_trim_strips_in_python_only_is_named_at_the_filter() -> None:
    """Python's ``|trim`` strips ``\\x1f``, the other engines keep it: no block tag is the cause and no template
    change avoids it, so the engine checks note it (see ``NOTED``); other whitespace stays a difference."""
    source = "{% for m in messages %}{{ '<' + m.content|trim + '>' }}{% endfor %}"
    found = differences(source, construct_hits(source), HFJS, "<>", "<\x1f>")
    assert [(d.group, d.line, d.construct) for d in found] == [("trim", 1, "|trim")]  # noted, not a cause
    assert found[0].fix == (
        "nothing to change in the template: only text that begins or ends with such a separator renders otherwise"
    )
    plain = differences(source, construct_hits(source), HFJS, "<a\n>", "<a\n\n>")
    assert [(d.group, d.construct) for d in plain] == [("whitespace", "(no line named)")]  # not `|trim`


@needs_minijinja
def test_minijinja_warns_on_tojson_escaping_at_the_filter() -> None:
    result = minijinja(subject("hermes-3-tiny", "tool_use"))
    found = only(result, "minijinja.tojson")
    assert found.outcome is Outcome.WARNING
    assert "serializes JSON with other spacing or escaping" in found.message
    assert "`|tojson`" in found.message and "\\u003c" in found.message


@needs_hfjs
def test_hfjs_passes_a_portable_template() -> None:
    result = hfjs(subject_with_template("hermes-3-tiny", CHATML))
    assert result.outcome is Outcome.PASSED, result.message


@needs_hfjs
def test_hfjs_fails_on_a_string_method_with_its_line() -> None:
    source = "{%- for m in messages %}\n{{- '|'.join([m.role, m.content]) }}\n{%- endfor %}"
    result = hfjs(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.FAILED
    found = only(result, "hfjs.string_method")
    assert "line 2, `.join(...)`" in found.message
    assert "Cannot call something that is not a function" in found.message
    assert found.fix == "use the `join` filter: `items|join(', ')`"


@needs_hfjs
def test_hfjs_fails_on_a_loop_attribute_it_lacks() -> None:
    source = "{%- for m in messages %}{{ loop.cycle('A', 'B') }}: {{ m.content }}\n{% endfor %}"
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.loop_variable")
    assert "line 1, `loop.cycle(...)`" in found.message


@needs_hfjs
def test_hfjs_fails_on_printing_a_boolean() -> None:
    source = "{%- for m in messages %}{{ m.content }} first={{ loop.first }}\n{% endfor %}"
    result = hfjs(subject_with_template("hermes-3-tiny", source))
    found = only(result, "hfjs.printing")
    assert found.outcome is Outcome.FAILED
    assert "prints a value (None, a boolean, a list or dict) in other text than Python does" in found.message
    assert "transformers 'T', @huggingface/jinja 't'" in found.message


@needs_hfjs
def test_hfjs_fails_on_a_refusal_transformers_does_not_make() -> None:
    # `true|string` is 'True' in Python and 'true' in @huggingface/jinja: only there the template refuses
    source = "{%- if (true|string) != 'True' %}{{ raise_exception('unsupported') }}{% endif %}{{ messages[0].content }}"
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.raise_exception")
    assert found.outcome is Outcome.FAILED
    assert "refuses a conversation transformers renders" in found.message
    assert "line 1, `raise_exception(...)`\n@huggingface/jinja refuses: unsupported" in found.message
    source = "{%- if messages[0].content is not defined %}{{ raise_exception('no content') }}{% endif %}{{ messages[0].content }}"
    assert hfjs(subject_with_template("hermes-3-tiny", source)).outcome is Outcome.PASSED


@needs_hfjs
def test_hfjs_fails_on_a_construct_it_cannot_parse() -> None:
    source = "{%- for m in messages %}{% if m.role is in ['user'] %}{{ m.content }}{% endif %}{% endfor %}"
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.fails")
    assert "cannot parse or run the template on a valid conversation: line 1, `is in`" in found.message
    assert found.fix == "`x in y`"


# ------------------------------------------------------------------------------------------ the static lint


def test_portability_passes_a_portable_template() -> None:
    result = portability(subject_with_template("hermes-3-tiny", CHATML))
    assert result.outcome is Outcome.PASSED, result.message
    assert result.findings == ()


def test_portability_names_each_construct_with_its_lines_and_engines() -> None:
    source = (
        "{%- for m in messages %}\n"
        "{{- m.content.find('x') }}{{ loop.depth }}\n"
        "{{- '%s' % m.role }}{{ m.content|wordcount }}\n"
        "{%- endfor %}\n"
        "{% if true %}\nx{% endif %}"
    )
    result = portability(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.WARNING
    messages = {f.message: f.fix for f in result.findings}
    assert messages == {
        "@huggingface/jinja cannot run .find(): line 2": "test `'x' in s`, or split the string",
        "@huggingface/jinja prints differently loop.depth: line 2": "count the depth in a macro argument",
        "MiniJinja (TGI) and @huggingface/jinja cannot run '...' % value: line 3": "concatenate with `~`",
        "MiniJinja (TGI) and @huggingface/jinja cannot run |wordcount: line 3": "`(s.split()|length)`",
        "MiniJinja (TGI) renders other whitespace for a block tag ending its line without `-%}`: line 4, 5": (
            "close block tags with `-%}` (or open the next with `{%-`): TGI renders without "
            "trim_blocks/lstrip_blocks"
        ),
    }
    assert {f.cause for f in result.findings} == {
        "portability.unsupported",
        "portability.prints_differently",
        "portability.untrimmed_blocks",
    }


# ------------------------------------------------------------------------------------------ hostile templates


@pytest.mark.parametrize("engine", [MINIJINJA, HFJS], ids=lambda e: e.name)
@pytest.mark.parametrize("case", TEMPLATES + WORKER_TEMPLATES, ids=lambda c: c.name)
def test_hostile_templates_are_bounded_in_every_engine(
    case: TemplateCase, engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    why = engine.missing()
    if why is not None:
        pytest.skip(f"{engine.title}: {why}")
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)
    secret = tmp_path / "secret.txt"
    secret.write_text(CANARY_VALUE)
    source = case.source.replace("/etc/passwd", str(secret))
    limits = Limits(seconds=1.0, max_output_chars=1_000_000)
    context = RENDERER.context(source, Call(USER, add_generation_prompt=True))
    start = time.perf_counter()
    answers = engine.render_many(source, [context, context], limits, PINNED_CLOCK)
    elapsed = time.perf_counter() - start
    assert elapsed < 2 * (limits.seconds or 0) + 2 * GRACE + 3, f"{case.name} took {elapsed:.2f} s"
    for answer in answers:
        text = answer.message if isinstance(answer, RenderError) else answer
        assert isinstance(text, str) and len(text) <= 1_000_000
        assert CANARY_VALUE not in text


@needs_hfjs
def test_hfjs_names_the_line_its_error_message_points_to() -> None:
    # @huggingface/jinja's error names no line: the construct is found by what its message says
    source = "{%- set gears = {\n  0: 'a',\n  512: 'b'} %}\n{{- messages[0].content }}{{ gears[0] }}"
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.fails")
    assert "line 1, `{<number>: ...}`\n@huggingface/jinja: Object keys must be strings" in found.message
    assert found.fix == "string keys (`{'512': 128}`), or a list of pairs"


@needs_hfjs
def test_hfjs_names_the_filter_its_error_names() -> None:
    # @huggingface/jinja refuses `trim` on an undefined value, which Python's Jinja prints as ''
    source = "{%- for m in messages %}\n{{- m.content }}\n{{- m.missing|trim }}\n{%- endfor %}"
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.fails")
    assert (
        'line 3, `|trim`\n@huggingface/jinja: Cannot apply filter "trim" to type: UndefinedValue'
        in found.message
    )
    assert found.fix == "give a missing value a default before the filter: `(x or '')|trim`"
    fixed = source.replace("m.missing|trim", "(m.missing or '')|trim")
    assert hfjs(subject_with_template("hermes-3-tiny", fixed)).outcome is Outcome.PASSED


@needs_hfjs
def test_hfjs_names_the_filter_not_the_test_of_the_same_name() -> None:
    """``Unknown ObjectValue filter: string`` is the ``|string`` of a dict (a Python repr in transformers), not
    the ``is string`` test on line 1; with no template-layer cause that owns it, the engine fails."""
    source = (
        "{%- if messages[0].content is string %}{{ messages[0].content }}{% endif %}\n\n{{ {'a': 1}|string }}"
    )
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.fails")
    assert found.outcome is Outcome.FAILED
    assert found.message.startswith(
        "@huggingface/jinja cannot print a dict or list with `|string`, which transformers prints as a Python "
        "repr: line 3, `|string`\n@huggingface/jinja: Unknown ObjectValue filter: string"
    )
    assert found.fix == "render a value that is not a string with | tojson, or its text parts"
    fixed = source.replace("|string", "|tojson")
    assert hfjs(subject_with_template("hermes-3-tiny", fixed)).outcome is Outcome.PASSED


@needs_hfjs
def test_hfjs_names_a_filter_it_refuses_on_a_dict() -> None:
    source = "{{- messages[0].content }}{{ {'a': 1}|int }}"
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.fails")
    assert "line 1, `|int`\n@huggingface/jinja: Unknown ObjectValue filter: int" in found.message
    assert found.fix == (
        "apply `|int` only where the value can take it (the engine refuses a dict): test `x is string` first"
    )


@needs_minijinja
def test_minijinja_names_int_of_text_with_its_portable_form() -> None:
    """MiniJinja's ``|int`` fails on text that is not a number, where Python's Jinja gives 0."""
    source = "{%- for m in messages %}{{ m.content }}={{ m.content|int }};{% endfor %}"
    found = only(minijinja(subject_with_template("hermes-3-tiny", source)), "minijinja.fails")
    assert found.message.startswith(
        "MiniJinja cannot parse or run the template on a valid conversation: line 1, `|int`\n"
    )
    assert "invalid float literal" in found.message
    assert (
        found.fix
        == "give the filter the default Python's Jinja uses for text that is not a number: `|int(0)`"
    )
    fixed = source.replace("|int", "|int(0)")
    assert minijinja(subject_with_template("hermes-3-tiny", fixed)).outcome is Outcome.PASSED


#: A loop over a key messages lack, inside the loop over the messages: both may iterate a missing value.
_PARTS = (
    "{%- for m in messages %}\n{%- for p in m.parts %}{{ p }}{% endfor %}\n{{- m.content }}\n{%- endfor %}"
)


@needs_hfjs
def test_hfjs_names_the_loop_over_a_missing_value() -> None:
    """@huggingface/jinja refuses to iterate an undefined value (Python's Jinja iterates nothing) and names no
    line: the loop is the innermost one whose iterable, replaced by ``[]``, lets the conversation render."""
    found = only(hfjs(subject_with_template("hermes-3-tiny", _PARTS)), "hfjs.fails")
    assert found.outcome is Outcome.FAILED
    assert found.message.startswith(
        "@huggingface/jinja cannot parse or run the template on a valid conversation: line 2, `for p in m.parts`\n"
        "@huggingface/jinja: Expected iterable or object type in for loop: got UndefinedValue"
    )
    assert found.fix == "iterate an empty list where the value is missing: `{% for p in (m.parts or []) %}`"
    fixed = _PARTS.replace("in m.parts", "in (m.parts or [])")
    assert hfjs(subject_with_template("hermes-3-tiny", fixed)).outcome is Outcome.PASSED
    # a later loop that only some turns reach, after one over a namespace list that is always there
    source = (
        "{%- set ns = namespace(seen=[]) %}{%- for m in messages %}\n{%- for q in ns.seen %}{% endfor %}"
        "{%- if m.role == 'assistant' %}\n{%- for q in ns.seen %}{% endfor %}"
        "{%- for p in m.parts %}{{ p }}{% endfor %}{% endif %}\n{{- m.content }}\n{%- endfor %}"
    )
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.fails")
    assert "line 3, `for p in m.parts`\n" in found.message
    # a string: Python's Jinja iterates its characters, @huggingface/jinja refuses it
    found = only(
        hfjs(subject_with_template("hermes-3-tiny", _PARTS.replace("m.parts", "m.content"))), "hfjs.fails"
    )
    assert "line 2, `for p in m.content`\n" in found.message and "got StringValue" in found.message
    assert (
        found.fix == "loop only over a list or dict: guard the loop with `{% if m.content is not string %}`"
    )
    loop = "{%- for p in m.parts %}{{ p }}{% endfor %}"
    fixed = _PARTS.replace(
        loop, "{%- if m.content is not string %}" + loop.replace("m.parts", "m.content") + "{% endif %}"
    )
    assert "hfjs.fails" not in [f.cause for f in hfjs(subject_with_template("hermes-3-tiny", fixed)).findings]


def test_loops_that_may_iterate_a_missing_value_are_found_with_their_iterables() -> None:
    from templatecheck.checks.engine import _loops

    source = "{% for m in messages %}{% for a, b in m.x if a %}{% endfor %}{% endfor %}{# {% for y in z %} #}"
    assert _loops(source) == []  # a tag the syntax tree does not have: no span is trusted
    source = source.replace("{# {% for y in z %} #}", "\n{%- for k in ns['k'] recursive -%}{% endfor %}")
    loops = _loops(source)  # not the loop over messages
    assert [(loop.node.lineno, loop.written, source[loop.start : loop.end]) for loop in loops] == [
        (1, "m.x", "m.x if a"),
        (2, "ns['k']", "ns['k']"),
    ]


def test_integers_past_2_53_are_not_compared() -> None:
    """A double holds them inexactly (JavaScript prints 1.1415641853959697e+23): the number's type, not the
    template, would make the difference."""
    from templatecheck.checks.engine import _exact_in_json

    exact = [{"role": "assistant", "tool_calls": [{"function": {"arguments": {"n": 2**53, "ok": True}}}]}]
    assert _exact_in_json(exact)
    assert not _exact_in_json(
        [{"tool_calls": [{"function": {"arguments": {"city": 114156418539596969672704}}}]}]
    )
    assert not _exact_in_json({"n": -(2**53) - 1})


@needs_hfjs
def test_hfjs_passes_the_bundled_hermes_tool_use_template() -> None:
    result = hfjs(subject("hermes-3-tiny", "tool_use"))
    assert result.outcome is Outcome.PASSED, result.message
    assert "render identically" in result.message


#: Renders the calls of a reply whose content is none (as Mistral v0.3's template does); a reply whose content
#: key is missing, as transformers leaves a null one, says so.
_NULL_CONTENT = (
    "{% for m in messages %}{% if m.role == 'assistant' and m.content is none %}"
    "{% for c in m.tool_calls %}[{{ c.function.name }}]{% endfor %}"
    "{% elif m.content is defined %}{{ m.content }}{% else %}<{{ m.role }} without content>{% endif %}{% endfor %}"
)


def test_hfjs_gets_null_content_as_transformers_js_does() -> None:
    """transformers.js passes the client's JSON (``content: null`` stays null); transformers drops the key."""
    subject = subject_with_template("tiny-chatml", _NULL_CONTENT)
    call = Call(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}]}]
    )  # fmt: skip
    renderer = subject.model.renderer
    kept = renderer.context(subject.template.source, call, keep_none=HFJS.keeps_none)
    dropped = renderer.context(subject.template.source, call, keep_none=MINIJINJA.keeps_none)
    assert kept["messages"][1]["content"] is None
    assert "content" not in dropped["messages"][1]
    assert renderer.render_many(subject.template.source, [call])[0].text == "x<assistant without content>"


@needs_hfjs
def test_hfjs_renders_null_content_as_transformers_js() -> None:
    subject = subject_with_template("tiny-chatml", _NULL_CONTENT)
    call = Call(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}]}]
    )  # fmt: skip
    renderer = subject.model.renderer
    source = subject.template.source
    kept = HFJS.render_many(source, [renderer.context(source, call, keep_none=True)], renderer.limits, None)
    assert kept == ["x[f]"]


def test_whitespace_differences_are_the_runs_that_differ() -> None:
    from templatecheck.checks.engine import _segments

    ours, theirs = "<a>\n\nhi <b>x", "<a>hi  <b>\tx"
    assert _segments(ours, theirs) == [(3, "\n\n", ""), (8, "", " "), (11, "", "\t")]
    assert _segments("x\n\x0c\n", "\nx\n\n\x0c\n") == [(0, "", "\n"), (2, "", "\n")]  # a run's own part
    assert _segments("same text", "same text") == []
    # more than whitespace: the visible texts are diffed, positions in ours
    assert _segments("say 'a'", 'say "a"') == [(4, "'", '"'), (6, "'", '"')]


# ------------------------------------------------------------------------------ causes the template layer owns

#: Mistral v0.3's tool call: '...' + x|tojson|safe makes Python's Jinja escape the strings joined to it.
_ESCAPED = BASE.replace(
    '{{- \'<tool_call>\\n{"name": "\' + fn.name + \'", "arguments": \' }}',
    "{{- '<tool_call>\\n' + '{\"name\": \"' + fn.name + '\", \"arguments\": ' + fn.arguments|tojson|safe }}",
).replace(ARGUMENTS, "")


@needs_hfjs
def test_hfjs_defers_html_escaping_to_the_tools_check() -> None:
    """transformers writes &#34; where @huggingface/jinja writes the quote: the template's defect, which
    ``tools.html_escaped`` reports; the engine notes it (one root cause, one failure) and names the `|safe`."""
    assert _ESCAPED != BASE
    target = subject_with_template("hermes-3-tiny", _ESCAPED, name="tool_use")
    assert "tools.html_escaped" in [f.cause for f in tools(target).findings if f.outcome is Outcome.FAILED]
    result = hfjs(target)
    assert result.outcome is Outcome.PASSED, result.message
    found = only(result, "tools.html_escaped")
    assert found.outcome is Outcome.PASSED
    line = _ESCAPED[: _ESCAPED.index("|safe")].count("\n") + 1
    assert found.message.startswith(
        "also observed tools.html_escaped (reported by `tools`): @huggingface/jinja renders as plain text what "
        f"transformers HTML-escapes (`&#34;` for a quote, `&lt;` for `<`: a string joined to Markup): line {line}, `|safe`\n"
    )
    assert "transformers '&lt;', @huggingface/jinja '<'" in found.message


@needs_hfjs
def test_hfjs_fails_on_html_escaping_no_template_check_reports() -> None:
    """Escaping outside tool JSON is no cause of the tools check's: the engine's difference fails as its own."""
    source = "{%- for m in messages %}{{ '<' + m.content|safe + '>' }}{% endfor %}"
    found = only(hfjs(subject_with_template("hermes-3-tiny", source)), "hfjs.other")
    assert found.outcome is Outcome.FAILED
    assert found.message.startswith(
        "@huggingface/jinja renders as plain text what transformers HTML-escapes (`&#34;` for a quote, `&lt;` "
        "for `<`: a string joined to Markup): line 1, `|safe`\nat character 0: transformers '&lt;', @huggingface/jinja '<'"
    )
    assert found.fix == "drop | safe (| tojson already returns text), or build the string with ~ instead of +"
    fixed = source.replace("|safe", "")
    assert hfjs(subject_with_template("hermes-3-tiny", fixed)).outcome is Outcome.PASSED


def test_markup_escapes_are_told_from_other_differences() -> None:
    from templatecheck.checks.engine import markup_escaped

    ours = "[{&#34;name&#34;: 1}] a &amp; b"
    assert markup_escaped(ours, 2, "&#34;", '"')
    assert markup_escaped(ours, ours.index("amp;"), "amp;", "")  # the diff kept the '&' both share
    assert not markup_escaped(ours, 2, "&#34;", "'")
    assert not markup_escaped("x &#34; y", 0, "x", "z")


@needs_hfjs
@pytest.mark.parametrize("printed", ["{{ message.content|string }}", "{{ message.content }}"])
def test_a_dict_tool_result_is_no_engine_input(printed: str) -> None:
    """A dict tool result is a Python repr in transformers (``tools.result_repr``, a hazard of
    apply_chat_template) and JSON or an error in @huggingface/jinja; no host of the engines sends one, so the
    engine checks compare string results only, and pass."""
    source = BASE.replace(RESULT, printed)
    assert source != BASE
    target = subject_with_template("hermes-3-tiny", source, name="tool_use")
    assert "tools.result_repr" in [f.cause for f in tools(target).findings if f.outcome is Outcome.WARNING]
    result = hfjs(target)
    assert result.outcome is Outcome.PASSED, result.message
    assert "tools.result_repr" not in [f.cause for f in result.findings]
    # a dict the conversation does not hold (a literal): no template-layer cause explains it
    literal = "{%- for m in messages %}{{ m.content }}{% endfor %}{{ {'a': 1} }}"
    found = only(hfjs(subject_with_template("hermes-3-tiny", literal)), "hfjs.printing")
    assert found.outcome is Outcome.FAILED


def test_engine_cases_leave_out_dict_results_and_hold_a_tool_exchange_with_wire_text() -> None:
    from templatecheck.checks.engine import WIRE_TEXT, cases

    target = subject("hermes-3-tiny", "tool_use")
    batch = cases(target)
    tool_messages = [m for c in batch for m in c.conversation if m.get("role") == "tool"]
    assert tool_messages and all(isinstance(m["content"], str) for m in tool_messages)
    assert any(m["content"] == WIRE_TEXT[1] for m in tool_messages)
    assert not [
        m
        for c in cases(subject_with_template("hermes-3-tiny", CHATML))
        for m in c.conversation
        if m.get("role") == "tool"
    ]


def test_an_owner_its_gate_stops_reports_nothing() -> None:
    """A check that does not run on a template (it does not render) reports none of its causes there."""
    from templatecheck.checks.base import owner_reports
    from templatecheck.checks.tools import HTML_ESCAPED

    broken = subject_with_template("hermes-3-tiny", "{{ raise_exception('no conversation renders') }}")
    assert tools(broken).outcome is Outcome.SKIPPED
    assert owner_reports(broken, HTML_ESCAPED) is False
    fresh = subject_with_template("hermes-3-tiny", "{{ raise_exception('nor this one') }}")
    assert owner_reports(fresh, HTML_ESCAPED) is False  # asked before the owner ran


def test_work_sent_later_runs_in_the_background_and_is_handed_over_once() -> None:
    import threading

    from templatecheck.engines import Later

    later = Later()
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return threading.current_thread().name

    later.send("a", slow)
    assert started.wait(5)  # running while this thread goes on
    release.set()
    assert later.take("a") == "templatecheck-ahead"
    assert later.take("a") is None  # handed over once
    assert later.take("never sent") is None

    def fails() -> str:
        raise OSError("node went away")

    later.send("b", fails)
    assert later.take("b") is None  # the check makes the work itself
    for i in range(Later.KEPT + 2):
        later.send(i, lambda i=i: i)
    assert later.take(0) is None and later.take(1) is None  # the oldest untaken are dropped
    assert later.take(Later.KEPT + 1) == Later.KEPT + 1


@needs_hfjs
def test_hfjs_takes_the_renders_sent_ahead_when_round_trip_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Node renders of hfjs's cases are made in the background while round_trip runs; hfjs then takes them
    instead of asking Node, and finds what it finds without them. A run that does not run hfjs sends none."""
    import threading

    from templatecheck.checks import REGISTRY
    from templatecheck.engines import NodeProcess
    from templatecheck.model import load_model
    from tests.conftest import FIXTURES

    asked: list[tuple[str, int]] = []
    real = NodeProcess.run

    def run(self: NodeProcess, source: str, contexts: Any, *args: Any) -> Any:
        asked.append((threading.current_thread().name, len(contexts)))
        return real(self, source, contexts, *args)

    monkeypatch.setattr(NodeProcess, "run", run)
    found = {}
    for planned in (None, frozenset({"round_trip"})):
        model = load_model(str(FIXTURES / "hermes-3-tiny"))
        session = Session([model.ref.text], planned=planned, loaded={model.ref.text: model})
        session.run(REGISTRY["round_trip"], model, "default")
        before = len(asked)
        found[planned] = session.run(REGISTRY["hfjs"], model, "default")
        ahead = [n for name, n in asked if name == "templatecheck-ahead"]
        mine = [n for name, n in asked[before:] if name != "templatecheck-ahead"]
        if planned is None:
            # hfjs asks Node only for shrinking's single cases
            assert sum(ahead) > 10 and max(mine, default=0) <= 1
        else:
            # hfjs is not in the run's plan: nothing is sent ahead, it renders for itself
            assert ahead == [] and sum(mine) > 10
        asked.clear()
    assert found[None].outcome == found[frozenset({"round_trip"})].outcome
    assert [f.message for f in found[None].findings] == [
        f.message for f in found[frozenset({"round_trip"})].findings
    ]


@needs_hfjs
def test_a_run_ends_without_waiting_for_renders_sent_ahead_that_nothing_takes() -> None:
    """At the end of a run the Node process is stopped at once, with a render sent ahead still running in it,
    and work still waiting is not made."""
    import subprocess
    import sys

    script = (
        "import time\n"
        "from templatecheck.engines import LATER, node\n"
        "from templatecheck.render import Limits\n"
        "loop = '{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}'\n"
        "node().run('{{ 1 }}', [{}], Limits(), None)\n"
        "for key in ('a', 'b'):\n"
        "    LATER.send(key, lambda: node().run(loop, [{}], Limits(seconds=20), None))\n"
        "time.sleep(0.5)\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert time.perf_counter() - started < 8  # not the 2 x 20 s the renders would take
