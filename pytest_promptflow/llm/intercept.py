"""Routes ``send`` of the HTTP clients the OpenAI SDK uses (``httpx2``, and ``httpx`` for older
SDKs and other callers) through the active ``CallLayer``. Patched once per process; with no active
layer every request passes straight through."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calls import CallLayer

_active: CallLayer | None = None
_patched: set[str] = set()


def activate(layer: CallLayer | None) -> None:
    """Makes ``layer`` the one every LLM request of this process goes through (None: none)."""
    global _active
    _active = layer
    if layer is not None:
        for name in ("httpx2", "httpx"):
            _patch(name)


def _patch(name: str) -> None:
    if name in _patched:
        return
    try:
        http = importlib.import_module(name)
    except ImportError:
        return
    _patched.add(name)
    _wrap_sync(http)
    _wrap_async(http)


def _wrap_sync(http: ModuleType) -> None:
    original = http.Client.send

    def send(client: Any, request: Any, **kwargs: Any) -> Any:
        layer = _active
        if layer is None:
            return original(client, request, **kwargs)
        return layer.send(http, original, client, request, **kwargs)

    http.Client.send = send


def _wrap_async(http: ModuleType) -> None:
    original = http.AsyncClient.send

    async def send(client: Any, request: Any, **kwargs: Any) -> Any:
        layer = _active
        if layer is None:
            return await original(client, request, **kwargs)
        return await layer.send_async(http, original, client, request, **kwargs)

    http.AsyncClient.send = send
