"""The caller's trace context on every call: with OpenTelemetry, the current span's
``traceparent`` (and ``tracestate``) reach the server; without it, or outside a span,
nothing is sent. A local HTTP server records the headers each call carried."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, List

import pytest

import fabric_client.tracing as tracing
from fabric_client import AsyncClient, Client


@pytest.fixture
def recorder() -> Iterator[tuple]:
    """A server answering every JSON-RPC call with ``{}`` and keeping its headers."""
    seen: List[Dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            length = int(self.headers.get("content-length", 0))
            request = json.loads(self.rfile.read(length))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_a_call_inside_a_span_sends_its_traceparent(recorder):
    trace = pytest.importorskip("opentelemetry.sdk.trace", reason="the test extra installs it")

    url, seen = recorder
    tracer = trace.TracerProvider().get_tracer("test")
    with Client(url) as client:
        client.call("fabric.stats")
        with tracer.start_as_current_span("caller") as span:
            client.call("fabric.stats")
            context = span.get_span_context()

            async def async_call() -> None:
                async with AsyncClient(url) as async_client:
                    await async_client.call("fabric.stats")

            asyncio.run(async_call())
    assert "traceparent" not in seen[0], "outside a span nothing is sent"
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    assert seen[1]["traceparent"] == expected
    assert seen[2]["traceparent"] == expected, "the async client sends it too"
    assert "baggage" not in seen[1]


def test_without_opentelemetry_no_trace_header_is_sent(recorder, monkeypatch):
    url, seen = recorder
    monkeypatch.setattr(tracing, "_inject", None)  # as when the import failed
    with Client(url) as client:
        client.call("fabric.stats")
    assert "traceparent" not in seen[0]
    assert tracing.trace_headers() == {}


def test_a_failing_propagator_never_fails_a_call(recorder, monkeypatch):
    url, seen = recorder

    def broken(carrier: Dict[str, str]) -> None:
        raise RuntimeError("broken propagator")

    monkeypatch.setattr(tracing, "_inject", broken)
    with Client(url) as client:
        assert client.call("fabric.stats") == {}
    assert "traceparent" not in seen[0]
