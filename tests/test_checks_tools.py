"""The tools check, both ways, on fixtures named after real tool bugs: each cause with a template that triggers
it (message asserted), and the correct Hermes tool template that triggers none."""

from __future__ import annotations

from dataclasses import replace

import pytest

from templatecheck.capabilities import probe
from templatecheck.checks.template import renders
from templatecheck.checks.tools import tools
from templatecheck.options import Options
from templatecheck.result import CheckResult, Outcome
from tests.conftest import subject, subject_with_template

BASE = subject("hermes-3-tiny", "tool_use").template.source
ARGUMENTS = (
    "{%- if fn.arguments is string %}{{ fn.arguments }}{% else %}{{ fn.arguments | tojson }}{% endif %}"
)
RESULT = "{%- if message.content is mapping %}{{ message.content | tojson }}{% else %}{{ message.content }}{% endif %}"
DEFINITION = "{{ tool | tojson }}"


def variant(old: str, new: str) -> CheckResult:
    """The tools check on the Hermes tool template with ``old`` replaced by ``new``."""
    assert old in BASE, old
    return tools(subject_with_template("hermes-3-tiny", BASE.replace(old, new), name="tool_use"))


def only(result: CheckResult, cause: str, outcome: Outcome = Outcome.FAILED) -> str:
    """The message of the one finding of ``cause``, after checking it is there with ``outcome``."""
    found = [f for f in result.findings if f.cause == cause]
    assert len(found) == 1, [(f.cause, f.message[:120]) for f in result.findings]
    assert found[0].outcome is outcome
    return found[0].message


def test_correct_tool_template_passes_and_its_capabilities_are_learnt() -> None:
    target = subject("hermes-3-tiny", "tool_use")
    result = tools(target)
    assert result.outcome is Outcome.PASSED, result.message
    caps = probe(target)
    assert (caps.tools, caps.tool_calls, caps.parallel_tool_calls, caps.tool_role) == (True, True, True, True)
    assert (caps.object_arguments, caps.string_arguments) == (True, True)
    assert caps.repr_only == frozenset()
    assert probe(subject("hermes-3-tiny")).tools is False


def test_template_without_tools_is_skipped() -> None:
    result = tools(subject("llama-3-tiny"))
    assert result.outcome is Outcome.SKIPPED
    assert result.message == "the template renders neither tool definitions nor tool calls"


# ------------------------------------------------------------------------- calls dropped, empty call lists

CALLS = BASE[
    BASE.index("{%- for call in message.tool_calls %}") : BASE.index("{%- endfor %}\n{{- '<|im_end|>")
]
REPLY_TEXT = "{% if message.content %}{{ message.content + '\\n' }}{% endif %}"


def test_a_template_that_shows_tools_and_results_but_drops_calls_fails() -> None:
    """LFM2 (llama.cpp's older copy): tools and tool responses rendered, the assistant's calls never."""
    source = BASE.replace(CALLS, "{%- for call in [] %}")
    target = subject_with_template("hermes-3-tiny", source, name="tool_use")
    assert (probe(target).tools, probe(target).tool_calls) == (True, False)
    result = tools(target)
    message = only(result, "tools.call_dropped")
    assert message.startswith(
        "the template shows the model its tools and the tool's result, but drops the assistant's tool call"
    ), message
    assert "sunny zq7result" in message
    assert [f.fix for f in result.findings if f.cause == "tools.call_dropped"] == [
        "render message.tool_calls (each call's function name and arguments) on assistant turns"
    ]


def test_a_template_that_drops_calls_is_still_tried_on_the_shapes_of_calls() -> None:
    """LFM2's older copy writes content with | tojson: content null (a key left out) crashes it."""
    source = BASE.replace(CALLS, "{%- for call in [] %}").replace(
        REPLY_TEXT, "{{ message.content | tojson }}"
    )
    result = tools(subject_with_template("hermes-3-tiny", source, name="tool_use"))
    crash = [f for f in result.findings if f.cause == "tools.crash"]
    assert crash and crash[0].message.startswith(
        "a tool call with content: null does not render, though clients send it: template raised TypeError"
    ), result.message
    unsupported = tools(subject_with_template("hermes-3-tiny", source.replace(DEFINITION, "")))
    assert unsupported.outcome is Outcome.SKIPPED, unsupported.message


