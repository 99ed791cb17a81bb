"""The node's identity: a short name that stays the same across restarts.

It is recorded as the ``owner`` of every call the node takes and names its webhook
leases, so that after a restart the node finds what it owned (its calls left alive, its
leases) and leaves other nodes' alone when several share one PostgreSQL store.
``CALLSTREAM_NODE_ID`` sets it; otherwise one is generated on the first start and kept in
``<data dir>/node-id``.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path

#: Letters, digits and ``._:-``; up to 64 characters; no leading punctuation.
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
FILE_NAME = "node-id"

_VALID = re.compile(NODE_ID_PATTERN)


class InvalidNodeId(ValueError):
    """The data dir's node-id file holds something that is not a node id."""


def node_identity(configured: str | None, data_dir: Path) -> str:
    """``configured`` if set; else the data dir's kept id, made and kept on first use.

    Raises:
        InvalidNodeId: the node-id file was edited into something invalid.
    """
    if configured:
        return configured
    path = data_dir / FILE_NAME
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        return _generate(path)
    if not _VALID.match(kept):
        raise InvalidNodeId(
            f"{path} holds {kept[:80]!r}, not a node id ({NODE_ID_PATTERN}); fix or delete it "
            "(a new id makes the calls the old one left alive another node's)")
    return kept


def _generate(path: Path) -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40].strip(".-") or "node"
    node_id = f"{host}-{uuid.uuid4().hex[:8]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    staged.write_text(node_id + "\n")
    try:
        os.link(staged, path)  # fails if a concurrent first start kept one already
    except FileExistsError:
        return path.read_text().strip()
    finally:
        staged.unlink()
    return node_id
