"""The hostile corpus (tests/hostile_cases.py): every case answered with its finding or error, in bounded time,
and nothing reaches the host."""

from __future__ import annotations

import json
import resource
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest

from templatecheck.checks import REGISTRY
from templatecheck.errors import TemplatecheckError
from templatecheck.model import Model, Subject, Template, load_model
from templatecheck.render import Limits, RenderError
from templatecheck.result import Outcome
from tests.conftest import FIXTURES, fixture_model
from tests.hostile_cases import (
    CANARY_ENV,
    CANARY_VALUE,
    GGUF_FILES,
    INPUTS,
    MODEL_DIRS,
    TEMPLATES,
    WORKER_TEMPLATES,
    InputCase,
    ModelDirCase,
    TemplateCase,
)

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


#: What a hostile template may add to this process's peak memory: the worker holds what the template builds.
PEAK_MB = 200


@pytest.mark.parametrize("case", TEMPLATES + WORKER_TEMPLATES, ids=lambda c: c.name)
def test_hostile_template(case: TemplateCase, canary: Path) -> None:
    target = hostile_subject(case.source.replace("/etc/passwd", str(canary)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
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
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown < PEAK_MB, f"{case.name} grew this process by {grown:.0f} MB"


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


# -------------------------------------------------------------------------------------- model directories


@pytest.fixture
def outside(canary: Path) -> Path:
    """The folder beside the model directory that its links reach for: the canary file, as text and as a
    template."""
    folder = canary.parent / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(CANARY_VALUE)
    (folder / "secret.jinja").write_text(CANARY_VALUE)
    return folder


def build_model_dir(case: ModelDirCase, outside: Path) -> Path:
    model = outside.parent / "model"
    shutil.copytree(HERMES, model)
    try:
        return case.build(model, outside)
    except PermissionError:
        pytest.skip(f"{case.name}: this user may not create it")


_WARM: list[bool] = []


def warm_up() -> None:
    """Import transformers and what the checks import once, outside any measurement (tracemalloc makes
    imports slow, and they are no cost of a case)."""
    if not _WARM:
        base = fixture_model("hermes-3-tiny")
        for name in ("renders", "end_of_turn"):
            REGISTRY[name](Subject(base, base.templates["default"]))
        _WARM.append(True)


def _load_and_check(case: ModelDirCase, path: Path) -> tuple[str, Outcome | None]:
    """What a run says about the model at ``path``: the load error, or ``case.check``'s message and outcome."""
    try:
        model = load_model(str(path))
    except TemplatecheckError as error:
        return str(error), None
    subject = Subject(model, next(iter(model.templates.values())))
    result = REGISTRY[case.check or "renders"](subject)
    return result.message + "".join(t.name + t.source for t in model.templates.values()), result.outcome


@pytest.mark.parametrize("case", MODEL_DIRS, ids=lambda c: c.name)
def test_hostile_model_directory(case: ModelDirCase, outside: Path) -> None:
    path = build_model_dir(case, outside)
    warm_up()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        said, outcome = _load_and_check(case, path)
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    if case.check is None:
        assert outcome is None, f"{case.name} loaded: {said[:300]}"
    else:
        assert outcome is Outcome(case.outcome), said[:300]
    assert case.message in said, said[:300]
    assert elapsed < case.seconds, f"{case.name} took {elapsed:.2f} s"
    assert peak < case.megabytes, f"{case.name} peaked at {peak:.1f} MB of Python allocations"
    assert CANARY_VALUE not in said


@pytest.mark.parametrize("case", GGUF_FILES, ids=lambda c: c.name)
def test_hostile_gguf_file(case: ModelDirCase, outside: Path) -> None:
    """A hostile GGUF file is one load error naming the file (never a traceback or a hang), within the case's
    time and memory; a file that should load does, reading only its metadata."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package: pip install 'templatecheck[gguf]'")
    path = build_model_dir(case, outside)
    warm_up()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        model = load_model(str(path))
        said = " ".join(model.templates)
    except TemplatecheckError as error:
        model, said = None, str(error)
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert (model is not None) is (case.check == "loads"), said[:300]
    assert case.message in said, said[:300]
    if model is None:
        assert str(path) in said, said[:300]
    assert elapsed < case.seconds, f"{case.name} took {elapsed:.2f} s"
    assert peak < case.megabytes, f"{case.name} peaked at {peak:.1f} MB of Python allocations"
    assert CANARY_VALUE not in said


def test_model_directory_cases_cover_every_class() -> None:
    """The table holds 40 or more cases, errors and models that load alike."""
    assert len(MODEL_DIRS) >= 40
    assert len({c.name for c in MODEL_DIRS}) == len(MODEL_DIRS)
    assert {c.check for c in MODEL_DIRS} >= {None, "end_of_turn", "renders"}


#: The cases the plugin runs end to end: the links, and a model that loads beside them.
END_TO_END = [c for c in MODEL_DIRS if "->" in c.name or "Hub cache" in c.name or "itself a link" in c.name]


def test_links_leak_nothing_into_any_output(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole run over every link case and two models that load (a Hub cache snapshot, a linked directory):
    each link is one load error naming the path; neither the canary environment variable nor the canary
    file's content reaches the terminal, the JSON or Markdown report, or a pin."""
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)  # the inner run inherits it: /proc/self/environ holds it
    models = []
    for number, case in enumerate(END_TO_END):
        folder = tmp_path / f"case{number}"
        folder.mkdir()
        outside = folder / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_text(CANARY_VALUE)
        (outside / "secret.jinja").write_text(CANARY_VALUE)
        model = folder / "model"
        shutil.copytree(HERMES, model)
        models += ["--model", str(case.build(model, outside))]
    report, markdown, pins = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "pins"
    start = time.perf_counter()
    run = pytester.runpytest_subprocess(
        *models,
        "-p",
        "no:cacheprovider",
        "--tc-examples",
        "5",
        "-k",
        "renders or sandbox or pins",
        "--tc-report-json",
        str(report),
        "--tc-report-md",
        str(markdown),
        "--tc-pin-dir",
        str(pins),
        "--tc-update-pins",
    )
    elapsed = time.perf_counter() - start
    results = {m["source"]: m["results"] for m in json.loads(report.read_text())["models"]}
    for case, source in zip(END_TO_END, models[1::2], strict=True):
        outcomes = {r["outcome"] for r in results[source]}
        if case.check is None:
            assert outcomes == {"error"}, case.name
            assert all(case.message in r["message"] for r in results[source]), case.name
        else:
            assert outcomes <= {"passed", "skipped", "warning"}, case.name
    written = [p.read_text() for p in pins.rglob("*") if p.is_file()]
    assert written, "the models that load were pinned"
    for text in [str(run.outlines), str(run.errlines), report.read_text(), markdown.read_text(), *written]:
        assert CANARY_VALUE not in text
        assert "Traceback" not in text
    assert elapsed < 120


def test_templates_only_the_worker_stops_cost_a_run_little(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose named templates fold a constant forever while compiling, compare two deeply shared lists
    (one C call) and allocate gigabytes inside ``tojson``: with the default bounds, the run ends with each
    one's finding, every other check of them answered at once, and nothing of the canary in any report."""
    model = tmp_path / "hostile"
    shutil.copytree(HERMES, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    chosen = {c.name: c for c in WORKER_TEMPLATES}
    config["chat_template"] = [
        {"name": "default", "template": chosen["constant folded while compiling"].source},
        {"name": "c_call", "template": chosen["deeply shared lists compared"].source},
        {"name": "memory", "template": chosen["tojson with a huge indent"].source},
    ]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    report, markdown = tmp_path / "report.json", tmp_path / "report.md"
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)
    start = time.perf_counter()
    pytester.runpytest_subprocess(
        "--model",
        str(model),
        "-p",
        "no:cacheprovider",
        "--tc-report-json",
        str(report),
        "--tc-report-md",
        str(markdown),
    )
    elapsed = time.perf_counter() - start
    results = json.loads(report.read_text())["models"][0]["results"]
    renders = {r["template"]: r for r in results if r["check"] == "renders"}
    assert renders["default"]["outcome"] == "failed"
    assert "compiling the template exceeded 2 s" in renders["default"]["message"]
    assert (
        renders["c_call"]["outcome"] == "failed"
        and "the render worker was stopped" in renders["c_call"]["message"]
    )
    assert renders["memory"]["outcome"] == "failed" and "memory limit" in renders["memory"]["message"]
    assert elapsed < 120, f"the run took {elapsed:.0f} s"
    assert CANARY_VALUE not in report.read_text() + markdown.read_text()
