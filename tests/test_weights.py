"""Weights are fetched only for --tc-generate: from a Hub id once per process, with the check files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from templatecheck import model as model_module
from templatecheck.model import CHECK_FILES, WEIGHT_FILES, Model, ModelRef, weights_directory


def test_a_local_directory_is_its_own_weights_directory(tmp_path: Path) -> None:
    local = Model(ModelRef(str(tmp_path), path=tmp_path), tmp_path, {})
    assert weights_directory(local) == tmp_path


def test_a_hub_model_downloads_safetensors_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(model_module, "_WEIGHTS", {})
    ref = ModelRef.parse("org/tiny@v1")
    hub = Model(ref, tmp_path, {})
    assert weights_directory(hub) == tmp_path
    assert weights_directory(hub) == tmp_path
    assert len(calls) == 1
    assert calls[0]["repo_id"] == "org/tiny" and calls[0]["revision"] == "v1"
    assert set(calls[0]["allow_patterns"]) == {*CHECK_FILES, *WEIGHT_FILES}
    assert "*.safetensors" in WEIGHT_FILES and not any(p.endswith(".bin") for p in WEIGHT_FILES)
    assert not any("safetensors" in p for p in CHECK_FILES)  # the static layers never fetch weights
