"""Where a --model run lives: its rootdir, and the suite files and node ids a user gives back."""

from __future__ import annotations

from pathlib import Path

import pytest

from templatecheck.errors import TemplatecheckError
from templatecheck.suite import FOLDER, node_id, run_root, selects


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    places = {
        "project": tmp_path / "project",
        "here": tmp_path / "project" / "sub",
        "models": tmp_path / "models",
        "model": tmp_path / "models" / "m",
    }
    for path in places.values():
        path.mkdir(parents=True, exist_ok=True)
    return places


def test_the_rootdir_of_a_model_run_is_never_in_a_model(tree: dict[str, Path]) -> None:
    here, model, project = tree["here"], tree["model"], tree["project"]
    # pytest took the model directory, or the common folder above it and the working directory
    assert run_root(model, None, here, [model]) == here
    assert run_root(model.parent.parent, None, here, [model]) == here
    # pytest's own choice stands where it is the working directory or the project holding the ini-file
    assert run_root(here, None, here, [model]) == here
    assert run_root(project, project / "pyproject.toml", here, [model]) == project
    # also when the project holds the model: the cache is the project's, beside the model, not in it
    assert run_root(project, project / "pyproject.toml", here, [project / "models" / "x"]) == project
    # but a project config inside a model directory is the model's
    assert run_root(model, model / "pyproject.toml", model.parent / "x", [model]) == model.parent / "x"
    # started inside the model: the suite's own folder (and no cache)
    assert run_root(model, None, model, [model]) == FOLDER
    assert run_root(model, None, model / "deeper", [model]) == FOLDER


def test_suite_files_and_node_ids_are_read_relative_to_the_suite(tmp_path: Path) -> None:
    assert node_id("test_tokenizer.py", tmp_path) == "test_tokenizer.py"
    assert node_id("test_tokenizer.py::test_double_bos[m:default]", tmp_path) == (
        "test_tokenizer.py::test_double_bos[m:default]"
    )
    assert node_id(f"{FOLDER}/test_roles.py::test_clock", tmp_path) == "test_roles.py::test_clock"
    assert node_id(str(FOLDER), tmp_path) == "."
    with pytest.raises(
        TemplatecheckError, match=r"'tests/': a --model run collects only the conformance suite"
    ):
        node_id("tests/", tmp_path)
    with pytest.raises(
        TemplatecheckError,
        match=r"name one of its files \(test_engine.py, test_generation.py, .*test_tools.py\)",
    ):
        node_id("test_nothing.py", tmp_path)


@pytest.mark.parametrize(
    ("chosen", "named"),
    [
        (".", True),
        ("test_tokenizer.py", True),
        ("test_tokenizer.py::test_double_bos", True),
        ("test_tokenizer.py::test_double_bos[m:default]", True),
        ("test_tokenizer.py::test_double_bos[m:tool_use]", False),
        ("test_tokenizer.py::test_double", False),  # a prefix of a name is not the name
        ("test_template.py", False),
    ],
)
def test_a_selection_names_exactly_its_items(chosen: str, named: bool) -> None:
    assert selects(chosen, FOLDER / "test_tokenizer.py", "test_double_bos[m:default]") is named


def test_a_file_outside_the_suite_is_never_selected(tmp_path: Path) -> None:
    assert not selects(".", tmp_path / "test_tokenizer.py", "test_double_bos[m:default]")
