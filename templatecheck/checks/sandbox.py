"""Template layer: what a template tries to do outside the chat format (sandbox escapes)."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2.nodes

from templatecheck import conversation as conv
from templatecheck.capabilities import probe
from templatecheck.causes import defect
from templatecheck.checks.base import check
from templatecheck.model import Subject
from templatecheck.render import RenderError, nodes_of, parse_template
from templatecheck.result import Finding, Layer

#: Attributes of Python internals that a template can only want in order to escape the sandbox.
_INTERNALS = frozenset({"mro", "func_globals", "f_globals", "f_locals", "gi_frame", "cr_frame", "tb_frame"})
#: Filters that take an attribute name as a string.
_ATTRIBUTE_FILTERS = frozenset(
    {"attr", "map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"}
)


#: Where each filter takes an attribute name: its position among the arguments, and its keyword.
_ATTRIBUTE_ARGUMENT: dict[str, tuple[int | None, str | None]] = {
    "attr": (0, "name"),
    "map": (None, "attribute"),
    "selectattr": (0, None),
    "rejectattr": (0, None),
    "sort": (2, "attribute"),
    "groupby": (0, "attribute"),
    "sum": (0, "attribute"),
    "unique": (1, "attribute"),
    "min": (1, "attribute"),
    "max": (1, "attribute"),
}
#: The longest string the check folds a computed name to (a name is short; anything longer is not one).
_FOLD_LIMIT = 256


def _private(name: object) -> bool:
    return isinstance(name, str) and any(part.startswith("_") for part in name.split("."))


@dataclass(frozen=True)
class Attempt:
    """One attribute name the template reaches for: its line, the name (``None`` when the check cannot tell
    it), and for a computed name, the filter it is given to."""

    line: int
    name: str | None
    computed_for: str | None = None


def _fold(node: jinja2.nodes.Node) -> str | int | None:
    """The value of a name built from constants with ``~``, ``+`` and ``*`` (``'_' * 2 ~ 'init' ~ '_' * 2``),
    folded without Jinja (whose folding would build ``'_' * 10**12`` too); ``None`` when it is not one."""
    if isinstance(node, jinja2.nodes.Const):
        value = node.value
        return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if isinstance(node, jinja2.nodes.Concat):
        parts = [_fold(n) for n in node.nodes]
        return _bounded("".join(map(str, parts))) if None not in parts else None
    if isinstance(node, (jinja2.nodes.Add, jinja2.nodes.Mul)):
        left, right = _fold(node.left), _fold(node.right)
        if isinstance(node, jinja2.nodes.Add) and isinstance(left, str) and isinstance(right, str):
            return _bounded(left + right)
        if isinstance(node, jinja2.nodes.Mul):
            text, count = (left, right) if isinstance(left, str) else (right, left)
            if isinstance(text, str) and isinstance(count, int) and len(text) * max(count, 0) <= _FOLD_LIMIT:
                return text * count
    return None


def _bounded(text: str) -> str | None:
    return text if len(text) <= _FOLD_LIMIT else None


def _attribute_argument(node: jinja2.nodes.Filter) -> jinja2.nodes.Expr | None:
    """The expression a filter of :data:`_ATTRIBUTE_ARGUMENT` takes as its attribute name, if given."""
    position, keyword = _ATTRIBUTE_ARGUMENT[node.name]
    for kw in node.kwargs:
        if kw.key == keyword:
            return kw.value
    return node.args[position] if position is not None and position < len(node.args) else None


def _computed(node: jinja2.nodes.Filter) -> list[Attempt]:
    """A computed attribute name given to ``node``: reported with its value when it folds to a private name,
    reported as unknown when it does not fold at all (a name that folds to a public name is no attempt)."""
    argument = _attribute_argument(node)
    if argument is None or isinstance(argument, jinja2.nodes.Const):
        return []
    value = _fold(argument)
    if value is None:
        return [Attempt(node.lineno, None, node.name)]
    return [Attempt(node.lineno, str(value), node.name)] if _private(value) else []


def _subscript(node: jinja2.nodes.Getitem) -> list[Attempt]:
    """``x['__class__']``, and ``x['_' * 2 ~ 'class' ~ '_' * 2]``: a subscript that folds to a private name
    (a subscript by a variable, ``tool[key]``, is ordinary and not reported)."""
    arg = node.arg
    if isinstance(arg, jinja2.nodes.Const):
        return [Attempt(node.lineno, arg.value)] if _private(arg.value) else []
    value = _fold(arg)
    return [Attempt(node.lineno, str(value), "[]")] if _private(value) else []


def escape_attempts(source: str) -> list[Attempt]:
    """Each private or internal attribute the template reaches for: ``x.__class__``, ``x['__globals__']``,
    ``x | attr('_private')``, ``map(attribute='__class__')``, and names computed at run time for those
    (``attr('_' * 2 ~ 'init' ~ '_' * 2)``, ``attr(name)``)."""
    ast = parse_template(source)
    found: list[Attempt] = []
    for node in nodes_of(ast, (jinja2.nodes.Getattr, jinja2.nodes.Getitem, jinja2.nodes.Filter)):
        if isinstance(node, jinja2.nodes.Getattr):
            if _private(node.attr) or node.attr in _INTERNALS:
                found.append(Attempt(node.lineno, node.attr))
        elif isinstance(node, jinja2.nodes.Getitem):
            found += _subscript(node)
        elif isinstance(node, jinja2.nodes.Filter) and node.name in _ATTRIBUTE_FILTERS:
            values = [*node.args, *(kw.value for kw in node.kwargs)]
            found += [
                Attempt(node.lineno, v.value)
                for v in values
                if isinstance(v, jinja2.nodes.Const) and _private(v.value)
            ]
            found += _computed(node)
    return found


def _message(attempt: Attempt) -> str:
    where = f"line {attempt.line}"
    if attempt.computed_for is None:
        return (
            f"security: the template reaches for {attempt.name!r} ({where}), which a chat template has no use "
            "for: a sandbox escape attempt (the sandbox blocks it)"
        )
    given = "a subscript" if attempt.computed_for == "[]" else f"the {attempt.computed_for} filter"
    if attempt.name is not None:
        return (
            f"security: the template computes the attribute name {attempt.name!r} ({where}, given to {given}), "
            "which a chat template has no use for: a sandbox escape attempt disguised from a literal search "
            "(the sandbox blocks it)"
        )
    return (
        f"security: the template computes the attribute name it gives to {given} at run time ({where}): a "
        "chat template reads fixed fields, and a name built at run time can reach for Python internals "
        "(the sandbox blocks those)"
    )


ESCAPE = defect(
    "sandbox.escape_attempt",
    "a chat template has no use for Python internals: reaching for them is an attack on whoever renders it",
)
REFUSED = defect(
    "sandbox.refused_operation",
    "an operation the sandbox refuses fails every render that reaches it, in every engine that sandboxes",
)
REFUSED_FIX = (
    "the sandbox (transformers' ImmutableSandboxedEnvironment) refuses methods that change a value "
    "(list.append, list.pop, dict.update) and private attributes: build a new value instead, "
    "{% set ns.items = ns.items + [item] %}"
)


@check(Layer.TEMPLATE, needs="parses")
def sandbox(subject: Subject) -> list[Finding]:
    """The template reaches for nothing outside the chat format: no Python internals (``__class__``,
    ``__globals__``, ``__subclasses__``), no private attributes, no operation the sandbox refuses.

    A chat template from the Hub is untrusted code. The sandbox stops these attempts, so they cannot reach the
    host; a template that makes them is reported as a security finding, whatever it renders. A refused
    operation is found on the plain conversations and on the capability probes and wire-format shapes
    (:mod:`templatecheck.capabilities`): Kimi K2's ``list.append`` on every tool call. It is reported here
    once; ``renders`` and ``tools`` note it.
    """
    findings = [ESCAPE(_message(attempt)) for attempt in escape_attempts(subject.template.source)]
    for conversation in (conv.SYSTEM_USER_ASSISTANT, conv.USER_ONLY):
        try:
            subject.render(conversation, add_generation_prompt=True)
        except RenderError as error:
            if error.kind == "security":
                findings.append(REFUSED(f"security: {error}", fix=REFUSED_FIX))
                return findings
    refused = [f for f in probe(subject).failures if f.kind == "security"]
    if refused:
        shapes = "".join(f"\n  also: {f.shape}" for f in refused[1:])
        findings.append(
            REFUSED(
                f"security: {refused[0].shape} does not render: {refused[0].error}{shapes}\nconversation:\n"
                f"{conv.describe(refused[0].messages)}",
                fix=REFUSED_FIX,
            )
        )
    return findings