def test_a_template_without_tool_definitions_that_drops_calls_stays_unsupported() -> None:
    """A tool role alone (a generic role loop) is not tool support: no definitions, no calls, no finding."""
    source = BASE.replace(CALLS, "{%- for call in [] %}").replace(DEFINITION, "")
    result = tools(subject_with_template("hermes-3-tiny", source))
    assert result.outcome is Outcome.SKIPPED, result.message
    assert not [
        f for f in tools(subject("hermes-3-tiny", "tool_use")).findings if f.cause == "tools.call_dropped"
    ]


def test_an_empty_tool_calls_list_that_drops_the_reply_fails() -> None:
    """DeepSeek V3.1 (an older llama.cpp copy): ``tool_calls is not none`` takes ``[]`` for a call turn."""
    dropping = "{% if message.content and message.tool_calls %}{{ message.content + '\\n' }}{% endif %}"
    message = only(variant(REPLY_TEXT, dropping), "tools.empty_calls_mishandled")
    assert message.startswith(
        "an assistant reply with tool_calls: [] drops the reply's text from the same reply without tool_calls"
    ), message
    assert "It is sunny zq7empty." in message


def test_an_empty_tool_calls_list_that_writes_a_stray_block_fails() -> None:
    stray = REPLY_TEXT + "{% if not message.tool_calls %}{{ '<tool_call></tool_call>' }}{% endif %}"
    message = only(variant(REPLY_TEXT, stray), "tools.empty_calls_mishandled")
    assert message.startswith("an assistant reply with tool_calls: [] renders differently"), message
    assert "<tool_call></tool_call>" in message


def test_an_empty_tool_calls_list_rendered_as_the_reply_passes() -> None:
    """The Hermes template writes one newline more for ``[]``: the same reply, no finding."""
    assert not [
        f for f in variant(REPLY_TEXT, REPLY_TEXT).findings if f.cause == "tools.empty_calls_mishandled"
    ]


# ---------------------------------------------------------------------------------------------- definitions


def test_tool_definitions_printed_as_a_python_repr() -> None:
    """``tools|string`` (Hammer 2.1): the probe tells a repr from no tools, and the check fails it."""
    source = BASE.replace(
        "{%- for tool in tools %}" + DEFINITION, "{{ tools | string }}{%- for tool in [] %}"
    )
    target = subject_with_template("hermes-3-tiny", source, name="tool_use")
    assert probe(target).tools is False and probe(target).repr_only == frozenset({"tools"})
    message = only(tools(target), "tools.definitions_repr")
    assert message.startswith("the tool definitions are printed as a Python repr (tools|string), not as JSON")


def test_tool_definitions_that_lose_parameters() -> None:
    message = only(variant(DEFINITION, "{{ tool.function.name }}"), "tools.definitions_dropped")
    assert message == "tool definitions lose cityzq7, unitszq7 on the way into the prompt"


def test_tool_json_broken_by_a_quote_in_a_description() -> None:
    result = tools(subject("broken/tool-json-quotes", "tool_use"))
    message = only(result, "tools.json_unescaped")
    assert message.startswith(
        "the tool definitions the template writes as JSON do not parse when a description has a quote"
    )
    assert '"description": "Find a "city" by name' in message
    assert "tools.json_invalid" not in [f.cause for f in result.findings]


def test_tool_json_that_never_parses() -> None:
    """A raw newline inside a JSON string (Hermes 3's tool_use template): broken with or without a quote."""
    hand_built = '{"name": "{{ tool.function.name }}", "description": "{{ tool.function.name }}\nmore"}'
    result = variant(DEFINITION, hand_built + "{{ tool.function.parameters | tojson }}")
    message = only(result, "tools.json_invalid")
    assert message.startswith(
        "the tool definitions the template writes as JSON never parse, even for a description without quotes"
    )


