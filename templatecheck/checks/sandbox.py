"""Template layer: what a template tries to do outside the chat format (sandbox escapes)."""

from __future__ import annotations

import jinja2.nodes

from templatecheck import conversation as conv
from templatecheck.causes import defect
from templatecheck.checks import check
from templatecheck.model import Subject
from templatecheck.render import RenderError, parse_template
from templatecheck.result import Finding, Layer

#: Attributes of Python internals that a template can only want in order to escape the sandbox.
_INTERNALS = frozenset({"mro", "func_globals", "f_globals", "f_locals", "gi_frame", "cr_frame", "tb_frame"})
#: Filters that take an attribute name as a string.
_ATTRIBUTE_FILTERS = frozenset(
    {"attr", "map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"}
)


def _private(name: object) -> bool:
    return isinstance(name, str) and any(part.startswith("_") for part in name.split("."))


def escape_attempts(source: str) -> list[tuple[int, str]]:
    """(line, name) of each private or internal attribute the template reaches for: ``x.__class__``,
    ``x['__globals__']``, ``x | attr('_private')``, ``map(attribute='__class__')``."""
    ast = parse_template(source)
    found: list[tuple[int, str]] = []
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem, jinja2.nodes.Filter)):
        if isinstance(node, jinja2.nodes.Getattr):
            names = [node.attr] if _private(node.attr) or node.attr in _INTERNALS else []
        elif isinstance(node, jinja2.nodes.Getitem):
            arg = node.arg
            names = [arg.value] if isinstance(arg, jinja2.nodes.Const) and _private(arg.value) else []
        elif isinstance(node, jinja2.nodes.Filter) and node.name in _ATTRIBUTE_FILTERS:
            values = [*node.args, *(kw.value for kw in node.kwargs)]
            names = [v.value for v in values if isinstance(v, jinja2.nodes.Const) and _private(v.value)]
        else:
            names = []
        found += [(node.lineno, str(name)) for name in names]
    return found


ESCAPE = defect(
    "sandbox.escape_attempt",
    "a chat template has no use for Python internals: reaching for them is an attack on whoever renders it",
)
REFUSED = defect(
    "sandbox.refused_operation",
    "an operation the sandbox refuses fails every render that reaches it, in every engine that sandboxes",
)


@check(Layer.TEMPLATE, needs="parses")
def sandbox(subject: Subject) -> list[Finding]:
    """The template reaches for nothing outside the chat format: no Python internals (``__class__``,
    ``__globals__``, ``__subclasses__``), no private attributes, no operation the sandbox refuses.

    A chat template from the Hub is untrusted code. The sandbox stops these attempts, so they cannot reach the
    host; a template that makes them is reported as a security finding, whatever it renders.
    """
    findings = [
        ESCAPE(
            f"security: the template reaches for {name!r} (line {line}), which a chat template has no use "
            "for: a sandbox escape attempt (the sandbox blocks it)"
        )
        for line, name in escape_attempts(subject.template.source)
    ]
    for conversation in (conv.SYSTEM_USER_ASSISTANT, conv.USER_ONLY):
        try:
            subject.render(conversation, add_generation_prompt=True)
        except RenderError as error:
            if error.kind == "security":
                findings.append(REFUSED(f"security: {error}"))
                break
    return findings
