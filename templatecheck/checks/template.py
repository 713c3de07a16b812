"""Template layer: what the Jinja template itself renders, without tokenizing."""

from __future__ import annotations

from templatecheck import conversation as conv
from templatecheck.checks import check
from templatecheck.model import Subject
from templatecheck.render import RenderError
from templatecheck.report import diff, quote
from templatecheck.result import Finding, Layer, failed, skipped, warning


def _refused_system(error: RenderError, conversation: conv.Conversation) -> bool:
    return error.kind == "refused" and any(m["role"] == "system" for m in conversation)


@check(Layer.TEMPLATE)
def renders(subject: Subject) -> list[Finding]:
    """The template renders the plain conversations (user only; system + user + assistant), with and
    without the generation prompt.

    Catches templates that crash on ordinary input (a missing variable, a type error, a filter that does
    not exist). A deliberate ``raise_exception`` on the system role is a legal policy and only a warning.
    """
    findings = []
    for name in ("user only", "system + user + assistant"):
        conversation = conv.PLAIN[name]
        for add_generation_prompt in (False, True):
            try:
                subject.render(conversation, add_generation_prompt=add_generation_prompt)
            except RenderError as error:
                where = f"{name}, add_generation_prompt={add_generation_prompt}"
                if _refused_system(error, conversation):
                    findings.append(warning(f"the template refuses a system message ({where}): {error}"))
                else:
                    findings.append(
                        failed(f"the template does not render ({where}): {error}\n{conv.describe(conversation)}")
                    )
    return findings


@check(Layer.TEMPLATE)
def generation_prompt(subject: Subject) -> list[Finding]:
    """``add_generation_prompt=True`` appends a non-empty assistant header to the ``False`` rendering, and a
    rendered assistant turn starts with that same header.

    Catches templates that ignore ``add_generation_prompt`` (the model then continues the user's turn), that
    rewrite the conversation when it is set, or whose header differs from the one written before a stored
    assistant reply (so the model is prompted in a form it never saw in training).
    """
    findings: list[Finding] = []
    tried = 0
    for name in ("user only", "system + user"):
        conversation = conv.PLAIN[name]
        try:
            without = subject.render(conversation, add_generation_prompt=False)
            with_prompt = subject.render(conversation, add_generation_prompt=True)
        except RenderError:
            continue  # reported by `renders`
        tried += 1
        header = with_prompt[len(without) :]
        shown = f"conversation ({name}):\n{conv.describe(conversation)}"
        if not with_prompt.startswith(without):
            findings.append(
                failed(
                    "add_generation_prompt=True changes the conversation instead of appending a header\n"
                    f"{shown}\n{diff(without, with_prompt, labels=('add_generation_prompt=False', 'True'))}"
                )
            )
            continue
        if not header.strip():
            findings.append(
                failed(
                    "add_generation_prompt=True adds no assistant header"
                    + (f" (only {header!r})" if header else "")
                    + f": the model is asked to continue the user's turn\n{shown}\n"
                    f"  rendering with add_generation_prompt=True:\n{quote(with_prompt)}\n"
                    "  fix: end the template with "
                    "{% if add_generation_prompt %}<the assistant header>{% endif %}"
                )
            )
            continue
        replied = [*conversation, conv.assistant(conv.ASSISTANT_TEXT)]
        try:
            full = subject.render(replied, add_generation_prompt=False)
        except RenderError as error:
            findings.append(failed(f"the template does not render an assistant reply: {error}\n{shown}"))
            continue
        expected = without + header
        if not full.startswith(expected):
            findings.append(
                failed(
                    "a rendered assistant turn does not start with the generation-prompt header "
                    f"{header!r}: the model is prompted differently from how its replies are written\n"
                    f"conversation:\n{conv.describe(replied)}\n"
                    f"{diff(expected, full[: len(expected) + 40], labels=('prompt + header', 'rendered reply'))}"
                )
            )
    if not tried:
        return [skipped("no plain conversation renders (see `renders`)")]
    return findings
