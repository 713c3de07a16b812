"""Pinning: the library (templatecheck.pins) and the publisher's life cycle through ``--tc-pin-dir``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from templatecheck import pins
from templatecheck.result import Outcome
from tests.conftest import FIXTURES, fixture_model, subject, subject_with_template

CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
COMMAND = "pytest --model M --tc-pin-dir DIR --tc-update-pins"


def test_the_probe_set_is_the_plain_conversations_plus_tools_where_supported() -> None:
    assert [p.name for p in pins.probes(subject("hermes-3-tiny", "default"))] == [
        "user",
        "system-user",
        "system-user-assistant",
    ]
    assert [p.name for p in pins.probes(subject("hermes-3-tiny", "tool_use"))] == [
        "user",
        "system-user",
        "system-user-assistant",
        "tools-user",
        "tool-call",
        "tool-result",
    ]


def test_a_pin_is_the_rendering_and_all_its_token_ids() -> None:
    s = subject("hermes-3-tiny")
    pin = pins.take(s, pins.probes(s)[0])
    assert pin.text.startswith("<|begin_of_text|><|im_start|>user\n")
    assert list(pin.ids) == s.model.tokenizer(pin.text, add_special_tokens=False)["input_ids"]


def test_a_refusal_is_pinned_as_its_error() -> None:
    refuses = "{{ raise_exception('no system role') if messages[0].role == 'system' }}" + CHATML
    s = subject_with_template("hermes-3-tiny", refuses, name="refuses")
    by_name = {p.name: pins.take(s, p) for p in pins.probes(s)}
    assert (
        by_name["system-user"].text.startswith("<render error (refused): ")
        and by_name["system-user"].ids == ()
    )
    assert by_name["user"].ids


def test_update_writes_exact_bytes_then_compare_passes(tmp_path: Path) -> None:
    crlf = CHATML.replace("<|im_end|>\n", "<|im_end|>{{ '\\r\\n' }}")  # Jinja turns a literal CRLF into LF
    s = subject_with_template("hermes-3-tiny", crlf, name="crlf")
    written = pins.update(s, tmp_path)
    folder = tmp_path / "hermes-3-tiny" / "crlf"
    assert sorted(p.relative_to(folder).as_posix() for p in written) == sorted(
        f"{name}{suffix}"
        for name in ("user", "system-user", "system-user-assistant")
        for suffix in (".txt", ".ids.json")
    )
    assert b"<|im_end|>\r\n" in (folder / "user.txt").read_bytes()  # no newline translation
    assert json.loads((folder / "user.ids.json").read_text()) == list(pins.take(s, pins.probes(s)[0]).ids)
    assert pins.compare(s, tmp_path, COMMAND) == []
    assert pins.update(s, tmp_path) == []  # nothing changed, nothing written


def test_missing_pins_fail_with_the_update_command(tmp_path: Path) -> None:
    s = subject_with_template("hermes-3-tiny", CHATML, name="fresh")
    (finding,) = pins.compare(s, tmp_path, COMMAND)
    assert finding.outcome is Outcome.FAILED
    assert finding.message == (
        f"no pins for 3 probes in {tmp_path / 'hermes-3-tiny' / 'fresh'} (user, system-user, "
        f"system-user-assistant); if the change is intended, update the pins: {COMMAND}"
    )


def test_a_changed_rendering_fails_with_a_visible_whitespace_diff(tmp_path: Path) -> None:
    pins.update(subject_with_template("hermes-3-tiny", CHATML, name="edited"), tmp_path)
    spaced = CHATML.replace("{{ m.role }}\n", "{{ m.role }} \n")
    findings = pins.compare(subject_with_template("hermes-3-tiny", spaced, name="edited"), tmp_path, COMMAND)
    assert len(findings) == 3
    message = findings[0].message
    assert message.startswith("probe 'user' renders differently from its pin\nfirst difference at character")
    assert (
        "-<|begin_of_text|><|im_start|>user␤" in message and "+<|begin_of_text|><|im_start|>user␠␤" in message
    )
    assert message.endswith(f"if the change is intended, update the pins: {COMMAND}")


def test_a_cosmetic_source_edit_that_renders_the_same_passes(tmp_path: Path) -> None:
    pins.update(subject_with_template("hermes-3-tiny", CHATML, name="tidy"), tmp_path)
    tidy = (
        "{#- the same format, written differently -#}\n{{- bos_token -}}\n"
        "{%- for message in messages %}{{ '<|im_start|>' ~ message['role'] ~ '\n' }}"
        "{{- message['content'] + '<|im_end|>\n' -}}{% endfor -%}\n"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
    )
    assert tidy != CHATML
    assert pins.compare(subject_with_template("hermes-3-tiny", tidy, name="tidy"), tmp_path, COMMAND) == []


def test_changed_token_ids_alone_fail(tmp_path: Path) -> None:
    s = subject_with_template("hermes-3-tiny", CHATML, name="ids")
    pins.update(s, tmp_path)
    path = tmp_path / "hermes-3-tiny" / "ids" / "user.ids.json"
    ids = json.loads(path.read_text())
    path.write_text(json.dumps([*ids[:2], 7, *ids[3:]]))
    (finding,) = pins.compare(s, tmp_path, COMMAND)
    assert finding.message.startswith(
        "probe 'user' renders as pinned but tokenizes differently (the tokenizer changed): first difference at "
        "token 2: pinned [7, "
    )


def test_pins_of_probes_that_no_longer_apply_fail_and_update_removes_them(tmp_path: Path) -> None:
    with_tools = fixture_model("hermes-3-tiny").templates["tool_use"].source
    pins.update(subject_with_template("hermes-3-tiny", with_tools, name="tools"), tmp_path)
    plain = subject_with_template("hermes-3-tiny", CHATML, name="tools-removed")
    (tmp_path / "hermes-3-tiny" / "tools").rename(tmp_path / "hermes-3-tiny" / "tools-removed")
    findings = pins.compare(plain, tmp_path, COMMAND)
    stale = [f.message for f in findings if "has no probe any more" in f.message]
    assert len(stale) == 3 and "tool-call.txt" in stale[0]
    removed = pins.update(plain, tmp_path)
    assert {p.name for p in removed} >= {"tool-call.txt", "tool-call.ids.json", "tools-user.txt"}
    assert pins.compare(plain, tmp_path, COMMAND) == []


def test_pins_never_import_pytest() -> None:
    import subprocess
    import sys

    code = "import sys, templatecheck.pins; print('pytest' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------------------- the life cycle


@pytest.fixture(scope="module", autouse=True)
def _import_transformers_first() -> None:
    """See tests/test_plugin.py: numpy cannot be imported twice in one process."""
    _ = fixture_model("hermes-3-tiny").tokenizer


def test_without_pin_dir_test_pins_is_skipped_with_the_reason(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--model", str(FIXTURES / "hermes-3-tiny"), "-k", "pins", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no --tc-pin-dir given*"])


def test_update_pins_without_a_pin_dir_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--model", str(FIXTURES / "hermes-3-tiny"), "--tc-update-pins")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--tc-update-pins writes the pins of --tc-pin-dir DIR: pass --tc-pin-dir too*"]
    )


def test_the_publishers_pinning_life_cycle(pytester: pytest.Pytester) -> None:
    model = pytester.path / "my-model"
    shutil.copytree(FIXTURES / "hermes-3-tiny", model)
    template = model / "chat_template.jinja"  # takes precedence over tokenizer_config.json's templates
    template.write_text(CHATML)
    args = ["--model", str(model), "--tc-pin-dir", "pins", "-k", "pins", "-p", "no:cacheprovider"]
    command = f"pytest --model {model} --tc-pin-dir pins --tc-update-pins"

    missing = pytester.runpytest(*args)
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(
        [f"no pins for 3 probes in pins/my-model/default (*); *update the pins: {command}"]
    )

    # under xdist the written paths travel to the controller's summary
    updated = pytester.runpytest_subprocess(*args, "--tc-update-pins", "-n", "2")
    updated.assert_outcomes(passed=1)
    updated.stdout.fnmatch_lines(
        [
            "*= templatecheck pins: 6 files written or removed =*",
            "pins/my-model/default/system-user-assistant.ids.json",
        ]
    )
    assert (pytester.path / "pins" / "my-model" / "default" / "user.txt").is_file()

    pytester.runpytest(*args).assert_outcomes(passed=1)

    template.write_text("{#- cosmetic: a comment and explicit whitespace control -#}\n" + CHATML)
    pytester.runpytest(*args).assert_outcomes(passed=1)

    template.write_text(CHATML.replace("{{ m.role }}\n", "{{ m.role }} \n"))
    changed = pytester.runpytest(*args)
    changed.assert_outcomes(passed=0, failed=1)
    changed.stdout.fnmatch_lines(
        [
            "probe 'user' renders differently from its pin",
            "first difference at character *",
            "*--- pinned pins/my-model/default/user.txt",
            "*+++ rendered now",
            "*-<|begin_of_text|><|im_start|>user␤",
            "*+<|begin_of_text|><|im_start|>user␠␤",
            f"if the change is intended, update the pins: {command}",
        ]
    )

    rewritten = pytester.runpytest(*args, "--tc-update-pins")
    rewritten.assert_outcomes(passed=1)
    rewritten.stdout.fnmatch_lines(["*= templatecheck pins: * files written or removed =*"])
    pytester.runpytest(*args).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("default", "default"),
        ("tool_use", "tool_use"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("", "%00"),
        ("x/y", "x%2Fy"),
        ("x y", "x%20y"),
        ("x_y", "x_y"),
        ("org/Model@v1", "org%2FModel@v1"),
    ],
)
def test_names_become_one_safe_folder_each(name: str, folder: str) -> None:
    from templatecheck.pins import folder_name

    assert folder_name(name) == folder


def test_long_and_colliding_names_stay_apart() -> None:
    from templatecheck.pins import folder_name

    names = ["x/y", "x_y", "x y", "x%2Fy", "a" * 500, "a" * 501]
    folders = [folder_name(n) for n in names]
    assert len(set(folders)) == len(names)
    assert all(len(f) <= 80 and "/" not in f and f not in (".", "..") for f in folders)
