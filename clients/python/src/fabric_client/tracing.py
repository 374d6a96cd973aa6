"""The caller's W3C trace context for each call: when the optional ``opentelemetry`` package
is importable, the current context's ``traceparent`` (and ``tracestate``) headers, so that a
submitted task's spans join the caller's trace; nothing otherwise (no new dependency)."""

from __future__ import annotations

from typing import Any, Dict, Optional

#: The headers the W3C trace context propagator sets; nothing else (not baggage) is sent.
TRACE_HEADERS = ("traceparent", "tracestate")

_UNSET: Any = object()
_inject: Any = _UNSET


def _injector() -> Optional[Any]:
    """``opentelemetry.propagate.inject``, imported once; ``None`` when not installed."""
    global _inject
    if _inject is _UNSET:
        try:
            from opentelemetry.propagate import inject
        except ImportError:
            inject = None
        _inject = inject
    return _inject


def trace_headers() -> Dict[str, str]:
    """The current trace context as headers; empty without OpenTelemetry or a current span."""
    inject = _injector()
    if inject is None:
        return {}
    carrier: Dict[str, str] = {}
    try:
        inject(carrier)
    except Exception:  # a broken propagator must never fail a call
        return {}
    return {k: v for k, v in carrier.items() if k.lower() in TRACE_HEADERS}
