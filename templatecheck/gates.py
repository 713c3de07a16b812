"""What a template must do before a check can say anything about it: parse, and render a plain conversation.

A template that does not parse is one finding of ``renders``; a template on which no plain conversation
renders cannot pass a property over conversations (it would pass vacuously), so such checks are skipped
with the reason. Both facts are computed once per template and kept in the model's cache.
"""

from __future__ import annotations

from templatecheck import conversation as conv
from templatecheck.model import Subject
from templatecheck.render import RenderError, check_template


def parse_error(subject: Subject) -> RenderError | None:
    """Why the template does not parse or compile, or ``None``."""
    try:
        check_template(subject.template.source, subject.model.limits)
    except RenderError as error:
        return error
    return None


def plain_error(subject: Subject) -> RenderError | None:
    """``None`` when some plain conversation renders (with or without the generation prompt), else the error
    of the first one tried."""
    key = ("plain renders", *subject.template.key)
    if key not in subject.model.cache:
        first: RenderError | None = None
        for conversation in conv.PLAIN.values():
            for add_generation_prompt in (True, False):
                try:
                    subject.render(conversation, add_generation_prompt=add_generation_prompt)
                except RenderError as error:
                    first = first or error
                    continue
                first = None
                break
            else:
                continue
            break
        subject.model.cache[key] = first
    found = subject.model.cache[key]
    return found if isinstance(found, RenderError) else None


def gate(subject: Subject, needs: str) -> str | None:
    """The reason a check that ``needs`` this cannot run on ``subject``, or ``None``."""
    if needs == "nothing":
        return None
    error = parse_error(subject)
    if error is not None:
        return f"the template does not parse (see `renders`): {error}"
    if needs == "renders":
        error = plain_error(subject)
        if error is not None:
            return f"no plain conversation renders (see `renders`): {error}"
    return None