def test_tool_json_html_escaped_by_safe() -> None:
    """Mistral v0.3: '...' + x|tojson|safe makes Jinja escape the plain strings it is joined to."""
    call = '{{- \'<tool_call>\\n{"name": "\' + fn.name + \'", "arguments": \' }}'
    assert call in BASE
    source = BASE.replace(
        call,
        "{{- '<tool_call>\\n' + '{\"name\": \"' + fn.name + '\", \"arguments\": ' + fn.arguments|tojson|safe }}",
    ).replace(ARGUMENTS, "")
    result = tools(subject_with_template("hermes-3-tiny", source, name="tool_use"))
    message = only(result, "tools.html_escaped")
    assert message.startswith(
        "a tool call with dict arguments renders HTML-escaped ('&#34;' where the JSON has a quote): a string joined "
        "to a | safe value ('...' + x|tojson|safe) is escaped by Jinja"
    )
    assert "&#34;name&#34;: &#34;lookup_zq7&#34;" in message
    line = source[: source.index("|safe")].count("\n") + 1
    assert f"is escaped by Jinja; the Markup is made at line {line}, `|safe`\n" in message
    definitions = variant(DEFINITION, "{{ 'tool: ' + tool|tojson|safe + ' \"end\"' }}")
    assert only(definitions, "tools.html_escaped").startswith("the tool definitions renders HTML-escaped")


def test_the_printed_fixes_of_html_escaping_work() -> None:
    """Both fixes the finding prints: without ``| safe``, or joined with ``~``, the tool call is plain JSON."""
    escaped = "{{- '<tool_call>\\n' + '{\"name\": \"' + fn.name + '\", \"arguments\": ' + fn.arguments|tojson|safe }}"
    call = '{{- \'<tool_call>\\n{"name": "\' + fn.name + \'", "arguments": \' }}'
    for fixed in (escaped.replace("|safe", ""), escaped.replace(" + ", " ~ ")):
        source = BASE.replace(call, fixed).replace(ARGUMENTS, "")
        result = tools(subject_with_template("hermes-3-tiny", source, name="tool_use"))
        # what is left is the fixture's: it encodes string arguments again (a warning of their own)
        assert [f.cause for f in result.findings] == ["tools.string_arguments_unsupported"], result.message


# ------------------------------------------------------------------------------------------------ tool calls


def test_a_call_whose_arguments_are_a_constant() -> None:
    """The probe still sees the call (by its name), so the lost arguments are caught."""
    target = subject_with_template("hermes-3-tiny", BASE.replace(ARGUMENTS, "{}"), name="tool_use")
    assert probe(target).tool_calls is True
    message = only(tools(target), "tools.call_arguments_lost")
    assert message.startswith(
        "a tool call loses its arguments: the argument keys or values are not in the prompt (a constant, or "
        "nothing, in their place) (dict arguments)"
    )


def test_a_call_whose_name_is_lost() -> None:
    message = only(
        variant('\'<tool_call>\\n{"name": "\' + fn.name', "'<tool_call>\\n{\"name\": \"' + 'function'"),
        "tools.call_name_lost",
    )
    assert message.startswith("a tool call loses the called function's name: it is not in the prompt")


def test_a_call_that_crashes_on_dict_arguments() -> None:
    message = only(variant(ARGUMENTS, "{{ fn.arguments + '' }}"), "tools.crash")
    assert message.startswith(
        "a tool call (dict arguments) does not render, though clients send it: template raised TypeError: "
        "unsupported operand"
    )


def test_string_arguments_encoded_twice_is_a_warning() -> None:
    """transformers documents dict arguments; a template that takes only dicts warns about the wire form."""
    result = variant(ARGUMENTS, "{{- fn.arguments | tojson }}")
    assert result.outcome is Outcome.WARNING
    message = only(result, "tools.string_arguments_unsupported", Outcome.WARNING)
    assert message.startswith(
        "a tool call with arguments as a JSON string (the OpenAI wire form) renders differently from dict arguments"
    )
    assert '{\\"cityzq7\\": \\"Pariszq7arg\\"' in message  # the double encoding is visible in the diff


