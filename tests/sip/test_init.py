"""The package exports what its __all__ promises (httpx's test_exported_members)."""

from __future__ import annotations

import callstream.sip as sip


def test_exported_members() -> None:
    for name in sip.__all__:
        assert hasattr(sip, name), name
    assert sorted(sip.__all__) == sip.__all__ or len(set(sip.__all__)) == len(sip.__all__)
