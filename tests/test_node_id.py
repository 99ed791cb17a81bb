"""Node identity: configured, or generated once and kept in the data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from callstream.config import Settings
from callstream.node_id import FILE_NAME, InvalidNodeId, node_identity


def test_a_configured_id_wins_and_nothing_is_written(tmp_path: Path) -> None:
    assert node_identity("edge-1", tmp_path) == "edge-1"
    assert not (tmp_path / FILE_NAME).exists()


def test_a_generated_id_is_kept_and_read_back(tmp_path: Path) -> None:
    first = node_identity(None, tmp_path / "data")
    assert (tmp_path / "data" / FILE_NAME).read_text().strip() == first
    assert node_identity(None, tmp_path / "data") == first
    assert node_identity(None, tmp_path / "other") != first
    assert [p.name for p in (tmp_path / "data").iterdir()] == [FILE_NAME]  # no staging left


def test_an_edited_file_is_refused_with_its_path(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("no spaces allowed\n")
    with pytest.raises(InvalidNodeId, match=str(tmp_path / FILE_NAME)):
        node_identity(None, tmp_path)


def test_the_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSTREAM_NODE_ID", "node-a")
    assert Settings().node_id == "node-a"
    monkeypatch.setenv("CALLSTREAM_NODE_ID", "-bad id")
    with pytest.raises(ValidationError, match="node_id"):
        Settings()