def test_tool_calls_dropped_when_content_is_present() -> None:
    result = tools(subject("broken/drops-tool-calls-with-content", "tool_use"))
    assert result.outcome is Outcome.FAILED
    message = only(result, "tools.call_dropped_with_content")
    assert message == "the tool call is dropped when the assistant message also has content"


def test_content_dropped_when_tool_calls_are_present() -> None:
    message = only(
        variant("{% if message.content %}{{ message.content + '\\n' }}{% endif %}", ""),
        "tools.content_dropped_with_calls",
    )
    assert message == "the assistant's content is dropped when the message also has tool calls"


def test_a_clear_refusal_of_content_next_to_calls_is_a_warning() -> None:
    result = variant(
        "{{- '<|im_start|>assistant\\n' }}{% if message.content %}",
        "{{- '<|im_start|>assistant\\n' }}{% if message.content %}"
        "{% if message.tool_calls %}{{ raise_exception('Assistant message cannot have both content and tool calls.') }}{% endif %}",
    )
    assert result.outcome is Outcome.WARNING
    assert only(result, "tools.refused", Outcome.WARNING).startswith(
        "the template refuses a tool call next to content (a constraint of its own): template refused: "
        "Assistant message cannot have both content and tool calls.\nconversation:\n"
    )


def test_a_refusal_of_parallel_calls_is_one_warning_of_tools() -> None:
    """One raise_exception is one root cause: the tools check names every shape it refuses, the sample that
    renders asks for one call per turn, and a sampled conversation refused the same way is only a note."""
    refusal = (
        "{%- if message.tool_calls and message.tool_calls | length != 1 %}"
        "{{ raise_exception('This model only supports single tool-calls at once!') }}{% endif %}"
    )
    source = BASE.replace("{%- for message in messages %}", "{%- for message in messages %}" + refusal, 1)
    assert source != BASE
    target = subject_with_template("hermes-3-tiny", source, name="tool_use")
    assert not probe(target).parallel_tool_calls and not probe(target).support.parallel_calls
    result = tools(target)
    assert result.outcome is Outcome.WARNING
    message = only(result, "tools.refused", Outcome.WARNING)
    assert message.startswith(
        "the template refuses parallel tool calls with content: null and their results (a constraint of its "
        "own): template refused: This model only supports single tool-calls at once!\n"
        "  also: parallel tool calls: template refused: This model only supports single tool-calls at once!"
    )
    rendered = renders(target)  # the sample has no parallel calls: nothing else is refused
    assert rendered.outcome is Outcome.PASSED and not rendered.findings, rendered.message
    assert probe(target).support.null_content  # parallel calls with content: null fail as parallel calls do


def test_a_sampled_crash_with_a_tool_shape_s_error_text_is_still_a_crash_of_renders() -> None:
    """A Python error's text is no statement of a constraint: the same UndefinedError on content: null next
    to calls (the tools check's) and on a plain bug reached by other turns are two root causes."""
    bugs = (
        "{%- if message.tool_calls %}{{ message.content.strip() }}{% endif %}"
        "{%- if message.role == 'user' and loop.index0 >= 4 and messages[loop.index0 - 2].role == 'user' %}"
        "{{ (messages[loop.index0 - 1] if messages[loop.index0 - 1].tool_calls is defined else {'role': 'x'})"
        ".content.strip() }}{% endif %}"
    )
    old = "{%- for message in messages %}"
    target = subject_with_template("hermes-3-tiny", BASE.replace(old, old + bugs, 1), name="tool_use")
    assert any(f.owner == "tools" and f.kind == "raised" for f in probe(target).failures)
    result = renders(target)
    assert result.outcome is Outcome.FAILED
    assert only(result, "renders.crash").startswith("a valid conversation does not render: template raised")


