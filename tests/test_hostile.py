"""The hostile corpus (tests/hostile_cases.py): every case answered with its finding or error, in bounded time,
and nothing reaches the host."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from templatecheck.checks import REGISTRY
from templatecheck.errors import TemplatecheckError
from templatecheck.model import Model, Subject, Template, load_model
from templatecheck.render import Limits, RenderError
from templatecheck.result import Outcome
from tests.conftest import FIXTURES, fixture_model
from tests.hostile_cases import CANARY_ENV, CANARY_VALUE, INPUTS, TEMPLATES, InputCase, TemplateCase

HERMES = FIXTURES / "hermes-3-tiny"


def hostile_subject(source: str) -> Subject:
    base = fixture_model("hermes-3-tiny")
    model = Model(base.ref, base.directory, {}, limits=Limits(seconds=1.0, max_output_chars=1_000_000))
    model.__dict__["tokenizer"] = base.tokenizer  # share the loaded tokenizer
    return Subject(model, Template("hostile", source, "<test>"))


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)
    secret = tmp_path / "secret.txt"
    secret.write_text(CANARY_VALUE)
    return secret


@pytest.mark.parametrize("case", TEMPLATES, ids=lambda c: c.name)
def test_hostile_template(case: TemplateCase, canary: Path) -> None:
    target = hostile_subject(case.source.replace("/etc/passwd", str(canary)))
    start = time.perf_counter()
    try:
        rendered = target.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
        kind = None
    except RenderError as error:
        rendered, kind = str(error), error.kind
    result = REGISTRY[case.check](target)
    elapsed = time.perf_counter() - start
    assert kind == case.kind, rendered[:300]
    assert result.outcome is Outcome.FAILED, result.message
    assert case.message in result.message or case.message in rendered, result.message
    assert elapsed < case.seconds, f"{case.name} took {elapsed:.2f} s"
    assert CANARY_VALUE not in rendered and CANARY_VALUE not in result.message


def build_input(case: InputCase, tmp_path: Path) -> tuple[str, str | None]:
    """The ``--model`` value (and ``--tc-chat-template``) of a bad-input case, built under ``tmp_path``."""
    model = tmp_path / "model"
    shutil.copytree(HERMES, model)
    config = model / "tokenizer_config.json"
    name = case.name
    if name == "a path that does not exist":
        return str(tmp_path / "missing"), None
    if name == "a Hub id, offline with an empty cache":
        return "no-such-org/no-such-model", None
    if name == "a directory with no tokenizer":
        (model / "tokenizer.json").unlink()
    elif name == "malformed tokenizer_config.json":
        config.write_text('{"bos_token": "<s>",,}')
    elif name == "a base model with no chat template":
        return str(FIXTURES / "base-no-template"), None
    elif name == "an unknown --tc-chat-template name":
        return str(model), "rag"
    elif name == "a template file that is not UTF-8":
        bad = tmp_path / "latin1.jinja"
        bad.write_bytes("{{ 'caf\xe9' }}".encode("latin-1"))
        return str(model), str(bad)
    elif name == "a tokenizer that needs remote code":
        data = json.loads(config.read_text())
        data["auto_map"] = {"AutoTokenizer": ["evil.Tokenizer", None]}
        config.write_text(json.dumps(data))
    elif name == "chat_template of the wrong type":
        data = json.loads(config.read_text())
        data["chat_template"] = 42
        config.write_text(json.dumps(data))
    return str(model), None


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


@pytest.mark.parametrize("case", INPUTS, ids=lambda c: c.name)
def test_bad_input(case: InputCase, tmp_path: Path, offline: None) -> None:
    model_arg, template_arg = build_input(case, tmp_path)
    start = time.perf_counter()
    with pytest.raises(TemplatecheckError) as info:
        _ = load_model(model_arg, chat_template=template_arg).tokenizer
    assert case.message in str(info.value)
    assert time.perf_counter() - start < case.seconds


def test_a_hostile_model_does_not_stop_the_run(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A looping template, bad inputs and a good model in one run, under xdist: every model gets its verdict."""
    pytest.importorskip("xdist")
    looping = tmp_path / "looping"
    shutil.copytree(HERMES, looping)
    config = json.loads((looping / "tokenizer_config.json").read_text())
    config["chat_template"] = TEMPLATES[0].source
    (looping / "tokenizer_config.json").write_text(json.dumps(config))
    report = tmp_path / "report.json"
    start = time.perf_counter()
    pytester.runpytest_subprocess(
        "--model",
        str(looping),
        "--model",
        str(tmp_path / "missing"),
        "--model",
        str(HERMES),
        "--tc-render-timeout",
        "1",
        "--tc-examples",
        "10",
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--tc-report-json",
        str(report),
    )
    elapsed = time.perf_counter() - start
    models = {m["model"]: m["results"] for m in json.loads(report.read_text())["models"]}
    assert {r["outcome"] for r in models["missing"]} == {"error"}
    assert {r["outcome"] for r in models["hermes-3-tiny"]} <= {"passed", "skipped", "warning"}
    renders = next(r for r in models["looping"] if r["check"] == "renders")
    assert renders["outcome"] == "failed" and "render exceeded 1 s" in renders["message"]
    assert elapsed < 90
