"""The sync and async clients offer the same API: same methods, same parameters, same defaults."""

from __future__ import annotations

import inspect

from flux_tools import AsyncFluxClient, FluxClient, GenerationResult

LIFECYCLE = {"close", "aclose"}


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in LIFECYCLE
    }


def test_same_methods_and_signatures() -> None:
    sync, asyn = public_methods(FluxClient), public_methods(AsyncFluxClient)
    assert sync.keys() == asyn.keys()
    assert {"create", "get", "cancel", "wait", "generate", "result"} <= sync.keys()
    assert {"run", "follow", "save", "edit"} <= sync.keys()
    for name in sync:
        assert sync[name] == asyn[name], name
    assert (
        inspect.signature(FluxClient.__init__).parameters.keys()
        == inspect.signature(AsyncFluxClient.__init__).parameters.keys()
    )


def test_async_methods_are_coroutines_where_they_do_io() -> None:
    for name in ("create", "get", "cancel", "wait", "generate", "run", "follow", "save"):
        assert inspect.iscoroutinefunction(getattr(AsyncFluxClient, name)), name
        assert not inspect.iscoroutinefunction(getattr(FluxClient, name)), name
    assert inspect.iscoroutinefunction(GenerationResult.asave)
    assert inspect.signature(GenerationResult.save) == inspect.signature(GenerationResult.asave)
