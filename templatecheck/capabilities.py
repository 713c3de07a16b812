"""What a template supports, learnt by rendering probes with sentinel values (never from its name).

A feature is supported when a conversation using it renders and its sentinel reaches the prompt. The result
decides what the hypothesis conversations may contain (:class:`~templatecheck.strategies.Support`), and is
the capabilities table of the reports (with the verdicts of two role checks: :func:`templatecheck.checks.roles.survey`).

A probe that does not render is not "unsupported": a template that ignores a feature renders without its
sentinel, while one that crashes on it (or is refused by the sandbox) fails every request with that feature.
Each such probe, and each wire-format shape (:data:`~templatecheck.conversation.WIRE`) the template does not
take, is kept as a :class:`Failure` for the checks to report (``renders``, ``tools``, ``sandbox``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from templatecheck.conversation import WIRE, Conversation, Shape, assistant, system, user
from templatecheck.model import Subject
from templatecheck.render import RenderError, nodes_of
from templatecheck.strategies import Support

SENTINEL = "zq7"
#: Tool-call ids of 9 alphanumeric characters: what Mistral's formats require, and valid for every other.
CALL_IDS = ("call00001", "call00002")


def _tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Tool {name}.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }


def _call(name: str, arguments: Any, call_id: str = CALL_IDS[0]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


#: Error kinds that say the template cannot take the input: it refused it (``raise_exception``), raised an
#: error of its own, or the sandbox refused an operation. Bounds (time, size, memory) are the bounds' checks'.
FAILURE_KINDS = ("refused", "raised", "security")


@dataclass(frozen=True)
class Failure:
    """A probe or wire shape the template does not render: ``owner`` is the check that reports it (``renders``
    or ``tools``; a sandbox refusal is ``sandbox``'s whoever observes it), ``kind`` the error kind
    (:data:`FAILURE_KINDS`), ``fix`` what the template should do instead."""

    shape: str
    owner: str
    kind: str
    error: str
    fix: str
    messages: Conversation = field(compare=False, default_factory=list)


@dataclass(frozen=True)
class Capabilities:
    system: bool
    tools: bool
    tool_calls: bool
    parallel_tool_calls: bool
    tool_role: bool
    list_content: bool
    object_arguments: bool
    string_arguments: bool
    reasoning: bool
    #: Text the template injects when the conversation has no system message (``default_system_prompt``).
    default_system_prompt: bool = False
    #: The template writes the current date (``clock``).
    date_injection: bool = False
    #: Features that reach the prompt only as a Python repr (``"tools"``, ``"list content"``): the template
    #: prints the structure (``tools|string``) instead of its text. Not a row of the table.
    repr_only: frozenset[str] = frozenset()
    #: The probes and wire shapes that do not render (see :class:`Failure`). Not a row of the table.
    failures: tuple[Failure, ...] = ()
    #: A dict tool result renders, shown or not (an extension of transformers: drawn only where it renders,
    #: so that content_fidelity sees one dropped).
    dict_results: bool = False

    def failed(self, shape: str) -> bool:
        """The template does not render the probe or wire shape named ``shape``."""
        return any(f.shape == shape for f in self.failures)

    def _fails_apart(self, shape: str, part: str) -> bool:
        """``shape`` fails, and not with the error of ``part`` (a shape it contains: parallel calls with
        ``content: null`` that fail as parallel calls do say nothing of ``content: null``)."""
        errors = {f.shape: f.error for f in self.failures}
        return shape in errors and errors[shape] != errors.get(part)

    @property
    def support(self) -> Support:
        """The conversation features hypothesis may draw for this template."""
        return Support(
            system=self.system,
            tools=self.tools,
            tool_calls=self.tool_calls,
            tool_role=self.tool_role and self.tool_calls,
            list_content=self.list_content,
            string_arguments=self.string_arguments or not self.object_arguments,
            object_arguments=self.object_arguments,
            null_content=not self.failed(NULL_SHAPES[0])
            and not self._fails_apart(NULL_SHAPES[1], PARALLEL_SHAPE),
            any_call_ids=not any(self.failed(s) for s in ID_SHAPES),
            names=not self.failed(USER_NAME),
            nameless_results=not self.failed(RESULT_NAMELESS),
            reasoning=False,  # see :attr:`reasoning_support`
            dict_results=self.dict_results,
            parallel_calls=not self.failed(PARALLEL_SHAPE),
            content_with_calls=not self.failed(CONTENT_WITH_CALLS),
        )

    @property
    def reasoning_support(self) -> Support:
        """:attr:`support` with ``reasoning_content`` on replies where the template reads it. Only for the checks
        that judge each message (``renders``, ``content_fidelity``): a format that drops the reasoning of
        earlier turns, or writes it after the generation prompt, breaks a prefix by convention, which the
        prefix and generation-prompt checks judge on conversations of their own."""
        return replace(self.support, reasoning=self.reasoning and not self.failed(REASONING_ONLY))

    def table(self) -> list[tuple[str, bool]]:
        """(feature, supported) rows for the reports, in a fixed order."""
        return [
            (_LABELS.get(name, name.replace("_", " ")), value)
            for name, value in self.__dict__.items()
            if isinstance(value, bool) and name != "dict_results"
        ]


#: Names of the wire shapes that decide what the hypothesis draw may contain (:class:`Support`).
NULL_SHAPES = ("a tool call with content: null", "parallel tool calls with content: null and their results")
ID_SHAPES = (
    "a tool call with an OpenAI-style string id (call_ + 24 characters)",
    "a tool call with an integer-looking string id",
)
PARALLEL_SHAPE = "parallel tool calls"
CONTENT_WITH_CALLS = "a tool call next to content"
USER_NAME = "a user message with a name field"
RESULT_NAMELESS = "a tool result without a name field (the OpenAI form)"
REASONING_ONLY = "a reasoning-only assistant turn (empty content, reasoning_content)"
assert {*NULL_SHAPES, *ID_SHAPES, USER_NAME, RESULT_NAMELESS, REASONING_ONLY, CONTENT_WITH_CALLS} <= {
    s.name for s in WIRE
}

_LABELS = {
    "system": "system role",
    "tool_role": "tool responses",
    "list_content": "typed (list) content",
    "object_arguments": "object arguments",
    "string_arguments": "string arguments",
    "reasoning": "thinking / reasoning",
}


class _Prober:
    """Renders probes for one template, keeping each one that fails (:class:`Failure`) with its shape."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        self.failures: dict[str, Failure] = {}

    def render(self, messages: Conversation, shape: tuple[str, str, str] | None, **kwargs: Any) -> str | None:
        """The rendering, or ``None`` when it fails; ``shape`` is ``(name, owner, fix)`` of a failure to keep
        (``None``: a failure of this probe is another check's to find)."""
        try:
            return self.subject.render(messages, **kwargs)
        except RenderError as error:
            if shape is not None and error.kind in FAILURE_KINDS:
                name, owner, fix = shape
                self.failures.setdefault(name, Failure(name, owner, error.kind, str(error), fix, messages))
            return None

    def reaches(
        self, sentinel: str, messages: Conversation, shape: tuple[str, str, str] | None = None, **kwargs: Any
    ) -> str:
        """How the sentinel reaches the prompt: ``"text"``, ``"repr"`` (only inside a Python repr of the
        structure that holds it), or ``"absent"`` (not at all, or the conversation does not render)."""
        rendered = self.render(messages, shape, **kwargs)
        if rendered is None or sentinel not in rendered:
            return "absent"
        return "repr" if "{'" in rendered or "[{'" in rendered else "text"

    def shows(
        self, sentinel: str, messages: Conversation, shape: tuple[str, str, str] | None = None, **kwargs: Any
    ) -> bool:
        """The sentinel reaches the prompt as text, not inside a Python repr of the structure that holds it."""
        return self.reaches(sentinel, messages, shape, **kwargs) == "text"

    def count(
        self, text: str, messages: Conversation, shape: tuple[str, str, str] | None = None, **kwargs: Any
    ) -> int:
        """How often ``text`` occurs in the rendering of ``messages`` (-1 when it does not render)."""
        rendered = self.render(messages, shape, **kwargs)
        return -1 if rendered is None else rendered.count(text)

    def wire(self, shapes: list[Shape], *, object_arguments: bool) -> None:
        """Render each wire shape (in one batch), keeping those that fail; its calls' arguments as a dict
        when the template takes only that form (the tools check judges the string form)."""
        renders = [
            (
                [_arguments_as(m, object_arguments) for m in s.messages],
                {} if s.tools == "called" else {"tools": None},
            )
            for s in shapes
        ]
        self.subject.prefetch_each(renders)
        for s, (messages, kwargs) in zip(shapes, renders, strict=True):
            self.render(messages, (s.name, "tools" if s.needs != "plain" else "renders", s.fix), **kwargs)


def _arguments_as(message: dict[str, Any], as_object: bool) -> dict[str, Any]:
    """``message`` with its calls' JSON-string arguments parsed into dicts when ``as_object``."""
    if not as_object or not message.get("tool_calls"):
        return message
    calls = [
        {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
        for c in message["tool_calls"]
    ]
    return {**message, "tool_calls": calls}


_TOOLS_FIX = (
    "render the tool definitions clients send (type: function, function: name, description, parameters) "
    "without assuming fields they may leave out"
)
_CALLS_FIX = "render assistant tool calls in the OpenAI form (id, type: function, function: name, arguments)"


def probe(subject: Subject) -> Capabilities:
    """Render one probe per feature, then the wire shapes of the features found; cached per template."""
    key = ("capabilities", *subject.template.key)
    cached = subject.model.cache.get(key)
    if isinstance(cached, Capabilities):
        return cached
    p = _Prober(subject)
    s = SENTINEL
    ask = user("What is the weather?")
    tool_name = f"tool_{s}"
    tools = [_tool(tool_name)]
    calls = {
        form: [ask, {"role": "assistant", "content": "", "tool_calls": [_call(tool_name, args)]}]
        for form, args in (("object", {"city": f"c{s}"}), ("string", json.dumps({"city": f"c{s}"})))
    }
    listed = [user([{"type": "text", "text": f"l{s}"}])]
    with_system = [system(f"s{s}"), user("hi")]
    reasoned = [user("q"), {**assistant("a"), "reasoning_content": f"t{s}"}]
    subject.prefetch_each(  # the probes that do not depend on others' answers, in one batch
        [
            ([ask], {"tools": tools}),
            *((c, {"tools": tools}) for c in calls.values()),
            (listed, {}),
            (with_system, {}),
            (reasoned, {}),
        ]
    )
    definitions = p.reaches(
        tool_name, [ask], ("a conversation with tool definitions", "tools", _TOOLS_FIX), tools=tools
    )
    call_shape = ("a tool call (dict arguments)", "tools", _CALLS_FIX)
    object_arguments = p.shows(f"c{s}", calls["object"], call_shape, tools=tools)
    string_arguments = p.shows(f"c{s}", calls["string"], tools=tools)  # the tools check judges this form
    # a call whose arguments never show (written as a constant) is still a call: its name shows once more
    named = max(p.count(tool_name, calls[f], tools=tools) for f in calls)
    tool_calls = object_arguments or string_arguments or named > p.count(tool_name, [ask], tools=tools)
    form = "object" if object_arguments else "string"
    parallel = [
        ask,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                _call(tool_name, {"city": "a"}, CALL_IDS[0]),
                _call(f"second_{s}", {"city": "b"}, CALL_IDS[1]),
            ],
        },
    ]
    result = [
        *calls[form],
        {"role": "tool", "tool_call_id": CALL_IDS[0], "name": tool_name, "content": f"r{s}"},
    ]
    dict_result = [*calls[form], {"role": "tool", "tool_call_id": CALL_IDS[0], "content": {"t": f"d{s}"}}]
    second = [*tools, _tool(f"second_{s}")]
    if tool_calls:
        subject.prefetch_each(
            [(result, {"tools": tools}), (dict_result, {"tools": tools}), (parallel, {"tools": second})]
        )
    source = subject.template.source
    parts = p.reaches(f"l{s}", listed)  # content_fidelity's to judge
    on_calls = (PARALLEL_SHAPE, "tools", _CALLS_FIX) if tool_calls else None
    on_results = ("a tool result", "tools", "render tool messages (role: tool, tool_call_id, content)")
    reasoning_shape = ("an assistant reply with reasoning_content", "renders", WIRE[3].fix)
    tool_role = tool_calls and p.shows(f"r{s}", result, on_results, tools=tools)
    # a template that shows tools and their results serves agents, though it drops the calls (``tools``
    # reports that): the shapes of calls are its to take
    agents = tool_calls or (definitions == "text" and p.shows(f"r{s}", result, tools=tools))
    features = {"plain"} | ({"tool_calls"} if agents else set()) | ({"tool_role"} if tool_role else set())
    # transformers picks a ``tool_use`` template only for a request with tools: it never gets one without
    p.wire(
        [w for w in WIRE if w.needs in features and (w.tools or subject.template.name != "tool_use")],
        object_arguments=object_arguments and not string_arguments,
    )
    found = Capabilities(
        system=p.shows(f"s{s}", with_system),
        tools=definitions == "text",
        tool_calls=tool_calls,
        parallel_tool_calls=tool_calls and p.shows(f"second_{s}", parallel, on_calls, tools=second),
        tool_role=tool_role,
        list_content=parts == "text",
        object_arguments=object_arguments,
        string_arguments=string_arguments,
        reasoning=any(f in source for f in ("reasoning_content", "thinking", "enable_thinking"))
        and p.shows(f"t{s}", reasoned, reasoning_shape),
        repr_only=frozenset(
            name for name, how in (("tools", definitions), ("list content", parts)) if how == "repr"
        ),
        failures=tuple(p.failures.values()),
        dict_results=tool_role and p.render(dict_result, None, tools=tools) is not None,
    )
    subject.model.cache[key] = found
    return found


