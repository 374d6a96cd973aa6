"""The Python client against a real `fabric serve`: every method, the errors with their
codes and data, authentication, subscriptions, the async client, bytes in and out, TLS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import fabric_client
from fabric_client import (
    AsyncClient,
    Client,
    FabricError,
    InvalidParams,
    MethodNotFound,
    ModuleInvalid,
    NotFound,
    TransportError,
    Unauthorized,
)
from fabric_client.client import _event

from conftest import ECHO_WASM


def variant(tag: bytes) -> bytes:
    """Echo with a custom section named `tag` appended: the same agent, another module id
    (deleting it leaves the fixture's `echo` alone: a delete takes every name of a module)."""
    return ECHO_WASM + bytes([0, len(tag) + 1, len(tag)]) + tag


def later(hours: float = 1.0) -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=hours)


def test_put_module_answers_the_sha256_of_the_bytes_and_lists_and_deletes_it(client):
    wasm = variant(b"bytes")
    module = client.put_module(wasm, name="echo-bytes")
    assert module.module == "sha256:" + hashlib.sha256(wasm).hexdigest()
    assert (module.kind, module.size, module.name) == ("module", len(wasm), "echo-bytes")
    listed = {m.name: m for m in client.modules()}
    assert listed["echo-bytes"].module == module.module
    assert listed["echo-bytes"].created_at.tzinfo is not None
    deleted = client.delete_module("echo-bytes")
    assert deleted.module == module.module
    assert "echo-bytes" not in {m.name for m in client.modules()}


def test_the_echo_bytes_are_echo_wat(client, server):
    # The fixture stored echo.wat through `fabric module put`, which compiles the text.
    assert client.put_module(ECHO_WASM).module == server.echo


def test_submit_wait_get_run_the_echo_agent(client, server):
    submitted = client.submit("echo", "hello", priority="high", labels={"test": "submit"},
                              limits={"fuel": 10_000_000}, retry={"max_attempts": 2})
    assert submitted.id and not submitted.deduplicated
    task = client.wait(submitted.id, timeout=60)
    assert task.state == "succeeded", task
    assert task.output == "hello" and task.output_bytes == b"hello"
    assert (task.module, task.priority, task.labels) == (server.echo, "high", {"test": "submit"})
    assert task.terminal and task.finished_at >= task.created_at
    [attempt] = task.attempts
    assert attempt.outcome == "ok" and attempt.output == "hello"
    assert attempt.usage.fuel_consumed > 0 and attempt.usage.peak_memory_bytes >= 2 * 65536
    got = client.get(submitted.id)
    assert (got.id, got.state, got.output) == (task.id, "succeeded", "hello")


def test_bytes_input_comes_back_as_output_base64(client):
    data = bytes(range(256)) * 4
    task = client.wait(client.submit("echo", data).id, timeout=60)
    assert task.state == "succeeded", task
    assert task.output is None
    assert base64.b64decode(task.output_base64) == data
    assert task.output_bytes == data == task.attempts[0].output_bytes


def test_list_pages_with_a_cursor_and_filters_by_state(client):
    ids = [client.submit("echo", f"page {i}").id for i in range(3)]
    for id in ids:
        assert client.wait(id, timeout=60).state == "succeeded"
    first = client.list(limit=2)
    assert len(first) == 2 and first.next_cursor
    second = client.list(limit=2, cursor=first.next_cursor)
    seen = [t.id for t in first] + [t.id for t in second]
    assert len(set(seen)) == len(seen)
    assert [t.id for t in first] == ids[::-1][:2]  # newest first
    assert ids[0] == second.tasks[0].id
    assert all(t.state == "succeeded" for t in client.list(state="succeeded", limit=1000))
    assert ids[0] not in {t.id for t in client.list(state="cancelled", limit=1000)}


def test_cancel_ends_a_scheduled_task(client):
    submitted = client.submit("echo", "never", run_at=later())
    assert submitted.state == "scheduled"
    assert client.cancel(submitted.id).state == "cancelled"
    assert client.get(submitted.id).state == "cancelled"


def test_wait_with_a_timeout_returns_the_unfinished_task(client):
    id = client.submit("echo", "later", run_at=later()).id
    started = time.monotonic()
    task = client.wait(id, timeout=0.5)
    assert task.state == "scheduled" and not task.terminal
    assert 0.4 <= time.monotonic() - started < 10
    client.cancel(id)