def test_a_refusal_of_content_next_to_calls_keeps_it_out_of_the_sample() -> None:
    """The wire probe finds the refusal (the tools check reports it); renders samples calls without text."""
    refusal = (
        "{% if message.tool_calls %}{{ raise_exception('Assistant message cannot have both content and tool "
        "calls.') }}{% endif %}"
    )
    old = "{{- '<|im_start|>assistant\\n' }}{% if message.content %}"
    source = BASE.replace(old, old + refusal)
    assert source != BASE
    target = subject_with_template("hermes-3-tiny", source, name="tool_use")
    assert not probe(target).support.content_with_calls
    result = renders(target)
    assert result.outcome is Outcome.PASSED and not result.findings, result.message


def test_a_sampled_conversation_refused_as_a_tool_shape_is_a_note_of_renders() -> None:
    """One raise_exception with one message is one constraint, whatever reaches it: here an empty tool_calls
    list (a wire shape the tools check reports) and a call with a number among its arguments (in the sample).
    Renders notes the sample's refusal under the tools check's cause."""
    refusal = (
        "{% if message.tool_calls is defined and (message.tool_calls | length == 0 or "
        "message.tool_calls[0].function.arguments is mapping and "
        "message.tool_calls[0].function.arguments.values() | select('number') | list) %}"
        "{{ raise_exception('Only tool calls with text arguments are supported.') }}{% endif %}"
    )
    old = "{%- for message in messages %}"
    source = BASE.replace(old, old + refusal, 1)
    assert source != BASE
    target = subject_with_template("hermes-3-tiny", source, name="tool_use")
    message = only(tools(target), "tools.refused", Outcome.WARNING)
    assert message.startswith(
        "the template refuses an assistant reply with an empty tool_calls list (a constraint of its own): "
        "template refused: Only tool calls with text arguments are supported."
    )
    result = renders(target)
    assert result.outcome is Outcome.PASSED, result.message
    assert [(f.cause, f.outcome) for f in result.findings] == [("tools.refused", Outcome.PASSED)]
    assert result.findings[0].message.startswith(
        "also observed tools.refused (reported by `tools`): a valid conversation does not render "
        "(tools.refused names the shape): template refused: Only tool calls with text arguments are "
        "supported.\nconversation:\n"
    )


# ---------------------------------------------------------------------------------------------- tool results


def test_dict_tool_result_rendered_as_python_repr() -> None:
    """A hazard of apply_chat_template: tool results are strings on every documented path (transformers' and
    the OpenAI form), so it warns, and gates for a harness that names that path."""
    result = tools(subject("broken/tool-result-repr", "tool_use"))
    assert result.outcome is Outcome.WARNING
    assert only(result, "tools.result_repr", Outcome.WARNING).startswith(
        "a dict tool result is rendered as a Python repr (\"{'temperature': 21, 'unit': 'zq7unit'}\")"
    )
    base = subject("broken/tool-result-repr", "tool_use")
    gated = tools(replace(base, options=Options(consumers=("apply_chat_template",))))
    assert gated.outcome is Outcome.FAILED
    assert only(gated, "tools.result_repr").endswith("(fails: --tc-consumer apply_chat_template)")


def test_string_tool_result_encoded_again() -> None:
    """Llama 3.1 writes every result through | tojson (a string is iterable): "sunny" reaches the model."""
    message = only(variant(RESULT, "{{ message.content | tojson }}"), "tools.result_reencoded")
    assert message.startswith(
        "a string tool result is JSON-encoded a second time: 'sunny zq7result' renders as '\"sunny zq7result\"'"
    )


def test_a_string_result_inside_a_json_object_is_not_encoded_again() -> None:
    """Mistral writes {"content": "<result>", "call_id": ...}: the result is a JSON value, as it should be."""
    result = variant(RESULT, "{{ {'content': message.content | string, 'call_id': 'x'} | tojson }}")
    assert "tools.result_reencoded" not in [f.cause for f in result.findings]


