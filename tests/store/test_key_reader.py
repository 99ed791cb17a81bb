"""The per-request API-key lookup sees another process's revocation at once."""

from __future__ import annotations

from pathlib import Path

from callstream.api.auth import create_key, hash_key
from callstream.store.sql import SqlStore


async def test_lookup_sees_a_revocation_by_another_connection(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    server, cli = SqlStore(url), SqlStore(url, inline_sqlite=False)  # as two processes
    await server.open()
    await cli.open()
    try:
        key, record = await create_key(cli)
        found = await server.find_api_key(hash_key(key))
        assert found == record
        assert await cli.revoke_api_key(record.prefix, "2026-12-04T00:00:00Z")
        found = await server.find_api_key(hash_key(key))
        assert found is not None and found.revoked_at == "2026-12-04T00:00:00Z"
        assert await server.find_api_key(hash_key("KEYnot-a-key")) is None
    finally:
        await cli.close()
        await server.close()
