"""The exceptions of the client: one per JSON-RPC error code of docs/api.md, and one for
a server that could not be reached or did not answer JSON-RPC."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class FabricError(Exception):
    """A JSON-RPC error the server answered: ``code``, ``message`` and ``data`` (the
    error's ``data`` object, e.g. ``{"field": "limits.fuel"}``, or ``None``)."""

    code: Optional[int] = None

    def __init__(self, code: Optional[int], message: str, data: Any = None) -> None:
        super().__init__(f"RPC error {code}: {message}" if code is not None else message)
        self.code = code
        self.message = message
        self.data = data

    @property
    def field(self) -> Optional[str]:
        """``data.field`` when the server named the offending field."""
        if isinstance(self.data, dict):
            field = self.data.get("field")
            return field if isinstance(field, str) else None
        return None


class TransportError(FabricError):
    """The server could not be reached, timed out, or answered something that is not
    JSON-RPC (``code`` is ``None``; ``status`` is the HTTP status when there was one)."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(None, message, None)
        self.status = status


class ParseError(FabricError):
    """-32700: the server could not parse the request."""


class InvalidRequest(FabricError):
    """-32600: the request is not a JSON-RPC request."""


class MethodNotFound(FabricError):
    """-32601: no such method (``task.subscribe`` over HTTP is one: it needs the WebSocket)."""


class InvalidParams(FabricError):
    """-32602: a parameter is missing or wrong; ``field`` names it."""


class InternalError(FabricError):
    """-32603: the server failed."""


class Unauthorized(FabricError):
    """-32001: no token, or one the server does not know."""


class NotFound(FabricError):
    """-32002: no such task or module for this tenant; ``field`` names what was looked up."""


class QuotaExceeded(FabricError):
    """-32003: a tenant's limit (``data.limit``, ``data.max``, ``data.current``)."""


class Draining(FabricError):
    """-32004: the server is shutting down and takes no new work."""


class ModuleInvalid(FabricError):
    """-32005: the module is not a WebAssembly module or component the fabric runs."""


class StoreFull(FabricError):
    """-32006: the disk holding the store is full; nothing was written."""


class Busy(FabricError):
    """-32007: every compile thread was busy; nothing was stored; retry."""


class Conflict(FabricError):
    """-32008: ``module.delete`` of a module unfinished tasks use."""


ERRORS: Dict[int, Type[FabricError]] = {
    -32700: ParseError,
    -32600: InvalidRequest,
    -32601: MethodNotFound,
    -32602: InvalidParams,
    -32603: InternalError,
    -32001: Unauthorized,
    -32002: NotFound,
    -32003: QuotaExceeded,
    -32004: Draining,
    -32005: ModuleInvalid,
    -32006: StoreFull,
    -32007: Busy,
    -32008: Conflict,
}


def error_from(error: Any) -> FabricError:
    """The exception for a JSON-RPC ``error`` object."""
    if not isinstance(error, dict):
        return TransportError(f"malformed JSON-RPC error: {error!r}")
    code = error.get("code")
    message = str(error.get("message", ""))
    data = error.get("data")
    cls = ERRORS.get(code, FabricError) if isinstance(code, int) else FabricError
    return cls(code if isinstance(code, int) else None, message, data)
