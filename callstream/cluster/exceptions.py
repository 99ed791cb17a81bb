"""Errors of the cluster coordination, importable without the optional ``redis``."""

from __future__ import annotations


class RedisUnavailable(RuntimeError):
    """Redis cannot be used at start: unreachable, or its client is not installed."""
