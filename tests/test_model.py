"""Loading models: directories and Hub ids, every place templates live, and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from templatecheck.errors import TemplatecheckError
from templatecheck.model import ModelRef, load_model, read_templates, short_name
from tests.conftest import FIXTURES

HERMES = FIXTURES / "hermes-3-tiny"


def copy_model(tmp_path: Path, source: Path = HERMES) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def set_config(directory: Path, **changes: object) -> None:
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_ref_parses_directories_and_hub_ids() -> None:
    assert ModelRef.parse(str(HERMES)).path == HERMES
    ref = ModelRef.parse("NousResearch/Hermes-3-Llama-3.1-8B@v1.0")
    assert (ref.repo_id, ref.revision, ref.name) == (
        "NousResearch/Hermes-3-Llama-3.1-8B",
        "v1.0",
        "NousResearch/Hermes-3-Llama-3.1-8B@v1.0",  # the revision asked for is part of the name
    )
    assert ModelRef.parse("openai-community/gpt2").name == "openai-community/gpt2"


def test_a_directory_is_named_by_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "Llama-3-Mine"
    model.mkdir()
    monkeypatch.chdir(model)
    assert ModelRef.parse(".").name == "Llama-3-Mine"
    assert ModelRef.parse(f"{model}/").name == "Llama-3-Mine"
    assert short_name("./gone") == "gone" and short_name("..") == tmp_path.name


@pytest.mark.parametrize("text", ["nope-model", "gpt2", "owner/name@", "a/b/c", "owner/-name"])
def test_a_bare_name_or_malformed_id_is_an_error_not_a_hub_lookup(text: str) -> None:
    with pytest.raises(TemplatecheckError, match=r"not a Hub repo id \(expected 'owner/name' or"):
        ModelRef.parse(text)


def test_a_missing_directory_names_the_path() -> None:
    with pytest.raises(TemplatecheckError, match=r"model './nope': no such directory, and not a Hub repo id"):
        ModelRef.parse("./nope")


def test_a_file_is_not_a_model(tmp_path: Path) -> None:
    file = tmp_path / "model.json"
    file.write_text("{}")
    with pytest.raises(TemplatecheckError, match="is a file, not a directory"):
        ModelRef.parse(str(file))


def test_named_templates_from_a_tokenizer_config_list() -> None:
    templates = read_templates(HERMES)
    assert list(templates) == ["default", "tool_use"]
    assert templates["tool_use"].origin == "tokenizer_config.json [tool_use]"


def test_jinja_files_take_precedence_like_transformers(tmp_path: Path) -> None:
    model = copy_model(tmp_path)
    (model / "chat_template.jinja").write_text("{{ 'from jinja' }}")
    (model / "additional_chat_templates").mkdir()
    (model / "additional_chat_templates" / "rag.jinja").write_text("{{ 'rag' }}")
    templates = read_templates(model)
    assert {k: v.source for k, v in templates.items()} == {
        "default": "{{ 'from jinja' }}",
        "rag": "{{ 'rag' }}",
    }
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(model)).chat_template == {
        k: v.source for k, v in templates.items()
    }


def test_a_processor_chat_template_json_is_read(tmp_path: Path) -> None:
    model = copy_model(tmp_path)
    set_config(model, chat_template=None)
    (model / "chat_template.json").write_text(json.dumps({"chat_template": "{{ 'processor' }}"}))
    assert read_templates(model)["default"].origin == "chat_template.json"


def test_a_base_model_without_template_says_what_to_do() -> None:
    with pytest.raises(TemplatecheckError) as info:
        load_model(str(FIXTURES / "base-no-template"))
    assert "has no chat template" in str(info.value)
    assert "pass --tc-chat-template FILE to test a candidate template" in str(info.value)


def test_a_candidate_template_file_replaces_the_model_templates(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate.jinja"
    candidate.write_text("{{ messages[0].content }}")
    model = load_model(str(FIXTURES / "base-no-template"), chat_template=str(candidate))
    assert list(model.templates) == ["candidate"]


def test_an_unknown_template_name_lists_the_known_ones() -> None:
    with pytest.raises(
        TemplatecheckError,
        match=r"--tc-chat-template 'rag': no such file, and model .* has no "
        r"template of that name \(it has: default, tool_use\)",
    ):
        load_model(str(HERMES), chat_template="rag")


def test_malformed_tokenizer_config_names_file_and_position(tmp_path: Path) -> None:
    model = copy_model(tmp_path)
    (model / "tokenizer_config.json").write_text('{"chat_template": "x",}')
    with pytest.raises(
        TemplatecheckError, match=r"tokenizer_config.json is not valid JSON \(line 1, column 23"
    ):
        load_model(str(model))


def test_a_template_file_that_is_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.jinja"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(TemplatecheckError, match=r"latin1.jinja is not UTF-8 text; re-save it as UTF-8"):
        load_model(str(HERMES), chat_template=str(bad))


def test_a_directory_without_tokenizer(tmp_path: Path) -> None:
    model = copy_model(tmp_path)
    (model / "tokenizer.json").unlink()
    loaded = load_model(str(model))  # templates are readable without a tokenizer
    with pytest.raises(TemplatecheckError, match="has no tokenizer files"):
        _ = loaded.tokenizer


def test_remote_code_tokenizers_are_not_run(tmp_path: Path) -> None:
    model = copy_model(tmp_path)
    set_config(model, auto_map={"AutoTokenizer": ["tok.MyTokenizer", None]})
    with pytest.raises(TemplatecheckError, match=r"needs custom code .* never runs \(no trust_remote_code\)"):
        _ = load_model(str(model)).tokenizer


def test_hub_id_offline_with_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(TemplatecheckError) as info:
        load_model("NousResearch/Hermes-3-Llama-3.1-8B")
    assert str(info.value) == (
        "model 'NousResearch/Hermes-3-Llama-3.1-8B' is not in the local Hugging Face cache and the Hub cannot "
        "be reached (offline or HF_HUB_OFFLINE=1); download it once while online, or pass a local directory"
    )


def test_hub_id_resolves_from_the_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub id whose files are in the standard cache layout loads offline, revision included."""
    cache = tmp_path / "cache"
    repo = cache / "models--org--hermes-3-tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(HERMES, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    model = load_model("org/hermes-3-tiny")
    assert model.directory == repo / "snapshots" / commit
    assert list(model.templates) == ["default", "tool_use"]
    assert load_model(f"org/hermes-3-tiny@{commit}").directory == model.directory