def test_stats_count_tasks_by_state_and_priority(client):
    before = client.stats()
    client.submit("echo", "counted", run_at=later())
    after = client.stats()
    assert set(after.queued) == {"critical", "high", "normal", "low", "background"}
    assert after.scheduled == before.scheduled + 1
    assert after.workers == 4 and after.tenant_max_running == 4


def test_submit_batch_stores_every_task_and_deduplicates_by_key(client):
    key = uuid.uuid4().hex
    specs = [
        {"module": "echo", "input": "one"},
        {"module": "echo", "input": b"\x00\x01two", "priority": "low"},
        {"module": "echo", "input": "three", "idempotency_key": key},
    ]
    submitted = client.submit_batch(specs)
    assert len(submitted) == 3 and not any(s.deduplicated for s in submitted)
    tasks = [client.wait(s.id, timeout=60) for s in submitted]
    assert [t.output_bytes for t in tasks] == [b"one", b"\x00\x01two", b"three"]
    assert tasks[1].priority == "low"
    again = client.submit("echo", "three", idempotency_key=key)
    assert again.deduplicated and again.id == submitted[2].id


def test_an_unknown_module_is_not_found_naming_the_field(client):
    with pytest.raises(NotFound) as raised:
        client.submit("no-such-module", "x")
    error = raised.value
    assert error.code == -32002 and isinstance(error, FabricError)
    assert error.data["field"] == "module" and error.field == "module"


def test_bad_params_are_invalid_params_naming_the_field(client):
    with pytest.raises(InvalidParams) as raised:
        client.submit("echo", "x", limits={"memory_bytes": 1})
    assert raised.value.code == -32602 and raised.value.field == "limits.memory_bytes"
    with pytest.raises(InvalidParams) as raised:
        client.submit_batch([{"module": "echo"}, {"module": "echo", "retry": {"max_attempts": 0}}])
    assert raised.value.field == "tasks[1].retry.max_attempts"
    with pytest.raises(TypeError, match="prioritty"):
        client.submit("echo", prioritty="high")


def test_other_errors_have_their_classes_and_codes(client):
    with pytest.raises(ModuleInvalid) as raised:
        client.put_module(b"not webassembly")
    assert raised.value.code == -32005
    with pytest.raises(MethodNotFound) as raised:
        client.call("task.frobnicate", {})
    assert raised.value.code == -32601 and raised.value.data == {"method": "task.frobnicate"}
    with pytest.raises(MethodNotFound):
        client.call("task.subscribe", {})  # it needs the WebSocket
    with pytest.raises(NotFound):
        client.get("999999999")


def test_call_is_the_raw_json_rpc(client):
    result = client.call("fabric.stats", {})
    assert isinstance(result, dict) and "queued" in result and "workers" in result


def test_a_server_that_does_not_answer_is_a_transport_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(TransportError) as raised:
            client.stats()
    assert raised.value.code is None and f"127.0.0.1:{port}" in str(raised.value)


def test_auth_refuses_a_missing_or_unknown_token_and_serves_a_known_one(auth_server):
    with Client(auth_server.url) as anonymous:
        with pytest.raises(Unauthorized) as raised:
            anonymous.stats()
        assert raised.value.code == -32001
        with pytest.raises(Unauthorized):
            anonymous.subscribe()
    with Client(auth_server.url, token="not-a-token") as wrong:
        with pytest.raises(Unauthorized):
            wrong.put_module(ECHO_WASM)
    with Client(auth_server.url, token=auth_server.token) as acme:
        acme.put_module(ECHO_WASM, name="echo")
        task = acme.wait(acme.submit("echo", "tenant acme").id, timeout=60)
        assert task.output == "tenant acme"
        with acme.subscribe() as events:
            id = acme.submit("echo", "subscribed").id
            assert any(e.id == id and e.state == "succeeded" for e in take_until_terminal(events, id))


def take_until_terminal(events, id, timeout=30.0):
    """The events of a subscription up to task `id`'s terminal one."""
    seen = []
    until = time.monotonic() + timeout
    while True:
        event = events.next(timeout=max(0.0, until - time.monotonic()))
        seen.append(event)
        if event.id == id and event.state in fabric_client.TERMINAL_STATES:
            return seen