# ---------------------------------------------------------------------------------------------- switches

#: At most this many switches are rendered both ways (the first in the template's order).
MAX_SWITCHES = 3
#: Names a template reads that are not switches a caller sets (the render's own arguments).
_NOT_SWITCHES = frozenset(
    {"add_generation_prompt", "continue_final_message", "tools", "documents", "messages"}
)


def switches(subject: Subject) -> tuple[str, ...]:
    """The template's switches: the variables it reads without defining them and only as conditions
    (``{% if enable_thinking %}``, ``enable_thinking is false``, ``not add_vision_id``), which servers pass
    as ``chat_template_kwargs``; learnt from its syntax tree (no template code runs), those the run sets
    (``--tc-template-var``) left out."""
    from templatecheck.render import template_variables

    try:
        free = template_variables(subject.template.source)
        conditions = _condition_names(subject.template.source)
    except RenderError:
        return ()
    found = [
        name
        for name in conditions
        if name in free and name not in _NOT_SWITCHES and name not in subject.options.template_vars
    ]
    return tuple(found[:MAX_SWITCHES])


@lru_cache(maxsize=256)
def _condition_names(source: str) -> tuple[str, ...]:
    """:func:`_conditions` of the template's syntax tree, once per template."""
    from templatecheck.render import parse_template

    return tuple(_conditions(parse_template(source)))