def test_tool_results_dropped() -> None:
    """The probe sees no tool role, but the template renders calls: dropping their results is a defect."""
    target = subject_with_template("hermes-3-tiny", BASE.replace(RESULT, ""), name="tool_use")
    assert probe(target).tool_role is False and probe(target).tool_calls is True
    result = tools(target)
    message = only(result, "tools.result_dropped")
    assert message == "a string tool result is dropped from the prompt"
    assert "tools.dict_result_dropped" not in [f.cause for f in result.findings]  # one root cause


def test_a_dict_result_dropped_is_a_hazard_of_apply_chat_template() -> None:
    """Qwen3's ``<tool_response>\n\n</tool_response>``: a dict result, which only apply_chat_template takes,
    leaves nothing; a string result dropped is a defect (above)."""
    result = variant(
        RESULT, "{%- if message.content is mapping %}{{ '' }}{% else %}{{ message.content }}{% endif %}"
    )
    assert result.outcome is Outcome.WARNING
    assert (
        only(result, "tools.dict_result_dropped", Outcome.WARNING)
        == "a dict tool result is dropped from the prompt"
    )


def test_a_dict_result_that_crashes_is_a_warning() -> None:
    result = variant(RESULT, "{{ message.content + '' }}")
    assert result.outcome is Outcome.WARNING
    assert only(result, "tools.dict_result_raises", Outcome.WARNING).startswith(
        "a dict tool result does not render: template raised TypeError"
    )


@pytest.mark.parametrize("name", ["default", "tool_use"])
def test_no_finding_of_the_tools_check_is_unclassified(name: str) -> None:
    for fixture in ("hermes-3-tiny", "broken/tool-result-repr", "broken/tool-json-quotes"):
        result = tools(subject(fixture, name))
        assert all(not f.cause.endswith(".unclassified") for f in result.findings)


# ------------------------------------------------------------------ calls behind tool definitions that crash

#: DeepSeek R1 (llama.cpp's copies): ``tools | map(...) | tojson`` is a generator, which transformers' tojson
#: cannot encode: every request with tools crashes before a call is written.
CRASHING_DEFINITION = "{{ [tool] | map(attribute='function') | tojson }}"


def crashing(*replacements: tuple[str, str]) -> CheckResult:
    """The tools check on the Hermes tool template (as a default template) whose definitions crash."""
    source = BASE.replace(DEFINITION, CRASHING_DEFINITION)
    for old, new in replacements:
        assert old in source, old
        source = source.replace(old, new)
    return tools(subject_with_template("hermes-3-tiny", source))


def test_crashing_definitions_with_correct_calls_report_only_the_crash() -> None:
    result = crashing()
    assert [f.cause for f in result.findings if f.outcome is not Outcome.PASSED] == ["tools.crash"], [
        (f.cause, f.message[:100]) for f in result.findings
    ]
    assert result.findings[0].message.startswith(
        "a conversation with tool definitions does not render, though clients send it: template raised "
        "TypeError: Object of type generator is not JSON serializable"
    )


def test_crashing_definitions_do_not_hide_string_arguments_encoded_twice() -> None:
    """DeepSeek R1's current llama.cpp copy: ``tool_args | tojson`` encodes a JSON-string argument again."""
    result = crashing((ARGUMENTS, "{{- fn.arguments | tojson }}"))
    only(result, "tools.crash")
    message = only(result, "tools.string_arguments_unsupported", Outcome.WARNING)
    assert message.startswith("a tool call with arguments as a JSON string (the OpenAI wire form) renders")
    assert '{\\"cityzq7\\": \\"Pariszq7arg\\"' in message
    assert message.endswith(
        "(rendered without `tools`, as a later request of the conversation: the tool definitions crash, so "
        "this is what remains broken once they render)"
    )