def test_subscribe_receives_the_task_events(client):
    with client.subscribe() as events:
        id = client.submit("echo", "watched").id
        seen = [e for e in take_until_terminal(events, id) if e.id == id]
    assert all(e.method == "task.event" for e in seen)
    assert seen[-1].state == "succeeded"
    ended = [e.attempt for e in seen if e.attempt is not None]
    assert ended and ended[-1].outcome == "ok" and ended[-1].output == "watched"


def test_subscribe_to_one_task_sees_its_cancellation(client):
    id = client.submit("echo", "cancelled", run_at=later()).id
    other = client.submit("echo", "not followed").id
    with client.subscribe(id) as events:
        client.cancel(id)
        event = events.next(timeout=30)
    assert (event.id, event.state) == (id, "cancelled")
    assert client.wait(other, timeout=60).state == "succeeded"


def test_events_dropped_notifications_are_events():
    event = _event(json.dumps({"jsonrpc": "2.0", "method": "task.events_dropped", "params": {"dropped": 7}}))
    assert event.method == "task.events_dropped" and event.dropped == 7 and event.dropped_events
    assert _event(json.dumps({"jsonrpc": "2.0", "method": "something.else", "params": {}})) is None


def test_unknown_fields_are_kept_not_refused():
    task = fabric_client.Task.from_json({
        "id": "1", "module": "sha256:00", "state": "running", "priority": "normal",
        "created_at": "2030-01-01T00:00:00.123456789Z", "progress": {"done": 3, "of": 10},
        "args": ["--fast"], "shiny_new_field": 1,
        "attempts": [{"outcome": "ok", "usage": {"wall_ms": 3, "future_meter": 9},
                      "kpis": {"accuracy": 0.9}, "another": True}],
    })
    assert task.progress == {"done": 3, "of": 10} and task.args == ["--fast"]
    assert task.extra == {"shiny_new_field": 1}
    assert task.created_at == datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
    attempt = task.attempts[0]
    assert attempt.kpis == {"accuracy": 0.9} and attempt.extra == {"another": True}
    assert attempt.usage.wall_ms == 3 and attempt.usage.extra == {"future_meter": 9}


def test_the_async_client_has_the_same_methods(server):
    async def scenario():
        async with AsyncClient(server.url) as client:
            wasm = variant(b"async")
            module = await client.put_module(wasm, name="echo-async")
            assert module.module == "sha256:" + hashlib.sha256(wasm).hexdigest()
            async with client.subscribe() as events:
                submitted = await client.submit("echo-async", b"\xffasync")
                batch = await client.submit_batch([{"module": module, "input": "a"},
                                                   {"module": "echo", "input": "b"}])
                async def terminal():
                    async for event in events:
                        if event.id == submitted.id and event.state == "succeeded":
                            return event
                event = await asyncio.wait_for(terminal(), 30)
            assert event.attempt.output_bytes == b"\xffasync"
            task = await client.wait(submitted.id, timeout=60)
            assert task.output_bytes == b"\xffasync" and task.output is None
            assert [(await client.wait(s.id, timeout=60)).output for s in batch] == ["a", "b"]
            assert (await client.get(submitted.id)).state == "succeeded"
            assert submitted.id in {t.id for t in await client.list(limit=10)}
            assert (await client.stats()).workers == 4
            scheduled = await client.submit("echo", "x", run_at=later())
            assert (await client.cancel(scheduled.id)).state == "cancelled"
            assert "echo-async" in {m.name for m in await client.modules()}
            assert (await client.delete_module("echo-async")).module == module.module
            with pytest.raises(NotFound) as raised:
                await client.submit("missing", "x")
            assert raised.value.field == "module"
            assert "queued" in await client.call("fabric.stats", {})

    asyncio.run(scenario())


def test_https_with_a_private_ca(tls_server):
    assert tls_server.url.startswith("https://")
    with Client(tls_server.url, ca_cert=tls_server.ca_cert) as client:
        client.put_module(ECHO_WASM, name="echo")
        with client.subscribe() as events:
            id = client.submit("echo", "over tls").id
            take_until_terminal(events, id)
        assert client.get(id).output == "over tls"
    with Client(tls_server.url, timeout=5) as untrusting:
        with pytest.raises(TransportError):
            untrusting.stats()
