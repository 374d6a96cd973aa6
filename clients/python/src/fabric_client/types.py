"""The API's results as dataclasses. Each keeps the JSON object it was read from in ``raw``
and the fields this version does not know in ``extra``, so fields the server adds later
never break parsing and stay readable."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Type, TypeVar

#: The time a record built without one shows (``Task()``): the Unix epoch, in UTC.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: The states a task does not leave.
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "expired"})

T = TypeVar("T", bound="_Record")

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> Optional[datetime]:
    """An RFC 3339 timestamp (``2024-05-01T12:00:00.123456789Z``) as an aware datetime;
    ``None`` when absent. Fractions past microseconds are cut."""
    if value is None:
        return None
    text = str(value).replace("Z", "+00:00").replace("z", "+00:00")
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    return datetime.fromisoformat(text)


def _decode(text: Optional[str], b64: Optional[str]) -> Optional[bytes]:
    if text is not None:
        return text.encode("utf-8")
    if b64 is not None:
        return base64.b64decode(b64)
    return None


@dataclass
class _Record:
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def extra(self) -> Dict[str, Any]:
        """The fields of ``raw`` this class does not model (added by a newer server)."""
        known = {f.name for f in fields(self)}
        return {k: v for k, v in self.raw.items() if k not in known}

    @classmethod
    def _build(cls: Type[T], raw: Dict[str, Any], **values: Any) -> T:
        return cls(raw=dict(raw), **values)


@dataclass
class Usage(_Record):
    fuel_consumed: int = 0
    peak_memory_bytes: int = 0
    wall_ms: int = 0
    http_requests: int = 0
    http_bytes_sent: int = 0
    http_bytes_received: int = 0
    http_denied: int = 0

    @classmethod
    def from_json(cls, obj: Optional[Dict[str, Any]]) -> "Usage":
        obj = obj or {}
        names = [f.name for f in fields(cls) if f.name != "raw"]
        return cls._build(obj, **{n: int(obj.get(n) or 0) for n in names})


@dataclass
class Attempt(_Record):
    outcome: str = ""
    usage: Usage = field(default_factory=Usage)
    exit_code: Optional[int] = None
    trap: Optional[str] = None
    output: Optional[str] = None
    output_base64: Optional[str] = None
    stderr: Optional[str] = None
    error: Optional[str] = None
    output_truncated: bool = False
    stderr_truncated: bool = False
    denials: List[Dict[str, Any]] = field(default_factory=list)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    #: The agent's key performance indicators (a newer server's field; ``None`` before).
    kpis: Optional[Any] = None

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Attempt":
        return cls._build(
            obj,
            outcome=obj.get("outcome", ""),
            usage=Usage.from_json(obj.get("usage")),
            exit_code=obj.get("exit_code"),
            trap=obj.get("trap"),
            output=obj.get("output"),
            output_base64=obj.get("output_base64"),
            stderr=obj.get("stderr"),
            error=obj.get("error"),
            output_truncated=bool(obj.get("output_truncated", False)),
            stderr_truncated=bool(obj.get("stderr_truncated", False)),
            denials=list(obj.get("denials") or []),
            started_at=parse_time(obj.get("started_at")),
            finished_at=parse_time(obj.get("finished_at")),
            kpis=obj.get("kpis"),
        )

    @property
    def output_bytes(self) -> Optional[bytes]:
        """The attempt's stdout as bytes (from ``output`` or ``output_base64``)."""
        return _decode(self.output, self.output_base64)


