"""Python client of the Execution Fabric: ``Client`` and ``AsyncClient`` speak the JSON-RPC
2.0 API of docs/api.md; results are dataclasses and errors are exceptions by code."""

from .client import (
    DEFAULT_URL,
    AsyncClient,
    AsyncSubscription,
    Client,
    Subscription,
    task_spec,
)
from .errors import (
    Busy,
    Conflict,
    Draining,
    FabricError,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ModuleInvalid,
    NotFound,
    ParseError,
    QuotaExceeded,
    StoreFull,
    TransportError,
    Unauthorized,
)
from .types import (
    TERMINAL_STATES,
    Attempt,
    Module,
    Stats,
    Submitted,
    Task,
    TaskEvent,
    TaskPage,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL", "AsyncClient", "AsyncSubscription", "Client", "Subscription", "task_spec",
    "Busy", "Conflict", "Draining", "FabricError", "InternalError", "InvalidParams",
    "InvalidRequest", "MethodNotFound", "ModuleInvalid", "NotFound", "ParseError",
    "QuotaExceeded", "StoreFull", "TransportError", "Unauthorized",
    "TERMINAL_STATES", "Attempt", "Module", "Stats", "Submitted", "Task", "TaskEvent",
    "TaskPage", "Usage",
]