def test_a_folder_of_candidate_templates(tmp_path: Path) -> None:
    folder = tmp_path / "candidates"
    folder.mkdir()
    (folder / "plain.jinja").write_text("{{ messages[0].content }}")
    (folder / "corpus-entry.json").write_text(
        json.dumps({"chat_template": {"default": "a", "tool_use": "b"}})
    )
    model = load_model(str(HERMES), chat_template=str(folder))
    assert sorted(model.templates) == ["corpus-entry#default", "corpus-entry#tool_use", "plain"]
    assert model.templates["corpus-entry#tool_use"].source == "b"
    (folder / "plain.jinja").unlink()
    (folder / "corpus-entry.json").unlink()
    with pytest.raises(TemplatecheckError, match=r"the folder holds no \*\.jinja template"):
        load_model(str(HERMES), chat_template=str(folder))


def test_models_that_share_tokenizer_files_load_the_tokenizer_once(tmp_path: Path) -> None:
    """A sweep of fine-tunes that ship one tokenizer with different templates pays one tokenizer load; a
    tokenizer whose files differ in any byte (here its added tokens) is loaded on its own."""
    from templatecheck.model import load_model, tokenizer_loads

    source = FIXTURES / "hermes-3-tiny"
    folders = []
    for i in range(3):
        folder = tmp_path / f"finetune-{i}"
        shutil.copytree(source, folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["chat_template"] = (
            f"{{{{ 'variant {i}' }}}}{{% for m in messages %}}{{{{ m.content }}}}{{% endfor %}}"
        )
        config["model_max_length"] = 1234  # a tokenizer no other test loads
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        folders.append(folder)
    before = tokenizer_loads()
    tokenizers = [load_model(str(f)).tokenizer for f in folders]
    assert tokenizer_loads() == before + 1
    assert tokenizers[0] is tokenizers[1] is tokenizers[2]
    other = tmp_path / "other"
    shutil.copytree(source, other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    config["model_max_length"] = 77
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_model(str(other)).tokenizer is not tokenizers[0]
    assert tokenizer_loads() == before + 2


def test_templates_of_one_text_share_the_results_of_the_checks_that_do_not_name_them(tmp_path: Path) -> None:
    """A folder of fine-tunes' templates holds many copies of one: each is checked once, and a check whose
    findings name the template (or a ``tool_use`` template, which gets tools) runs on each."""
    from templatecheck.checks import Check
    from templatecheck.corpus import corpus_model
    from templatecheck.result import Finding, Layer, Outcome
    from templatecheck.session import Session

    text = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    for name, template in (("a", text), ("b", text), ("c", {"default": "x" + text, "tool_use": text})):
        (tmp_path / f"{name}.json").write_text(json.dumps({"chat_template": template}))
    model = corpus_model(tmp_path, FIXTURES / "hermes-3-tiny")
    assert [t.key[0] for t in model.templates.values()] == ["", "", "", "#tool_use"]
    seen: list[str] = []

    def look(subject: Any) -> list[Finding]:
        seen.append(subject.template.name)
        return [Finding(Outcome.WARNING, f"looked at {len(seen)}", "selftest.looked")]

    session = Session([model.ref.text], loaded={model.ref.text: model})
    plain, named = (
        Check("selftest", Layer.TEMPLATE, look),
        Check("selftest", Layer.TEMPLATE, look, named=True),
    )
    results = [session.run(plain, model, name) for name in model.templates]
    assert seen == ["a#default", "c#default", "c#tool_use"]
    assert [r.template for r in results] == list(model.templates)
    assert results[1].message == results[0].message == "looked at 1"
    seen.clear()
    assert [session.run(named, model, name).message for name in model.templates][:2] == [
        "looked at 1",
        "looked at 2",
    ]
