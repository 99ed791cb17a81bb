"""Every API route and dependency is ``async``: FastAPI runs a plain ``def`` one in a thread
pool, a hop to a thread and back (a queue, a wake-up of each side) on every request."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from callstream.api.app import ROUTERS
from callstream.console import routes as console


def callables(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    if dependant.call is not None:
        yield getattr(dependant.call, "__qualname__", repr(dependant.call)), dependant.call
    for sub in dependant.dependencies:
        yield from callables(sub)


def test_no_route_or_dependency_runs_in_a_thread() -> None:
    seen = 0
    sync = []
    for router in (*ROUTERS, console.router):
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            for name, call in callables(route.dependant):
                seen += 1
                if not inspect.iscoroutinefunction(call):
                    sync.append(f"{route.path} -> {name}")
    assert seen > 40
    assert sync == []