def _conditions(tree: Any) -> list[str]:
    """Names read only as conditions, in order of first use; a name the template also assigns (a loop's or
    a macro's own flag) only when it tests whether it is defined (``{% if x is not defined %}{% set x = ...``:
    a default for a caller's switch)."""
    from jinja2 import nodes

    boolean: dict[str, bool] = {}
    assigned = {n.name for n in nodes_of(tree, nodes.Name) if n.ctx in ("store", "param")}
    defaulted = {
        t.node.name
        for t in nodes_of(tree, nodes.Test)
        if t.name in ("defined", "undefined") and isinstance(t.node, nodes.Name)
    }

    def visit(node: Any, condition: bool) -> None:
        if isinstance(node, nodes.Name):
            if node.ctx == "load":
                boolean[node.name] = boolean.get(node.name, True) and condition
            return
        for field_name, child in node.iter_fields():
            for item in child if isinstance(child, list) else [child]:
                if isinstance(item, nodes.Node):
                    visit(item, _is_condition(node, field_name, condition))

    visit(tree, False)
    return [name for name, only in boolean.items() if only and (name not in assigned or name in defaulted)]


def _is_condition(parent: Any, field_name: str, condition: bool) -> bool:
    """Whether the ``field_name`` of ``parent`` (itself read as a condition or not) is read as a condition."""
    from jinja2 import nodes

    if isinstance(parent, (nodes.If, nodes.CondExpr)):
        return field_name == "test"
    if isinstance(parent, (nodes.Not, nodes.And, nodes.Or)):
        return condition
    if isinstance(parent, nodes.Test):  # `x is defined`, `x is false`, `x is sameas true`
        return field_name == "node" and parent.name in {
            "defined",
            "undefined",
            "true",
            "false",
            "boolean",
            "none",
            "sameas",
        }
    if isinstance(parent, (nodes.Compare, nodes.Operand)):  # `x == true`, `x != false`
        return condition and _compared_with_bool(parent)
    if isinstance(parent, nodes.Filter) and parent.name in ("default", "d"):  # `x | default(true)`
        return condition and field_name == "node"
    return False


def _compared_with_bool(node: Any) -> bool:
    from jinja2 import nodes

    return any(isinstance(n, nodes.Const) and isinstance(n.value, bool) for n in node.find_all(nodes.Const))


def switched(subject: Subject, names: Sequence[str] | None = None) -> list[tuple[str, Subject]]:
    """For each switch (see :func:`switches`; ``names`` instead, when given) and each value: its label
    (``enable_thinking=False``) and the subject that renders with it."""
    found = []
    for name in switches(subject) if names is None else names:
        for value in (True, False):
            variables = {**subject.options.template_vars, name: value}
            found.append(
                (
                    f"{name}={value}",
                    replace(subject, options=replace(subject.options, template_vars=variables)),
                )
            )
    return found