@dataclass
class Task(_Record):
    id: str = ""
    module: str = ""
    state: str = ""
    priority: str = ""
    #: Always sent (``EPOCH`` only in a ``Task()`` built by hand).
    created_at: datetime = EPOCH
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    attempts: List[Attempt] = field(default_factory=list)
    output: Optional[str] = None
    output_base64: Optional[str] = None
    error: Optional[str] = None
    labels: Dict[str, str] = field(default_factory=dict)
    dirs: Dict[str, str] = field(default_factory=dict)
    egress: List[str] = field(default_factory=list)
    #: The task's progress (a newer server's field; ``None`` before).
    progress: Optional[Any] = None
    #: The task's arguments (a newer server's field; ``None`` before).
    args: Optional[Any] = None
    #: The ids of the tasks it runs after (empty when none).
    after: List[str] = field(default_factory=list)
    #: Its input is built from its ``after`` tasks' outputs.
    pass_outputs: bool = False
    #: The task whose attempt submitted it, if any.
    parent: Optional[str] = None
    #: Its concurrency key and limit (``{"key", "limit"}``), if any.
    concurrency: Optional[Dict[str, Any]] = None

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Task":
        return cls._build(
            obj,
            id=str(obj.get("id", "")),
            module=obj.get("module", ""),
            state=obj.get("state", ""),
            priority=obj.get("priority", ""),
            created_at=parse_time(obj.get("created_at")) or EPOCH,
            started_at=parse_time(obj.get("started_at")),
            finished_at=parse_time(obj.get("finished_at")),
            attempts=[Attempt.from_json(a) for a in obj.get("attempts") or []],
            output=obj.get("output"),
            output_base64=obj.get("output_base64"),
            error=obj.get("error"),
            labels=dict(obj.get("labels") or {}),
            dirs=dict(obj.get("dirs") or {}),
            egress=list(obj.get("egress") or []),
            progress=obj.get("progress"),
            args=obj.get("args"),
            after=list(obj.get("after") or []),
            pass_outputs=bool(obj.get("pass_outputs", False)),
            parent=obj.get("parent"),
            concurrency=obj.get("concurrency"),
        )

    @property
    def output_bytes(self) -> Optional[bytes]:
        """The task's output as bytes (from ``output`` or ``output_base64``)."""
        return _decode(self.output, self.output_base64)

    @property
    def terminal(self) -> bool:
        """Whether the task reached a state it does not leave."""
        return self.state in TERMINAL_STATES


@dataclass
class Submitted(_Record):
    id: str = ""
    state: str = ""
    deduplicated: bool = False

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Submitted":
        return cls._build(
            obj,
            id=str(obj.get("id", "")),
            state=obj.get("state", ""),
            deduplicated=bool(obj.get("deduplicated", False)),
        )


@dataclass
class TaskPage(_Record):
    tasks: List[Task] = field(default_factory=list)
    next_cursor: Optional[str] = None

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "TaskPage":
        return cls._build(
            obj,
            tasks=[Task.from_json(t) for t in obj.get("tasks") or []],
            next_cursor=obj.get("next_cursor"),
        )

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


@dataclass
class Module(_Record):
    module: str = ""
    size: int = 0
    kind: str = ""
    name: Optional[str] = None
    created_at: Optional[datetime] = None

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Module":
        return cls._build(
            obj,
            module=obj.get("module", ""),
            size=int(obj.get("size") or 0),
            kind=obj.get("kind", ""),
            name=obj.get("name"),
            created_at=parse_time(obj.get("created_at")),
        )


@dataclass
class Stats(_Record):
    queued: Dict[str, int] = field(default_factory=dict)
    waiting: int = 0
    scheduled: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    workers: int = 0
    tenant_max_running: int = 0

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Stats":
        counts = ["waiting", "scheduled", "running", "succeeded", "failed", "cancelled", "expired",
                  "workers", "tenant_max_running"]
        return cls._build(
            obj,
            queued={k: int(v) for k, v in (obj.get("queued") or {}).items()},
            **{n: int(obj.get(n) or 0) for n in counts},
        )


@dataclass
class TaskEvent(_Record):
    """One notification of a subscription: ``method`` is ``task.event`` (a task changed
    state: ``id``, ``state`` and, when one just ended, ``attempt``) or
    ``task.events_dropped`` (the subscription fell behind and ``dropped`` events were
    never sent: read the tasks you follow again with ``get``). A ``task.event`` with
    ``progress`` (``{done, message, at}``) is the running attempt's latest report."""

    method: str = ""
    id: Optional[str] = None
    state: Optional[str] = None
    attempt: Optional[Attempt] = None
    progress: Optional[Dict[str, Any]] = None
    dropped: int = 0

    @classmethod
    def from_notification(cls, method: str, params: Dict[str, Any]) -> "TaskEvent":
        attempt = params.get("attempt")
        return cls._build(
            params,
            method=method,
            id=str(params["id"]) if params.get("id") is not None else None,
            state=params.get("state"),
            attempt=Attempt.from_json(attempt) if isinstance(attempt, dict) else None,
            progress=params.get("progress"),
            dropped=int(params.get("dropped") or 0),
        )

    @property
    def dropped_events(self) -> bool:
        return self.method == "task.events_dropped"
