"""Tokenizer layer: what the model receives once the rendering is tokenized."""

from __future__ import annotations

from templatecheck import conversation as conv
from templatecheck.checks import check
from templatecheck.model import Subject
from templatecheck.render import RenderError
from templatecheck.report import tokens
from templatecheck.result import Finding, Layer, failed, skipped

_PATHS = {
    True: "tokenizer(prompt), the default harnesses use on a rendered prompt",
    False: "apply_chat_template(tokenize=True), i.e. tokenizer(prompt, add_special_tokens=False)",
}


@check(Layer.TOKENIZER)
def double_bos(subject: Subject) -> list[Finding]:
    """Tokenizing the rendered prompt the two usual ways gives exactly one BOS, at the start.

    Catches the double BOS of a template that writes ``bos_token`` while the tokenizer also adds one (a
    measurable loss for Llama-3-family models under harnesses that tokenize with default settings), and the
    missing BOS of a template that leaves it to a tokenizer that does not add it.
    """
    tokenizer = subject.model.tokenizer
    bos_id, bos = tokenizer.bos_token_id, tokenizer.bos_token
    if bos_id is None:
        return [skipped("the tokenizer defines no BOS token")]
    try:
        prompt = subject.render(conv.SYSTEM_USER, add_generation_prompt=True)
    except RenderError:
        try:
            prompt = subject.render(conv.USER_ONLY, add_generation_prompt=True)
        except RenderError:
            return [skipped("no plain conversation renders (see `renders`)")]
    writes_bos = prompt.startswith(bos)
    findings = []
    for add_special in (True, False):
        ids = tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
        count = ids.count(bos_id)
        if count == 1 and ids[0] == bos_id:
            continue
        shown = tokens(ids, tokenizer.convert_ids_to_tokens(ids))
        path = _PATHS[add_special]
        if count == 0:
            why = "the template does not write BOS and this path adds none"
            fix = f"write {{{{ bos_token }}}} at the start of the template ({bos!r})"
        elif count > 1 and writes_bos and add_special:
            why = "the template writes bos_token and the tokenizer adds another"
            fix = (
                "drop {{ bos_token }} from the template, or stop the tokenizer adding BOS "
                "(its post-processor / add_bos_token); harnesses must otherwise encode with "
                "add_special_tokens=False"
            )
        else:
            why = f"BOS {bos!r} appears {count} times" + ("" if ids[0] == bos_id else ", not at the start")
            fix = "write BOS once, at the start of the conversation"
        findings.append(failed(f"{path} gives {count} BOS tokens: {why}\n  tokens: {shown}\n  fix: {fix}"))
    return findings
