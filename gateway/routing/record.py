"""The request-log row of a finished call, with its attempt rows, handed to the store's queue.

Called once per request by the door that served it (it alone knows when the
client got the last byte, or left); never blocks: the store only enqueues.
"""

from __future__ import annotations

import time

import orjson

from gateway.routing.call import Call, Failed
from gateway.runtime import Runtime, Target
from store.records import RequestRow


def record(rt: Runtime, call: Call, outcome: str, status: int, target: Target | None = None,
           usage: dict | None = None, cost: float | None = None, ttft_ms: float | None = None,
           err_cls: str | None = None, err_msg: str | None = None, overhead_ms: float | None = None,
           answer: str | bytes | None = None) -> None:
    latency_ms = round((time.perf_counter() - call.t0) * 1000, 3)
    row = RequestRow(
        id=call.id, ts=call.ts, route=call.route, stream=call.stream, outcome=outcome, http_status=status,
        client_key_id=call.client_key_id, final_target=target.id if target else None,
        model=target.cfg.model if target else None, attempts=len(call.attempts), failovers=call.failovers,
        latency_ms=latency_ms, ttft_ms=ttft_ms,
        overhead_ms=overhead_ms if overhead_ms is not None else call.overhead_ms(),
        prompt_tokens=(usage or {}).get("prompt_tokens"), completion_tokens=(usage or {}).get("completion_tokens"),
        cost=cost, error_class=err_cls, error_message=err_msg[:1000] if err_msg else None, drill_id=call.drill_id,
        skipped_open=",".join(call.skipped_open) or None, api=call.api, dropped=",".join(call.dropped) or None,
    )
    if rt.config.store.log_bodies:
        try:
            row.request_body = orjson.dumps(call.body).decode()
        except TypeError:  # nested deeper than orjson writes: the client's 400 must not become a 500
            row.request_body = None
        if answer is not None:
            row.response_body = answer.decode() if isinstance(answer, bytes) else answer
    if outcome == "ok" and target is not None:   # the tile's latency is the log's latency
        target.health.answered(latency_ms, ttft_ms)
    store = rt.store
    store.put(row)
    for a in call.attempts:
        store.put(a)
    if row.drill_id is not None:
        for listener in rt.drill_request_listeners:
            listener(row)
    if call.malformed:
        rt.malformed_events += call.malformed
    for observe in rt.request_observers:   # metrics; traces when OTEL_* is set
        observe(row, call)


def record_failed(rt: Runtime, call: Call, failed: Failed, overhead_ms: float) -> None:
    """A call that got no answer: the fallback text was served, or an error went back."""
    status = 200 if failed.outcome == "fallback" else failed.error.status
    record(rt, call, failed.outcome, status, None, err_cls=failed.error_class, err_msg=failed.detail,
           overhead_ms=overhead_ms)
