"""Template layer: tool definitions, tool calls and tool results."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from typing import Any

import jinja2.nodes

from templatecheck import conversation as conv
from templatecheck.capabilities import CALL_IDS, probe
from templatecheck.causes import Cause, defect, hazard, policy
from templatecheck.checks.base import check
from templatecheck.checks.template import SANDBOX_REFUSED, TOOLS_REFUSED, blank, distinct, probe_findings
from templatecheck.model import Subject
from templatecheck.render import RenderError, nodes_of, parse_template
from templatecheck.result import Finding, Layer, Outcome, skipped
from templatecheck.text import diff, quote

CRASH = defect(
    "tools.crash",
    "a tool conversation in the documented form (dict arguments, string results) or as OpenAI-compatible "
    "clients send it (content: null next to calls, ids of any form, no tools on later requests) that makes "
    "the template raise an error of its own fails every such request",
)
REFUSED = policy(
    TOOLS_REFUSED,
    "raise_exception on a tool-conversation shape the format does not support (content next to tool calls, "
    "ids of another form) is a deliberate, clear error",
)
DEFINITIONS_DROPPED = defect(
    "tools.definitions_dropped", "the model cannot call a tool whose name or parameters it never sees"
)
DEFINITIONS_REPR = defect(
    "tools.definitions_repr",
    "tool definitions printed as a Python repr (tools|string) are single-quoted pseudo-JSON the model was "
    "not shown in training and that clients cannot predict",
)
JSON_UNESCAPED = defect(
    "tools.json_unescaped",
    "tool JSON built by hand breaks on a quote in a description: the model reads broken JSON",
)
JSON_INVALID = defect(
    "tools.json_invalid",
    "tool JSON that never parses (a raw newline inside a string) is not the JSON the format promises",
)
HTML_ESCAPED = defect(
    "tools.html_escaped",
    "'...' + x|tojson|safe makes Jinja escape the other strings: the model reads &#34; where JSON has quotes",
)
CALL_NAME_LOST = defect(
    "tools.call_name_lost", "history without the called function's name does not say which tool was called"
)
CALL_ARGUMENTS_LOST = defect(
    "tools.call_arguments_lost",
    "history without the call's argument keys or values (a constant in their place) does not say what was "
    "asked of the tool",
)
ARGUMENTS_REPR = defect(
    "tools.arguments_repr",
    "a call's argument value that is an object or a list written as a Python repr ({'days': 3}, ['a']) is "
    "single-quoted pseudo-JSON: the model reads a form it was not shown in training, and a parser cannot "
    "read it back",
)
CALL_NAME_ONLY_IN_ID = policy(
    "tools.call_name_only_in_id",
    "a template that writes the client's call id where its format names the called function (Kimi's "
    "functions.NAME:0) relies on the server making ids of that form; an id of another form, such as the "
    "call_... ids other OpenAI-compatible servers make, loses the function's name",
)
STRING_ARGUMENTS = policy(
    "tools.string_arguments_unsupported",
    "transformers documents tool-call arguments as a dict (vLLM parses JSON strings into dicts before "
    "rendering); a template that takes only dicts follows that contract, but clients passing the OpenAI wire "
    "form unchanged get a wrong prompt or an error",
)
CALL_DROPPED_WITH_CONTENT = defect(
    "tools.call_dropped_with_content",
    "an assistant message with both text and tool calls is common; dropping its calls rewrites history",
)
CONTENT_DROPPED_WITH_CALLS = defect(
    "tools.content_dropped_with_calls",
    "an assistant message with both text and tool calls is common; dropping its text rewrites history",
)
DICT_RESULT_RAISES = policy(
    "tools.dict_result_raises",
    "tool results are strings in the OpenAI and transformers forms; a template that raises on a dict result "
    "gives the client an error, never a wrong prompt",
)
CALL_DROPPED = defect(
    "tools.call_dropped",
    "a template that shows the model its tools and their results but drops the assistant's tool calls "
    "rewrites every agent's history: the model reads results of calls it never made",
)
EMPTY_CALLS = defect(
    "tools.empty_calls_mishandled",
    "some clients send tool_calls: [] on a reply without calls; a template that tests `is defined` or "
    "`is not none` takes it for a call turn, dropping the reply's text or writing an empty tool-calls block",
)
RESULT_DROPPED = defect("tools.result_dropped", "the model never sees what the tool returned")
#: Why a dict tool result is a hazard of apply_chat_template, not a defect: see the two causes below.
_DICT_ONLY_THERE = (
    "tool results are strings (or text parts) in the OpenAI form and strings in transformers' documentation, "
    "and servers pass no dict: only a harness that passes a dict to apply_chat_template gets this, and it "
    "encodes the result as JSON on its side (or the template writes results that are not strings with | tojson)"
)
RESULT_REPR = hazard(
    "tools.result_repr",
    "apply_chat_template",
    f"a dict tool result printed as a Python repr is single-quoted pseudo-JSON; {_DICT_ONLY_THERE}",
)
DICT_RESULT_DROPPED = hazard(
    "tools.dict_result_dropped",
    "apply_chat_template",
    f"a dropped dict tool result leaves the model without what the tool returned; {_DICT_ONLY_THERE}",
)
RESULT_REENCODED = defect(
    "tools.result_reencoded",
    "tool results are strings (the OpenAI and transformers form); encoding one as JSON again wraps it in "
    "quotes and escapes, which the model reads as a different result",
)

TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup_zq7",
        "description": 'Find a "city" by name, e.g. "Paris" (quotes on purpose).',
        "parameters": {
            "type": "object",
            "properties": {
                "cityzq7": {"type": "string", "description": "The city's name."},
                "unitszq7": {"type": "string", "description": "The units."},
            },
            "required": ["cityzq7"],
        },
    },
}
#: The same tool without quotes in its description: JSON built by hand should parse for it.
PLAIN_TOOL = {**TOOL, "function": {**TOOL["function"], "description": "Find a city by name."}}
ARGUMENTS = {"cityzq7": "Pariszq7arg", "unitszq7": "celsiuszq7"}
#: Arguments with values that are not strings: an object and a list, whose Python reprs differ from JSON.
NESTED_ARGUMENTS = {"cityzq7": "Pariszq7arg", "optionszq7": {"dayszq7": 3}, "tagszq7": ["warmzq7"]}
_ASK = conv.user("Where is Paris?")
_ESCAPES = ("&#34;", "&#39;", "&quot;", "&lt;", "&gt;", "&amp;")


def _call(arguments: Any, call_id: str = CALL_IDS[0]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "lookup_zq7", "arguments": arguments}}


def _with_call(arguments: Any, content: str = "", call_id: str = CALL_IDS[0]) -> conv.Conversation:
    return [_ASK, {"role": "assistant", "content": content, "tool_calls": [_call(arguments, call_id)]}]


def _json_objects_around(text: str, needle: str) -> list[Any]:
    """Every JSON object that parses from a ``{`` before an occurrence of ``needle`` and spans it."""
    decoder = json.JSONDecoder()
    found = []
    at = text.find(needle)
    while at >= 0:
        start = at
        for _ in range(8):
            start = text.rfind("{", 0, start)
            if start < 0:
                break
            try:
                value, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            if end > at:
                found.append(value)
                break
        at = text.find(needle, at + 1)
    return found


class _Renders:
    """Renders tool conversations with the tool defined, collecting the errors as findings."""

    def __init__(self, subject: Subject, *, definitions: bool = True) -> None:
        self.subject = subject
        #: ``False``: render without ``tools``, as a later request of a conversation (see :func:`_bare`).
        self.definitions = definitions
        self.findings: list[Finding] = []

    def __call__(
        self, messages: conv.Conversation, what: str, *, tool: dict[str, Any] = TOOL, crash: Cause = CRASH
    ) -> str | None:
        try:
            return self.subject.render(messages, tools=[tool] if self.definitions else None)
        except RenderError as error:
            if error.kind == "security":  # the sandbox check's cause: noted here
                self.findings.append(
                    Finding(Outcome.FAILED, f"{what} does not render: {error}", SANDBOX_REFUSED)
                )
                return None
            rule = REFUSED if error.kind == "refused" else crash
            self.findings.append(rule(f"{what} does not render: {error}"))
            return None


@check(Layer.TEMPLATE)
def tools(subject: Subject) -> list[Finding]:
    """Tool definitions, tool calls (name, argument keys and values, as a dict and as a JSON string) and tool
    results (a string, a JSON string and a dict) reach the prompt as the client sent them; JSON the template
    builds parses and is not HTML-escaped.

    Catches tool definitions dropped or printed as a Python repr (``tools|string``), hand-built JSON broken by
    a quote or never valid, ``&#34;`` from ``"..." + x|tojson|safe``, calls whose name or arguments are lost,
    a call named only through the client's id (lost for an OpenAI ``call_`` id), object or list argument
    values printed as a Python repr, a call or the assistant's text dropped when a message has both, calls
    dropped by a template that shows tools and their results, ``tool_calls: []`` taken for a call turn,
    string arguments or results encoded a second time, and a dict tool result printed as a Python repr. A
    template whose tool definitions crash has its calls and results checked without ``tools``.
    """
    skip = blank(subject)
    if skip is not None:
        return skip
    caps = probe(subject)
    probed = probe_findings(subject, "tools", crash=CRASH, refused=REFUSED)
    if not (caps.tools or caps.tool_calls or "tools" in caps.repr_only):
        crashed = any(f.shape == DEFINITIONS_SHAPE and f.kind == "raised" for f in caps.failures)
        bare = _bare(subject) if crashed else []
        return distinct([*probed, *bare]) or [
            skipped("the template renders neither tool definitions nor tool calls")
        ]
    render = _Renders(subject)
    findings: list[Finding] = []
    if caps.tools or "tools" in caps.repr_only:
        findings += _definitions(render)
    if caps.tool_calls:
        findings += _tool_calls(render, caps.object_arguments)
    elif caps.tools:  # tools shown, calls not: "unsupported" only for a template that serves no agent
        findings += _calls_dropped(render)
    findings += _empty_calls(subject)
    if caps.tool_calls:  # a template that renders calls but drops their results is what is checked here
        findings += _tool_results(render, caps.object_arguments)
    return distinct([*probed, *render.findings, *findings])


#: The capability probe of tool definitions (:func:`templatecheck.capabilities.probe`).
DEFINITIONS_SHAPE = "a conversation with tool definitions"
_BARE_NOTE = (
    "\n  (rendered without `tools`, as a later request of the conversation: the tool definitions crash, "
    "so this is what remains broken once they render)"
)


def _bare(subject: Subject) -> list[Finding]:
    """The tool calls and results of a template whose tool definitions crash, checked on renders without
    ``tools`` (the form of a client's later requests), so that the crash does not hide calls dropped, lost or
    encoded twice, or results dropped. Only what renders wrong is reported: a crash here is behind the
    definitions' crash, which the probe reports."""
    render = _Renders(subject, definitions=False)
    base = render([_ASK], "a conversation without tools")
    if base is None:
        return []
    shows = {
        form: rendered is not None and not _lost(rendered, base, ARGUMENTS)
        for form, rendered in (
            ("dict", render(_with_call(ARGUMENTS), "a tool call without tools")),
            ("string", render(_with_call(json.dumps(ARGUMENTS)), "a tool call without tools")),
        )
    }
    if any(shows.values()):
        found = _tool_calls(render, shows["dict"]) + _tool_results(render, shows["dict"])
    else:
        found = _calls_dropped(render)
    return [replace(f, message=f.message + _BARE_NOTE) for f in found]


def _escaped(rendered: str) -> str | None:
    return next((e for e in _ESCAPES if e in rendered), None)


#: The filters that make a value Markup: a string joined to one with ``+`` is HTML-escaped by Python's Jinja.
MARKUP_FILTERS = ("safe", "escape", "e", "forceescape")
#: What to change where a string is joined to Markup.
HTML_ESCAPED_FIX = "drop | safe (| tojson already returns text), or build the string with ~ instead of +"


@lru_cache(maxsize=256)
def markup_filters(source: str) -> tuple[tuple[int, str], ...]:
    """The template's filters that make Markup (:data:`MARKUP_FILTERS`), as (line, ``|name``), in line order:
    where the escaping of the strings joined to their value comes from; kept per source."""
    tree = parse_template(source)
    found = [
        (f.lineno, f"|{f.name}") for f in nodes_of(tree, jinja2.nodes.Filter) if f.name in MARKUP_FILTERS
    ]
    return tuple(sorted(found))


def _html_escaped(rendered: str, what: str, source: str) -> Finding:
    escape = _escaped(rendered) or ""
    at = rendered.find(escape)
    made = ", ".join(f"line {line}, `{name}`" for line, name in markup_filters(source)[:4])
    return HTML_ESCAPED(
        f"{what} renders HTML-escaped ({escape!r} where the JSON has a quote): a string joined to a | safe value "
        "('...' + x|tojson|safe) is escaped by Jinja"
        + (f"; the Markup is made at {made}" if made else "")
        + "\n"
        f"  near: {rendered[max(0, at - 40) : at + 80]!r}",
        fix=HTML_ESCAPED_FIX,
    )


def _definitions(render: _Renders) -> list[Finding]:
    prompt = render([_ASK], "a conversation with tools")
    if prompt is None:
        return []
    if "{'type': 'function'" in prompt or "{'name': 'lookup_zq7'" in prompt:
        return [
            DEFINITIONS_REPR(
                "the tool definitions are printed as a Python repr (tools|string), not as JSON\n"
                f"  near: {prompt[max(0, prompt.find('lookup_zq7') - 60) : prompt.find('lookup_zq7') + 60]!r}",
                fix="render each tool with | tojson",
            )
        ]
    missing = [s for s in ("lookup_zq7", "cityzq7", "unitszq7") if s not in prompt]
    found = []
    if missing:
        found.append(
            DEFINITIONS_DROPPED(f"tool definitions lose {', '.join(missing)} on the way into the prompt")
        )
    if _escaped(prompt):
        return [*found, _html_escaped(prompt, "the tool definitions", render.subject.template.source)]
    broken = _broken_json(render, prompt)
    return found if broken is None else [*found, broken]


def _broken_json(render: _Renders, prompt: str) -> Finding | None:
    """Tool JSON the template writes that does not parse: broken by the quote in the description, or always."""
    if '"lookup_zq7"' not in prompt or _json_objects_around(prompt, '"lookup_zq7"'):
        return None
    at = prompt.find('"lookup_zq7"')
    near = f"  near: {prompt[max(0, at - 40) : at + 120]!r}"
    plain = render([_ASK], "a conversation with a plain tool", tool=PLAIN_TOOL)
    if plain is not None and _json_objects_around(plain, '"lookup_zq7"'):
        return JSON_UNESCAPED(
            "the tool definitions the template writes as JSON do not parse when a description has a quote "
            f"(hand-built JSON)\n{near}",
            fix="write each tool with | tojson",
        )
    return JSON_INVALID(
        "the tool definitions the template writes as JSON never parse, even for a description without quotes "
        f"(e.g. a raw newline inside a JSON string)\n{near}",
        fix="write each tool with | tojson",
    )


def _lost(rendered: str, base: str, arguments: dict[str, Any]) -> list[Cause]:
    """The parts of the call missing from ``rendered`` (``base`` is the rendering without the call). A format
    that names the call by its id (Kimi: ``functions.NAME:0``) keeps the id instead of the name."""
    lost = []
    if rendered.count("lookup_zq7") <= base.count("lookup_zq7") and CALL_IDS[0] not in rendered:
        lost.append(CALL_NAME_LOST)
    values = [v for v in arguments.values() if v not in rendered]
    keys = [k for k in arguments if rendered.count(k) <= base.count(k)]
    if values or keys:
        lost.append(CALL_ARGUMENTS_LOST)
    return lost


_LOST_MESSAGES = {
    CALL_NAME_LOST.key: "a tool call loses the called function's name: it is not in the prompt",
    CALL_ARGUMENTS_LOST.key: "a tool call loses its arguments: the argument keys or values are not in the prompt "
    "(a constant, or nothing, in their place)",
}


def _tool_calls(render: _Renders, object_ok: bool) -> list[Finding]:
    findings: list[Finding] = []
    base = render([_ASK], "a conversation with tools") or ""
    as_object = render(_with_call(ARGUMENTS), "a tool call with dict arguments")
    as_string = render(
        _with_call(json.dumps(ARGUMENTS)), "a tool call with string arguments", crash=STRING_ARGUMENTS
    )
    for form, rendered in (("dict", as_object), ("string", as_string)):
        if rendered is None:
            continue
        if _escaped(rendered) and not _escaped(base):
            findings.append(
                _html_escaped(rendered, f"a tool call with {form} arguments", render.subject.template.source)
            )
            continue
        lost = _lost(rendered, base, ARGUMENTS)
        if lost and (form == "dict" or as_object is None):
            shown = quote(rendered[max(0, len(base) - 40) :])
            findings += [
                rule(f"{_LOST_MESSAGES[rule.key]} ({form} arguments)\n  rendering:\n{shown}") for rule in lost
            ]
        elif (
            form == "string"
            and rendered != as_object
            and (lost or _encoded_twice(rendered, json.dumps(ARGUMENTS)))
        ):
            findings.append(_string_arguments(as_object, rendered))
    if as_object is not None:
        findings += _arguments_repr(render, base)
    chosen = ARGUMENTS if object_ok else json.dumps(ARGUMENTS)
    findings += _name_only_in_id(render, base, as_object if object_ok else as_string, chosen)
    both = render(_with_call(chosen, content="Let me look zq7content up."), "a tool call next to content")
    if both is not None:
        if "Pariszq7arg" not in both:
            findings.append(
                CALL_DROPPED_WITH_CONTENT(
                    "the tool call is dropped when the assistant message also has content"
                )
            )
        if "zq7content" not in both:
            findings.append(
                CONTENT_DROPPED_WITH_CALLS(
                    "the assistant's content is dropped when the message also has tool calls",
                    fix="render message.content (when not empty) before the tool calls",
                )
            )
    return findings


def _arguments_repr(render: _Renders, base: str) -> list[Finding]:
    """Dict arguments whose values are an object and a list: each value reaches the prompt as JSON, not as a
    Python repr (a template that writes each value with ``| string``, or the whole dict unencoded). A format
    that writes calls as Python calls (LFM2's ``lookup(city='Paris')``) has Python literals as its own."""
    rendered = render(_with_call(NESTED_ARGUMENTS), "a tool call with object and list argument values")
    if rendered is None or rendered.count("lookup_zq7(") > base.count("lookup_zq7("):
        return []
    reprs = [repr(v) for v in NESTED_ARGUMENTS.values() if not isinstance(v, str)]
    shown = next((r for r in reprs if r in rendered), None)
    if shown is None:
        return []
    at = rendered.find(shown)
    return [
        ARGUMENTS_REPR(
            f"a tool call's argument value that is an object or a list is written as a Python repr ({shown}), "
            f"not as JSON\n  near: {rendered[max(0, at - 60) : at + 60]!r}",
            fix="write a value that is not a string with | tojson: {% if v is string %}{{ v }}{% else %}"
            "{{ v | tojson }}{% endif %}",
        )
    ]


#: An id of the form OpenAI-compatible clients send, which names no function.
OPENAI_ID = "call_Hx8GjKq2mWv5RtY1nBzP3aLc"


def _name_only_in_id(render: _Renders, base: str, rendered: str | None, arguments: Any) -> list[Finding]:
    """A call the template names only through its id (the function's name is not written, the id is):
    rendered again with an OpenAI-style id, the name must still reach the prompt."""
    if (
        rendered is None
        or CALL_IDS[0] not in rendered
        or rendered.count("lookup_zq7") > base.count("lookup_zq7")
    ):
        return []
    other = render(_with_call(arguments, call_id=OPENAI_ID), "a call with a call_ id")
    if other is None or other.count("lookup_zq7") > base.count("lookup_zq7"):
        return []
    at = other.find(OPENAI_ID)
    return [
        CALL_NAME_ONLY_IN_ID(
            f"a tool call is named only by the id the client sent: with the id {OPENAI_ID!r} the called "
            "function's name (lookup_zq7) is not in the prompt\n"
            f"  near: {other[max(0, at - 60) : at + 80]!r}",
            fix="write the name from tool_call.function.name (e.g. 'functions.' ~ name ~ ':' ~ loop.index0) "
            "instead of the client's id, or refuse ids of other forms with raise_exception('...')",
        )
    ]


def _quiet(subject: Subject, messages: conv.Conversation) -> str | None:
    """The rendering with the tool defined, or ``None``: a crash on these shapes is a wire shape's (probe)."""
    try:
        return subject.render(messages, tools=[TOOL])
    except RenderError:
        return None


def _calls_dropped(render: _Renders) -> list[Finding]:
    """A template that shows tool definitions and tool results serves agents: a call it drops is a defect."""
    call = {"role": "assistant", "content": "", "tool_calls": [_call(json.dumps(ARGUMENTS))]}
    result = {"role": "tool", "tool_call_id": CALL_IDS[0], "name": "lookup_zq7", "content": "sunny zq7result"}
    rendered = render([_ASK, call, result], "a tool call and its result")
    if rendered is None or "zq7result" not in rendered:
        return []
    at = rendered.find("zq7result")
    return [
        CALL_DROPPED(
            "the template shows the model its tools and the tool's result, but drops the assistant's tool "
            "call (its name and arguments are not in the prompt)\n"
            f"  rendering:\n{quote(rendered[max(0, at - 200) : at + 40])}",
            fix="render message.tool_calls (each call's function name and arguments) on assistant turns",
        )
    ]


def _empty_calls(subject: Subject) -> list[Finding]:
    """``tool_calls: []`` next to text renders as that reply without ``tool_calls`` would."""
    reply = "It is sunny zq7empty."
    plain = _quiet(subject, [_ASK, conv.assistant(reply), conv.user("Thanks")])
    empty = _quiet(subject, [_ASK, {**conv.assistant(reply), "tool_calls": []}, conv.user("Thanks")])
    if plain is None or empty is None or "".join(empty.split()) == "".join(plain.split()):
        return []  # a newline more or less is the same reply
    what = "drops the reply's text" if "zq7empty" not in empty else "renders differently"
    return [
        EMPTY_CALLS(
            f"an assistant reply with tool_calls: [] {what} from the same reply without tool_calls\n"
            + diff(plain, empty, labels=("without tool_calls", "tool_calls: []")),
            fix="treat an empty list as no calls: test {% if message.tool_calls %} (not `is defined` or "
            "`is not none`)",
        )
    ]


def _string_arguments(as_object: str | None, as_string: str) -> Finding:
    shown = (
        diff(as_object, as_string, labels=("dict arguments", "string arguments"))
        if as_object is not None
        else f"  rendering:\n{quote(as_string)}"
    )
    return STRING_ARGUMENTS(
        "a tool call with arguments as a JSON string (the OpenAI wire form) renders differently from dict "
        "arguments: the string is encoded a second time, or lost\n" + shown,
        fix="template: accept both ({% if args is string %}{{ args }}{% else %}{{ args | tojson }}{% endif %}); "
        "harness: pass arguments as a dict, as vLLM does",
    )


def _encoded_twice(rendered: str, text: str) -> bool:
    """``text`` appears only JSON-encoded a second time (quoted and escaped)."""
    encoded = json.dumps(text, ensure_ascii=False)
    return encoded in rendered and text not in rendered.replace(encoded, "")


def _reencoded(rendered: str, text: str) -> bool:
    """``text`` appears only JSON-encoded a second time (quoted, escaped), not inside a JSON object that
    holds it as a value."""
    if not _encoded_twice(rendered, text):
        return False
    holders = _json_objects_around(rendered, json.dumps(text, ensure_ascii=False))
    return not any(text in _string_values(h) for h in holders)


def _string_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _string_values(v)]
    if isinstance(value, list):
        return [s for v in value for s in _string_values(v)]
    return []


def _tool_results(render: _Renders, object_ok: bool) -> list[Finding]:
    findings: list[Finding] = []
    arguments: Any = {"cityzq7": "Paris"} if object_ok else json.dumps({"cityzq7": "Paris"})
    result = {"temperature": 21, "unit": "zq7unit"}
    for content in ("sunny zq7result", json.dumps(result), result):
        messages = [
            *_with_call(arguments),
            {"role": "tool", "tool_call_id": CALL_IDS[0], "name": "lookup_zq7", "content": content},
        ]
        form = "dict" if isinstance(content, dict) else "string"
        rendered = render(
            messages, f"a {form} tool result", crash=DICT_RESULT_RAISES if form == "dict" else CRASH
        )
        if rendered is None:
            continue
        if isinstance(content, str) and _reencoded(rendered, content):
            findings.append(
                RESULT_REENCODED(
                    f"a string tool result is JSON-encoded a second time: {content!r} renders as "
                    f"{json.dumps(content, ensure_ascii=False)!r}",
                    fix="write a string result as it is: {% if m.content is string %}{{ m.content }}"
                    "{% else %}{{ m.content | tojson }}{% endif %}",
                )
            )
        elif isinstance(content, dict) and repr(content) in rendered:
            findings.append(
                RESULT_REPR(
                    f"a dict tool result is rendered as a Python repr ({repr(content)!r}): the model sees "
                    "single-quoted pseudo-JSON",
                    fix="render a result that is not a string with | tojson",
                )
            )
        elif "zq7result" not in rendered and "zq7unit" not in rendered:
            if form == "dict" and any(f.cause == RESULT_DROPPED.key for f in findings):
                continue  # every result is dropped: one root cause, the string result's
            dropped = DICT_RESULT_DROPPED if form == "dict" else RESULT_DROPPED
            findings.append(dropped(f"a {form} tool result is dropped from the prompt"))
    return findings
