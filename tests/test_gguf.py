"""GGUF files as models (templatecheck.gguf) and their comparison with the original (gguf_matches_original)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from templatecheck import settings
from templatecheck.checks import REGISTRY
from templatecheck.errors import TemplatecheckError
from templatecheck.gguf import CONTROL, read
from templatecheck.model import ModelRef, Subject, load_model
from templatecheck.options import Options
from templatecheck.result import CheckResult, Layer, Outcome
from templatecheck.session import Session
from tests.conftest import FIXTURES, fixture_model, fixture_script

pytest.importorskip("gguf", reason="the GGUF tests need the gguf package: pip install 'templatecheck[gguf]'")

GGUF = FIXTURES / "gguf"
LLAMA_GGUF = GGUF / "llama-3-tiny.gguf"
LLAMA = str(FIXTURES / "llama-3-tiny")
CHECK = REGISTRY["gguf_matches_original"]


def compare(path: Path, original: str = LLAMA, template: str = "default") -> CheckResult:
    model = load_model(str(path))
    return CHECK(Subject(model, model.templates[template], Options(compare_to=original)))


# ------------------------------------------------------------------------------------------- the fixtures


def test_the_fixture_script_reproduces_the_committed_files_byte_for_byte() -> None:
    assert fixture_script("build_gguf").changed() == []


def test_fixture_check_names_a_file_that_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = fixture_script("build_gguf")
    copy = tmp_path / "gguf"
    shutil.copytree(GGUF, copy)
    with (copy / "broken" / "missing-eot.gguf").open("r+b") as file:
        file.truncate(100)
    monkeypatch.setattr(script, "OUT", copy)
    said: list[str] = []
    assert script.main(["--check"], said.append) == 1
    assert said == [
        "differs from a fresh build: fixtures/gguf/broken/missing-eot.gguf (run python fixtures/build_gguf.py)"
    ]


# ---------------------------------------------------------------------------------------------- reading


def test_metadata_of_a_file() -> None:
    source = read(LLAMA_GGUF, "x")
    assert source.metadata["general.architecture"] == "llama"
    assert len(source.tokens) == len(source.token_types) == 1039
    assert source.token_types[source.tokens.index("<|eot_id|>")] == CONTROL
    assert source.stop_ids == (1025, 1030, 1031)
    assert (source.token_id("bos"), source.flag("add_bos_token"), source.flag("add_eos_token")) == (
        1024,
        False,
        False,
    )
    assert list(source.templates()) == ["default"]


def test_a_gguf_loads_as_a_model_with_its_stop_set_and_named_templates() -> None:
    model = load_model(str(GGUF / "hermes-3-tiny.gguf"))
    original = fixture_model("hermes-3-tiny")
    assert model.name == "hermes-3-tiny.gguf"
    assert {n: t.source for n, t in model.templates.items()} == {
        n: t.source for n, t in original.templates.items()
    }
    assert model.templates["tool_use"].origin == "GGUF tokenizer.chat_template.tool_use"
    assert model.generation_config == {"bos_token_id": 1024, "eos_token_id": [1027]}
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>"
    assert model.tokenizer.encode(text) == original.tokenizer.encode(text)


def test_a_named_template_of_a_gguf_is_selected_with_chat_template() -> None:
    model = load_model(str(GGUF / "hermes-3-tiny.gguf"), chat_template="tool_use")
    assert list(model.templates) == ["tool_use"]
    with pytest.raises(
        TemplatecheckError, match=r"has no template of that name \(it has: default, tool_use\)"
    ):
        load_model(str(GGUF / "hermes-3-tiny.gguf"), chat_template="nope")


def test_a_file_that_is_not_gguf_is_still_refused_as_a_model(tmp_path: Path) -> None:
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(TemplatecheckError, match=r"is a file, not a directory: .* or a \.gguf file"):
        ModelRef.parse(str(other))


def test_without_the_gguf_package_one_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else find_spec(name)
    )
    with pytest.raises(TemplatecheckError) as error:
        load_model(str(LLAMA_GGUF))
    assert str(error.value) == (
        f"model {str(LLAMA_GGUF)!r} is a GGUF file, and reading one needs the gguf package: "
        "pip install 'templatecheck[gguf]'"
    )


def test_generation_is_skipped_for_a_gguf_with_the_reason() -> None:
    model = load_model(str(LLAMA_GGUF))
    result = REGISTRY["stops"](Subject(model, model.templates["default"], Options(generate=True)))
    assert result.outcome is Outcome.SKIPPED
    assert "a GGUF file's weights are not loaded" in result.message


# ------------------------------------------------------------------------------------------ the comparison


@pytest.mark.parametrize(
    ("path", "original", "template"),
    [
        (LLAMA_GGUF, LLAMA, "default"),
        (GGUF / "hermes-3-tiny.gguf", str(FIXTURES / "hermes-3-tiny"), "default"),
        (GGUF / "hermes-3-tiny.gguf", str(FIXTURES / "hermes-3-tiny"), "tool_use"),
    ],
    ids=["llama-3-tiny", "hermes-3-tiny", "hermes-3-tiny:tool_use"],
)
def test_a_faithful_conversion_matches_its_original(path: Path, original: str, template: str) -> None:
    result = compare(path, original, template)
    assert result.outcome is Outcome.PASSED, result.message
    assert result.layer is Layer.ENGINE
    assert result.findings[0].message.startswith(f"the GGUF matches {Path(original).name}: its template")


BROKEN = [
    (
        "stale-template",
        "gguf_matches_original.stale_template",
        "the GGUF's template 'default' renders 13 of 13 conversations otherwise than the original's "
        "(tokenizer_config.json of llama-3-tiny); the first:\n  user: 'What is the capital of France?'",
        "re-convert the file with llama.cpp's convert_hf_to_gguf.py from llama-3-tiny, or replace the template: "
        "gguf-new-metadata --chat-template-config llama-3-tiny/tokenizer_config.json IN.gguf OUT.gguf",
    ),
    (
        "control-token-split",
        "gguf_matches_original.control_token_split",
        "the GGUF's tokenizer splits 1 control token: '<|eot_id|>' (id 1030, token type 1) encodes as [27, 91,",
        "type them control (3) in tokenizer.ggml.token_type: re-convert the file",
    ),
    (
        "missing-eot",
        "gguf_matches_original.stop_set",
        "the original stops on '<|eot_id|>' (1030) (generation_config.json eos_token_id), which the GGUF does "
        "not name (its stop ids: EOS 1025, EOT None, EOM None)",
        "gguf-new-metadata --special-token eot '<|eot_id|>' IN.gguf OUT.gguf",
    ),
    (
        "add-bos-flipped",
        "gguf_matches_original.add_bos",
        "the original's tokenizer adds no BOS when it encodes a text, and the GGUF sets it true "
        "(tokenizer.ggml.add_bos_token); the template's rendering starts with BOS (<|begin_of_text|>), so "
        "engines that follow the file prompt with 2 BOS tokens where the original has 1",
        "set tokenizer.ggml.add_bos_token to false: gguf-set-metadata FILE.gguf tokenizer.ggml.add_bos_token ''",
    ),
]


@pytest.mark.parametrize(("name", "cause", "message", "fix"), BROKEN, ids=[b[0] for b in BROKEN])
def test_each_broken_conversion_is_one_finding_with_its_fix(
    name: str, cause: str, message: str, fix: str
) -> None:
    result = compare(GGUF / "broken" / f"{name}.gguf")
    assert result.outcome is Outcome.FAILED
    assert [f.cause for f in result.findings] == [cause]
    assert message in result.findings[0].message
    assert fix in (result.findings[0].fix or "")


@pytest.mark.parametrize(
    ("name", "script", "arguments"),
    [
        ("add-bos-flipped", "gguf_set_metadata", ["{file}", "tokenizer.ggml.add_bos_token", "", "--force"]),
        (
            "missing-eot",
            "gguf_new_metadata",
            ["--special-token", "eot", "<|eot_id|>", "{in}", "{file}", "--force"],
        ),
    ],
)
def test_the_fix_a_finding_names_repairs_the_file(
    name: str, script: str, arguments: list[str], tmp_path: Path
) -> None:
    """The command of the fix, run on a copy of the broken file, gives a file that matches the original."""
    file, given = tmp_path / f"{name}-fixed.gguf", GGUF / "broken" / f"{name}.gguf"
    shutil.copy(given, file)
    fix = compare(given).findings[0].fix or ""
    assert script.replace("_", "-") in fix
    words = [w.format(file=file, **{"in": given}) for w in arguments]
    subprocess.run([sys.executable, "-m", f"gguf.scripts.{script}", *words], check=True, capture_output=True)
    result = compare(file)
    assert result.outcome is Outcome.PASSED, result.message


def test_the_comparison_is_skipped_without_compare_to_or_without_a_gguf() -> None:
    model = load_model(str(LLAMA_GGUF))
    plain = CHECK(Subject(model, model.templates["default"]))
    assert plain.outcome is Outcome.SKIPPED
    assert (
        plain.message
        == "no --tc-compare-to DIR_OR_ID given (the original model a GGUF file is compared with)"
    )
    directory = fixture_model("llama-3-tiny")
    other = CHECK(Subject(directory, directory.templates["default"], Options(compare_to=LLAMA)))
    assert other.outcome is Outcome.SKIPPED
    assert other.message == "llama-3-tiny is not a GGUF file (--tc-compare-to compares a GGUF --model)"


def test_a_compare_to_that_names_no_model_is_refused_before_the_run(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(TemplatecheckError) as error:
        settings.options({"compare_to": missing})
    assert str(error.value).startswith(f"--tc-compare-to {missing}: model {missing!r}: no such directory")
    assert settings.options({"compare_to": LLAMA}).compare_to == LLAMA


def test_an_original_that_does_not_load_is_an_error_result_naming_the_option(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    model = load_model(str(LLAMA_GGUF))
    result = Session([str(LLAMA_GGUF)], Options(compare_to=str(empty))).run(CHECK, model, "default")
    assert result.outcome is Outcome.ERROR
    assert result.message.startswith(f"--tc-compare-to {empty}: model {str(empty)!r} has no chat template")


def test_a_gguf_compared_with_another_model_differs_in_template_and_stop_set() -> None:
    result = compare(LLAMA_GGUF, str(FIXTURES / "hermes-3-tiny"))
    causes = [f.cause for f in result.findings]
    assert causes == ["gguf_matches_original.stale_template", "gguf_matches_original.stop_set"]


# --------------------------------------------------------------------------------------------- the plugin


def _outcomes(report: Path) -> dict[str, str]:
    models = json.loads(report.read_text())["models"]
    return {r["check"]: r["outcome"] for m in models for r in m["results"]}


def test_the_suite_on_a_gguf_gives_the_results_of_its_original(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """``pytest --model x.gguf --tc-compare-to DIR`` runs the whole suite: every check ends as it does on the
    original directory, and the comparison passes."""
    on_gguf, on_dir = tmp_path / "gguf.json", tmp_path / "dir.json"
    result = pytester.runpytest(
        "--model", str(LLAMA_GGUF), "--tc-compare-to", LLAMA, "--tc-report-json", str(on_gguf), "-v"
    )
    result.stdout.fnmatch_lines(["*test_gguf_matches_original?llama-3-tiny.gguf:default? PASSED*"])
    pytester.runpytest("--model", LLAMA, "--tc-report-json", str(on_dir))
    gguf, directory = _outcomes(on_gguf), _outcomes(on_dir)
    assert gguf.pop("gguf_matches_original") == "passed"
    assert directory.pop("gguf_matches_original") == "skipped"
    assert gguf == directory


def test_a_broken_gguf_fails_the_comparison_in_the_suite(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--model",
        str(GGUF / "broken" / "add-bos-flipped.gguf"),
        "--tc-compare-to",
        LLAMA,
        "-k",
        "gguf_matches or double_bos",
    )
    result.assert_outcomes(failed=1, passed=1)  # double_bos warns: tokenizer(prompt) adds a second BOS
    result.stdout.fnmatch_lines(
        [
            "*the original's tokenizer adds no BOS when it encodes a text, and the GGUF sets it true*",
            "*fix: set tokenizer.ggml.add_bos_token to false: gguf-set-metadata FILE.gguf*",
            "*WARNING double_bos.text_with_special_tokens: tokenizer(prompt) gives 2 BOS tokens*",
        ]
    )


def test_pins_of_two_gguf_files_of_one_folder_are_apart() -> None:
    from templatecheck.pins import model_key

    keys = {
        model_key(Subject(m, next(iter(m.templates.values()))))
        for m in map(load_model, map(str, GGUF.glob("*.gguf")))
    }
    assert keys == {"llama-3-tiny.gguf", "hermes-3-tiny.gguf"}


@pytest.mark.parametrize("path", sorted(GGUF.rglob("*.gguf")), ids=lambda p: p.name)
def test_the_bounded_reader_reads_what_the_gguf_package_reads(path: Path) -> None:
    import gguf

    fields = {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}
    assert read(path, "x").metadata == fields


def test_control_tokens_at_other_ids_are_one_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversion that numbers two control tokens the other way round (ids swapped in the token list)."""
    script = fixture_script("build_gguf")
    vocabulary = script.vocabulary

    def swapped(directory: Path) -> tuple[list[str], list[int], list[str]]:
        tokens, types, merges = vocabulary(directory)
        tokens[1030], tokens[1031] = tokens[1031], tokens[1030]
        return tokens, types, merges

    monkeypatch.setattr(script, "vocabulary", swapped)
    path = tmp_path / "swapped.gguf"
    script.write(script.SPECS[0], path)
    result = compare(path)
    assert [f.cause for f in result.findings] == ["gguf_matches_original.control_token_id"]
    assert result.findings[0].message == (
        "2 control tokens of the original have another id in the GGUF: '<|eot_id|>': id 1030 in the original, "
        "1031 in the GGUF; '<|eom_id|>': id 1031 in the original, 1030 in the GGUF"
    )
    assert (
        result.findings[0].fix
        == "re-convert the file with llama.cpp's convert_hf_to_gguf.py from llama-3-tiny"
    )


def test_a_file_without_an_add_bos_flag_is_told_to_reconvert(tmp_path: Path) -> None:
    path = tmp_path / "no-flag.gguf"
    remove = ["--remove-metadata", "tokenizer.ggml.add_bos_token", "--force"]
    command = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", *remove, str(LLAMA_GGUF), str(path)]
    subprocess.run(command, check=True, capture_output=True)
    result = compare(path)
    assert [f.cause for f in result.findings] == ["gguf_matches_original.add_bos"]
    assert "and the GGUF does not set it (tokenizer.ggml.add_bos_token)" in result.findings[0].message
    assert result.findings[0].fix == (
        "re-convert the file with llama.cpp's convert_hf_to_gguf.py from llama-3-tiny (it writes "
        "tokenizer.ggml.add_bos_token)"
    )