def test_crashing_definitions_do_not_hide_calls_dropped_while_results_show() -> None:
    """DeepSeek R1's older llama.cpp copy: calls only for ``content is none``, so content "" drops them."""
    result = crashing((CALLS, "{%- for call in [] %}"))
    only(result, "tools.crash")
    message = only(result, "tools.call_dropped")
    assert "sunny zq7result" in message
    assert message.endswith("so this is what remains broken once they render)")


def test_crashing_definitions_do_not_hide_calls_dropped_next_to_content() -> None:
    """DeepSeek R1's llama.cpp copies write calls only when the reply has no text."""
    result = crashing(
        (
            "{%- for call in message.tool_calls %}",
            "{%- for call in message.tool_calls if not message.content %}",
        )
    )
    message = only(result, "tools.call_dropped_with_content")
    assert message.startswith("the tool call is dropped when the assistant message also has content")


# ------------------------------------------------------------------------------ a call named only by its id

NAME = '\'<tool_call>\\n{"name": "\' + fn.name'


def test_a_call_named_only_by_the_clients_id_warns() -> None:
    """Kimi K2 (the vendor's template): ``<|tool_call_begin|>{{ tool_call['id'] }}`` names the function through
    an id of the form functions.NAME:0, which an OpenAI-style id does not carry (a warning: a server that
    makes ids of the model's form serves it right)."""
    result = variant(NAME, '\'<tool_call>\\n{"name": "\' + call.id')
    message = only(result, "tools.call_name_only_in_id", Outcome.WARNING)
    assert message.startswith(
        "a tool call is named only by the id the client sent: with the id 'call_Hx8GjKq2mWv5RtY1nBzP3aLc' the "
        "called function's name (lookup_zq7) is not in the prompt"
    ), message
    assert "call_Hx8GjKq2mWv5RtY1nBzP3aLc" in message.split("near: ")[1]
    assert not [f for f in result.findings if f.cause == "tools.call_name_lost"]


def test_a_call_id_made_from_the_functions_name_passes() -> None:
    """llama.cpp's fix of the Kimi K2 copies: the id is written from the name, whatever the client sent."""
    result = variant(NAME, "'<tool_call>\\n{\"name\": \"functions.' ~ fn.name ~ ':' ~ loop.index0")
    assert not [f for f in result.findings if f.cause == "tools.call_name_only_in_id"], result.message


# ------------------------------------------------------------------- argument values that are not strings

#: Qwen3-Coder's XML form: one parameter per argument, written by the template itself.
EACH = "{%- for k, v in fn.arguments|items %}<parameter={{ k }}>{{ VALUE }}</parameter>{% endfor %}"


def test_object_and_list_argument_values_written_as_a_python_repr_fail() -> None:
    """Qwen3-Coder (an older copy): ``args_value | string`` writes ``{'days': 3}`` for an object value."""
    result = variant(ARGUMENTS, EACH.replace("VALUE", "v | string"))
    message = only(result, "tools.arguments_repr")
    assert message.startswith(
        "a tool call's argument value that is an object or a list is written as a Python repr "
        "({'dayszq7': 3}), not as JSON"
    ), message
    assert "<parameter=optionszq7>{'dayszq7': 3}</parameter>" in message


def test_argument_values_written_as_json_pass() -> None:
    """Qwen3-Coder's fix: a value that is not a string goes through ``| tojson``."""
    result = variant(ARGUMENTS, EACH.replace("VALUE", "v if v is string else v | tojson"))
    assert not [f for f in result.findings if f.cause == "tools.arguments_repr"], result.message


def test_python_literals_in_a_format_of_python_calls_pass() -> None:
    """LFM2 writes calls as Python calls (``[lookup(city='Paris', tags=['warm'])]``): its literals are its own."""
    pythonic = "{{- fn.name + '(' }}{%- for k, v in fn.arguments|items %}{{ k }}={{ v | string }}, {% endfor %}{{ ')' }}"
    result = variant(
        '\'<tool_call>\\n{"name": "\' + fn.name + \'", "arguments": \' }}\n' + ARGUMENTS, pythonic
    )
    assert not [f for f in result.findings if f.cause == "tools.arguments_repr"], result.message
