"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the JSON-RPC 2.0 API of
docs/api.md over HTTP (``POST /rpc``) and, for ``subscribe``, the WebSocket (``GET /rpc``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import ssl
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Union

import httpx

from .errors import FabricError, TransportError, error_from
from .tracing import trace_headers
from .types import Module, Stats, Submitted, Task, TaskEvent, TaskPage

#: The server a client talks to unless told otherwise (``fabric serve``'s default).
DEFAULT_URL = "http://127.0.0.1:7070"
#: Seconds a call may take (a ``task.wait`` gets its own wait on top).
DEFAULT_TIMEOUT = 30.0
#: The longest single ``task.wait`` call ``wait`` makes, in milliseconds.
WAIT_SLICE_MS = 60_000
#: The ``TaskSpec`` fields ``submit`` accepts as keywords.
SPEC_KEYS = frozenset({
    "priority", "limits", "retry", "idempotency_key", "run_at", "deadline", "env", "labels",
    "dirs", "egress", "input_base64",
})

ModuleRef = Union[str, Module]


def _module_id(module: ModuleRef) -> str:
    return module.module if isinstance(module, Module) else str(module)


def _time(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return value


def task_spec(module: ModuleRef, input: Union[str, bytes, None] = None, **spec: Any) -> Dict[str, Any]:
    """A ``TaskSpec`` object: ``input`` as text when it is ``str``, as ``input_base64``
    when it is ``bytes``; ``run_at``/``deadline`` may be datetimes (naive ones are UTC)."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise TypeError(f"not a TaskSpec field: {', '.join(sorted(unknown))}")
    out: Dict[str, Any] = {"module": _module_id(module)}
    if isinstance(input, (bytes, bytearray, memoryview)):
        out["input_base64"] = base64.b64encode(bytes(input)).decode("ascii")
    elif input is not None:
        out["input"] = input
    for key, value in spec.items():
        if value is not None:
            out[key] = _time(value) if key in ("run_at", "deadline") else value
    return out


def _batch_spec(spec: Mapping[str, Any]) -> Dict[str, Any]:
    spec = dict(spec)
    if "module" not in spec:
        raise TypeError("every spec of submit_batch needs a module")
    return task_spec(spec.pop("module"), spec.pop("input", None), **spec)


class _Endpoint:
    """The URLs, headers and TLS settings both clients share."""

    def __init__(self, url: str, token: Optional[str], timeout: float, ca_cert: Optional[str]) -> None:
        if "://" not in url:
            url = "http://" + url
        scheme, rest = url.split("://", 1)
        if scheme not in ("http", "https"):
            raise ValueError(f"the server URL must be http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.rpc_url = self.url + "/rpc"
        self.ws_url = ("wss://" if scheme == "https" else "ws://") + rest.rstrip("/") + "/rpc"
        self.timeout = timeout
        self.headers = {"content-type": "application/json"}
        if token is not None:
            self.headers["authorization"] = f"Bearer {token}"
        self.ssl: Optional[ssl.SSLContext] = None
        if ca_cert is not None:
            self.ssl = ssl.create_default_context(cafile=ca_cert)
        elif scheme == "https":
            self.ssl = ssl.create_default_context()
        self._ids = itertools.count(1)

    def request(self, method: str, params: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        return {"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                "params": dict(params) if params is not None else {}}

    def result(self, response: httpx.Response) -> Any:
        """The result of a JSON-RPC answer, or its error raised."""
        try:
            answer = response.json()
        except ValueError:
            raise TransportError(
                f"{self.rpc_url} answered HTTP {response.status_code} without JSON-RPC: "
                f"{response.text[:200]!r}", response.status_code) from None
        return _answer(answer, self.rpc_url, response.status_code)

    def ws_headers(self) -> Dict[str, str]:
        return {k: v for k, v in self.headers.items() if k == "authorization"}

    def wait_params(self, id: str, deadline: Optional[float]) -> Dict[str, Any]:
        slice_ms = WAIT_SLICE_MS
        if deadline is not None:
            slice_ms = max(0, min(slice_ms, int((deadline - time.monotonic()) * 1000)))
        return {"id": str(id), "timeout_ms": slice_ms}


def _answer(answer: Any, url: str, status: Optional[int] = None) -> Any:
    if isinstance(answer, dict) and "error" in answer and answer["error"] is not None:
        raise error_from(answer["error"])
    if isinstance(answer, dict) and "result" in answer:
        return answer["result"]
    raise TransportError(f"{url} answered no JSON-RPC result: {str(answer)[:200]!r}", status)


def _event(text: Union[str, bytes]) -> Optional[TaskEvent]:
    """The event a WebSocket message carries, ``None`` for anything else (a response);
    a JSON-RPC error is raised."""
    message = json.loads(text)
    method = message.get("method") if isinstance(message, dict) else None
    if method in ("task.event", "task.events_dropped"):
        return TaskEvent.from_notification(method, message.get("params") or {})
    if isinstance(message, dict) and message.get("error") is not None:
        raise error_from(message["error"])
    return None


def _is_response(text: Union[str, bytes], id: int) -> bool:
    message = json.loads(text)
    if not isinstance(message, dict) or "method" in message:
        return False
    if message.get("error") is not None:
        raise error_from(message["error"])
    return message.get("id") == id


def _handshake_error(exc: Exception, url: str) -> FabricError:
    """The error for a refused WebSocket handshake (401 carries a JSON-RPC error)."""
    response = getattr(exc, "response", None)
    body = getattr(response, "body", None)
    status = getattr(response, "status_code", None)
    if body:
        try:
            return error_from(json.loads(body)["error"])
        except (ValueError, KeyError, TypeError):
            pass
    return TransportError(f"WebSocket {url}: {exc}", status)


class Client:
    """A blocking client of one fabric server.

    >>> fabric = Client("http://127.0.0.1:7070")
    >>> task = fabric.wait(fabric.submit("echo", "hello").id)
    """

    def __init__(self, url: str = DEFAULT_URL, token: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT, ca_cert: Optional[str] = None) -> None:
        self._endpoint = _Endpoint(url, token, timeout, ca_cert)
        verify: Union[bool, ssl.SSLContext] = self._endpoint.ssl or True
        self._http = httpx.Client(headers=self._endpoint.headers, timeout=timeout, verify=verify)

    @property
    def url(self) -> str:
        return self._endpoint.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, method: str, params: Optional[Mapping[str, Any]] = None,
             timeout: Optional[float] = None) -> Any:
        """One JSON-RPC call; its ``result`` (the JSON value), or its error raised."""
        request = self._endpoint.request(method, params)
        try:
            response = self._http.post(self._endpoint.rpc_url, content=json.dumps(request),
                                       headers=trace_headers(),
                                       timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the server at {self._endpoint.rpc_url}: {exc}") from exc
        return self._endpoint.result(response)

    def put_module(self, wasm: bytes, name: Optional[str] = None) -> Module:
        """``module.put``: stores a module or component (binary WebAssembly)."""
        params: Dict[str, Any] = {"wasm_base64": base64.b64encode(wasm).decode("ascii")}
        if name is not None:
            params["name"] = name
        result = self.call("module.put", params)
        result.setdefault("name", name)
        return Module.from_json(result)

    def modules(self) -> List[Module]:
        """``module.list``: the caller's modules."""
        return [Module.from_json(m) for m in self.call("module.list")["modules"]]

    def delete_module(self, module: ModuleRef) -> Module:
        """``module.delete`` (an id ``sha256:<hex>`` or a name): the deleted module."""
        return Module.from_json(self.call("module.delete", {"module": _module_id(module)}))

    def submit(self, module: ModuleRef, input: Union[str, bytes, None] = None, **spec: Any) -> Submitted:
        """``task.submit``; ``spec`` takes the ``TaskSpec`` fields (priority, limits, retry,
        idempotency_key, run_at, deadline, env, labels, dirs, egress)."""
        return Submitted.from_json(self.call("task.submit", task_spec(module, input, **spec)))

    def submit_batch(self, specs: Iterable[Mapping[str, Any]]) -> List[Submitted]:
        """``task.submit_batch``: each spec a mapping with ``module``, ``input`` and any
        ``TaskSpec`` field; all are stored or none."""
        tasks = [_batch_spec(spec) for spec in specs]
        return [Submitted.from_json(t) for t in self.call("task.submit_batch", {"tasks": tasks})["tasks"]]

    def get(self, id: str) -> Task:
        """``task.get``."""
        return Task.from_json(self.call("task.get", {"id": str(id)}))

    def wait(self, id: str, timeout: Optional[float] = None) -> Task:
        """The task once it is terminal, with repeated ``task.wait`` calls of at most 60 s;
        with ``timeout`` (seconds), the task as it is then if it is still unfinished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            params = self._endpoint.wait_params(id, deadline)
            task = Task.from_json(self.call("task.wait", params,
                                            timeout=params["timeout_ms"] / 1000 + self._endpoint.timeout))
            if task.terminal or (deadline is not None and time.monotonic() >= deadline):
                return task

    def cancel(self, id: str) -> Task:
        """``task.cancel``."""
        return Task.from_json(self.call("task.cancel", {"id": str(id)}))

    def list(self, state: Optional[str] = None, limit: Optional[int] = None,
             cursor: Optional[str] = None) -> TaskPage:
        """``task.list``: one page of tasks, newest first; ``next_cursor`` continues."""
        params = {k: v for k, v in (("state", state), ("limit", limit), ("cursor", cursor)) if v is not None}
        return TaskPage.from_json(self.call("task.list", params))

    def stats(self) -> Stats:
        """``fabric.stats``."""
        return Stats.from_json(self.call("fabric.stats"))

    def subscribe(self, id: Optional[str] = None) -> "Subscription":
        """``task.subscribe`` on a WebSocket: returns once the server confirmed it, an
        iterator of ``TaskEvent`` (task ``id``'s, or all of the caller's); close it (or use
        ``with``) to end it."""
        return Subscription(self._endpoint, id)


class Subscription:
    """The events of one ``task.subscribe``: iterate it; ``next(timeout)`` bounds a wait."""

    def __init__(self, endpoint: _Endpoint, id: Optional[str]) -> None:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        self._early: Deque[TaskEvent] = deque()
        # Entered as a context manager, as newer websockets versions want of connect().
        self._stack = contextlib.ExitStack()
        try:
            self._socket = self._stack.enter_context(connect(
                endpoint.ws_url, additional_headers=endpoint.ws_headers(), ssl=endpoint.ssl,
                open_timeout=endpoint.timeout))
        except InvalidStatus as exc:
            raise _handshake_error(exc, endpoint.ws_url) from exc
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise TransportError(f"cannot reach the server at {endpoint.ws_url}: {exc}") from exc
        try:
            request = endpoint.request("task.subscribe", {"id": None if id is None else str(id)})
            self._socket.send(json.dumps(request))
            deadline = time.monotonic() + endpoint.timeout
            while True:
                text = self._socket.recv(timeout=max(0.0, deadline - time.monotonic()))
                if _is_response(text, request["id"]):
                    break
                event = _event(text)
                if event is not None:
                    self._early.append(event)
        except BaseException as exc:
            self.close()
            if isinstance(exc, TimeoutError):
                raise TransportError(f"{endpoint.ws_url}: no answer to task.subscribe") from exc
            raise

    def next(self, timeout: Optional[float] = None) -> TaskEvent:
        """The next event; ``TimeoutError`` after ``timeout`` seconds, ``StopIteration``
        once the server closed the socket."""
        from websockets.exceptions import ConnectionClosed

        if self._early:
            return self._early.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                text = self._socket.recv(timeout=remaining)
            except ConnectionClosed:
                raise StopIteration from None
            event = _event(text)
            if event is not None:
                return event

    def __iter__(self) -> Iterator[TaskEvent]:
        return self

    def __next__(self) -> TaskEvent:
        return self.next()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """The same methods as ``Client``, as coroutines; ``subscribe`` gives an async iterator."""

    def __init__(self, url: str = DEFAULT_URL, token: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT, ca_cert: Optional[str] = None) -> None:
        self._endpoint = _Endpoint(url, token, timeout, ca_cert)
        verify: Union[bool, ssl.SSLContext] = self._endpoint.ssl or True
        self._http = httpx.AsyncClient(headers=self._endpoint.headers, timeout=timeout, verify=verify)

    @property
    def url(self) -> str:
        return self._endpoint.url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def call(self, method: str, params: Optional[Mapping[str, Any]] = None,
                   timeout: Optional[float] = None) -> Any:
        request = self._endpoint.request(method, params)
        try:
            response = await self._http.post(
                self._endpoint.rpc_url, content=json.dumps(request), headers=trace_headers(),
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the server at {self._endpoint.rpc_url}: {exc}") from exc
        return self._endpoint.result(response)

    async def put_module(self, wasm: bytes, name: Optional[str] = None) -> Module:
        params: Dict[str, Any] = {"wasm_base64": base64.b64encode(wasm).decode("ascii")}
        if name is not None:
            params["name"] = name
        result = await self.call("module.put", params)
        result.setdefault("name", name)
        return Module.from_json(result)

    async def modules(self) -> List[Module]:
        return [Module.from_json(m) for m in (await self.call("module.list"))["modules"]]

    async def delete_module(self, module: ModuleRef) -> Module:
        return Module.from_json(await self.call("module.delete", {"module": _module_id(module)}))

    async def submit(self, module: ModuleRef, input: Union[str, bytes, None] = None, **spec: Any) -> Submitted:
        return Submitted.from_json(await self.call("task.submit", task_spec(module, input, **spec)))

    async def submit_batch(self, specs: Iterable[Mapping[str, Any]]) -> List[Submitted]:
        tasks = [_batch_spec(spec) for spec in specs]
        result = await self.call("task.submit_batch", {"tasks": tasks})
        return [Submitted.from_json(t) for t in result["tasks"]]

    async def get(self, id: str) -> Task:
        return Task.from_json(await self.call("task.get", {"id": str(id)}))

    async def wait(self, id: str, timeout: Optional[float] = None) -> Task:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            params = self._endpoint.wait_params(id, deadline)
            task = Task.from_json(await self.call(
                "task.wait", params, timeout=params["timeout_ms"] / 1000 + self._endpoint.timeout))
            if task.terminal or (deadline is not None and time.monotonic() >= deadline):
                return task

    async def cancel(self, id: str) -> Task:
        return Task.from_json(await self.call("task.cancel", {"id": str(id)}))

    async def list(self, state: Optional[str] = None, limit: Optional[int] = None,
                   cursor: Optional[str] = None) -> TaskPage:
        params = {k: v for k, v in (("state", state), ("limit", limit), ("cursor", cursor)) if v is not None}
        return TaskPage.from_json(await self.call("task.list", params))

    async def stats(self) -> Stats:
        return Stats.from_json(await self.call("fabric.stats"))

    def subscribe(self, id: Optional[str] = None) -> "AsyncSubscription":
        """``task.subscribe``: ``async with client.subscribe(id) as events`` (or ``await``
        it) connects and waits for the confirmation; ``async for event in events``."""
        return AsyncSubscription(self._endpoint, id)


class AsyncSubscription:
    """The events of one ``task.subscribe``, as an async iterator. It connects when
    entered, awaited, or first iterated."""

    def __init__(self, endpoint: _Endpoint, id: Optional[str]) -> None:
        self._endpoint = endpoint
        self._id = id
        self._socket: Any = None
        self._early: Deque[TaskEvent] = deque()

    async def _connect(self) -> "AsyncSubscription":
        if self._socket is not None:
            return self
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        endpoint = self._endpoint
        try:
            self._socket = await connect(endpoint.ws_url, additional_headers=endpoint.ws_headers(),
                                         ssl=endpoint.ssl, open_timeout=endpoint.timeout)
        except InvalidStatus as exc:
            raise _handshake_error(exc, endpoint.ws_url) from exc
        except (OSError, WebSocketException, asyncio.TimeoutError) as exc:
            raise TransportError(f"cannot reach the server at {endpoint.ws_url}: {exc}") from exc
        try:
            request = endpoint.request("task.subscribe", {"id": None if self._id is None else str(self._id)})
            await self._socket.send(json.dumps(request))

            async def confirmed() -> None:
                while True:
                    text = await self._socket.recv()
                    if _is_response(text, request["id"]):
                        return
                    event = _event(text)
                    if event is not None:
                        self._early.append(event)

            await asyncio.wait_for(confirmed(), endpoint.timeout)
        except BaseException as exc:
            await self._socket.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise TransportError(f"{endpoint.ws_url}: no answer to task.subscribe") from exc
            raise
        return self

    def __await__(self) -> Any:
        return self._connect().__await__()

    async def __aenter__(self) -> "AsyncSubscription":
        return await self._connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[TaskEvent]:
        return self

    async def __anext__(self) -> TaskEvent:
        from websockets.exceptions import ConnectionClosed

        await self._connect()
        if self._early:
            return self._early.popleft()
        while True:
            try:
                text = await self._socket.recv()
            except ConnectionClosed:
                raise StopAsyncIteration from None
            event = _event(text)
            if event is not None:
                return event

    async def aclose(self) -> None:
        if self._socket is not None:
            await self._socket.close()
