"""Template layer: what the Jinja template itself renders, without tokenizing."""

from __future__ import annotations

import json

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
                        failed(
                            f"the template does not render ({where}): {error}\n{conv.describe(conversation)}"
                        )
                    )
    return findings


@check(Layer.TEMPLATE)
def generation_prompt(subject: Subject) -> list[Finding]:
    """``add_generation_prompt=True`` appends to the ``False`` rendering exactly the header that precedes an
    assistant reply in a rendered conversation.

    Catches templates that ignore ``add_generation_prompt`` (the model then continues the user's turn), that
    rewrite the conversation when it is set, or whose prompt header differs from the one written before stored
    replies (the model is prompted in a form it never saw in training). A format without an assistant header
    (Mistral, Llama 2: the reply follows ``[/INST]``) passes with an empty prompt. A prompt that adds a forced
    prefix after the header (a thinking opener) or lacks whitespace the header has is a warning.
    """
    findings: list[Finding] = []
    tried = 0
    for name in ("user only", "system + user"):
        conversation = conv.PLAIN[name]
        replied = [*conversation, conv.assistant(conv.ASSISTANT_TEXT)]
        try:
            without = subject.render(conversation, add_generation_prompt=False)
            with_prompt = subject.render(conversation, add_generation_prompt=True)
            full = subject.render(replied, add_generation_prompt=False)
        except RenderError:
            continue  # reported by `renders`
        tried += 1
        finding = _judge_generation_prompt(without, with_prompt, full)
        if finding is not None:
            shown = f"conversation ({name}):\n{conv.describe(conversation)}"
            findings.append(type(finding)(finding.outcome, f"{finding.message}\n{shown}"))
    if not tried:
        return [skipped("no plain conversation renders (see `renders`)")]
    return findings


def _judge_generation_prompt(without: str, with_prompt: str, full: str) -> Finding | None:
    if not with_prompt.startswith(without):
        return failed(
            "add_generation_prompt=True changes the conversation instead of appending a header\n"
            + diff(without, with_prompt, labels=("add_generation_prompt=False", "True"))
        )
    header = with_prompt[len(without) :]
    at = full.find(conv.ASSISTANT_TEXT, len(without)) if full.startswith(without) else -1
    if at < 0:  # the reply is not where it should be: compare the prompt with the rendered turn directly
        if full.startswith(with_prompt) and header.strip():
            return None
        return failed(
            "a rendered assistant turn does not start with the generation prompt "
            f"{header!r}: the model is prompted differently from how its replies are written\n"
            + diff(with_prompt, full[: len(with_prompt) + 40], labels=("prompt", "rendered reply"))
        )
    turn = full[len(without) : at]
    if header == turn or (not header and not turn.strip()):
        return None
    if not header.strip():
        return failed(
            f"add_generation_prompt=True adds {'no' if not header else f'only {header!r} as'} assistant header, "
            f"but replies are written after {turn!r}: the model is asked to continue the user's turn\n"
            f"  rendering with add_generation_prompt=True:\n{quote(with_prompt)}\n"
            "  fix: end the template with {% if add_generation_prompt %}{{ "
            + json.dumps(turn)
            + " }}{% endif %}"
        )
    if turn.startswith(header) and not turn[len(header) :].strip():
        return warning(
            f"the generation prompt {header!r} lacks the whitespace {turn[len(header) :]!r} that precedes "
            f"replies in rendered turns ({turn!r}): the model must generate it itself"
        )
    if header.startswith(turn):
        return warning(
            f"the generation prompt adds {header[len(turn) :]!r} after the turn header {turn!r}, which rendered "
            "replies do not have (a forced prefix such as a thinking opener): history and prompt differ"
        )
    return failed(
        f"a rendered assistant turn does not start with the generation-prompt header {header!r} but with "
        f"{turn!r}: the model is prompted differently from how its replies are written\n"
        + diff(without + header, without + turn, labels=("prompt + header", "rendered reply"))
    )
