"""Tool calls in a template's own format: learnt from the template, then parsed from replies."""

from __future__ import annotations

import pytest

from templatecheck.probeset import Call
from templatecheck.toolcalls import CallFormat, call_format, parse_call, same_call
from tests.conftest import subject, subject_with_template

HERMES = CallFormat("<tool_call>", "name", "arguments", "")
WEATHER = Call("get_weather", {"city": "Paris"})


def test_the_hermes_format_is_learnt_from_its_template() -> None:
    fmt = call_format(subject("hermes-3-tiny", "tool_use"))
    assert fmt is not None
    assert (fmt.opener, fmt.name_key, fmt.arguments_key) == ("<tool_call>", "name", "arguments")
    assert fmt.example.startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}')


def test_templates_without_tools_have_no_format() -> None:
    assert call_format(subject("hermes-3-tiny", "default")) is None
    assert call_format(subject("llama-3-tiny")) is None


def test_a_bare_json_format_with_parameters() -> None:
    """Llama 3.1 style: tools in the prompt, a call as bare JSON with "parameters"."""
    source = (
        "{{ bos_token }}{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}"
        "{% for m in messages %}{{ m.role }}: "
        "{% if m.tool_calls %}{% for c in m.tool_calls %}"
        '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}'
        "{% endfor %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    fmt = call_format(subject_with_template("hermes-3-tiny", source))
    assert fmt is not None
    assert (fmt.opener, fmt.name_key, fmt.arguments_key) == ("", "name", "parameters")
    got = parse_call('{"name": "get_weather", "parameters": {"city": "paris"}}', fmt)
    assert got is not None and same_call(got, WEATHER)


def test_a_template_whose_prompt_is_not_the_start_of_its_turns_has_no_format() -> None:
    source = (
        "{% for m in messages %}{{ m.role }}: {% if m.tool_calls %}{{ m.tool_calls[0].function | tojson }}"
        "{% else %}{{ m.content }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT {% endif %}"
        "{{ tools | tojson if tools else '' }}"
    )
    assert call_format(subject_with_template("hermes-3-tiny", source)) is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', WEATHER),
        (
            'Let me look.\n<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
            WEATHER,
        ),
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}',
            None,
        ),  # cut off by the budget
        ('{"name": "get_weather", "arguments": {"city": "Paris"}}', None),  # no opener
        ('<tool_call>{"name": "get_weather", "arguments": "city=Paris"}', None),
        ('<tool_call>{"name": "get_weather", "arguments": [1]}', None),
        ("Paris is sunny.", None),
    ],
)
def test_parse_call(reply: str, expected: Call | None) -> None:
    assert parse_call(reply, HERMES) == expected


def test_same_call_compares_names_and_arguments_loosely() -> None:
    assert same_call(Call("get_weather", {"city": "PARIS."}), WEATHER)
    assert not same_call(Call("get_time", {"city": "Paris"}), WEATHER)
    assert not same_call(Call("get_weather", {"city": "Rome"}), WEATHER)
    assert not same_call(Call("get_weather", {}), WEATHER)


# ------------------------------------------------------------------------------------------------- properties

import json  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

names = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
values = st.one_of(st.integers(), st.booleans(), st.text(max_size=10), st.none())
arguments = st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=4)


@given(names, arguments, st.text(alphabet="ab {}\n", max_size=10), st.booleans())
def test_a_written_call_parses_back(name: str, args: dict[str, object], prefix: str, as_string: bool) -> None:
    encoded = json.dumps(args) if as_string else args
    reply = prefix + "<tool_call>\n" + json.dumps({"name": name, "arguments": encoded}) + "\n</tool_call>"
    assert parse_call(reply, HERMES) == Call(name, args)


@given(st.text(max_size=60))
def test_parse_call_never_raises(reply: str) -> None:
    got = parse_call(reply, HERMES)
    assert got is None or isinstance(got.arguments, dict)
