"""The failover contract (DESIGN.md / README "What each failure does"), row by row, on the real Router.

Each test drives `Router.complete` / `Router.open_stream` over the real Pool and
llhttp parser, with a byte-scripted fake transport underneath (no sockets: the
unit conftest fails any test that opens one), and asserts what the row says:
how many requests each target was sent, whether the client got an answer, and
what health and the breaker were charged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.config_load import parse_config
from gateway.routing.call import Answer, Call, Failed
from gateway.routing.live import Continued, Interrupted, LiveStream
from gateway.routing.router import Router
from gateway.runtime import Runtime
from tests.conftest import RecordingStore
from tests.fake_transport import (
    EOF,
    REFUSE,
    RESET,
    SILENCE,
    SSE_HEAD,
    Delay,
    FakePool,
    anthropic_answer,
    anthropic_error,
    anthropic_sse,
    chunk,
    chunked,
    error,
    openai_answer,
    openai_sse,
    openai_usage_chunk,
)

OPENAI = "http://openai.test/v1/chat/completions"
DEEPSEEK = "http://deepseek.test/v1/chat/completions"
ANTHROPIC = "http://anthropic.test/v1/messages"

GPT, DS, CLAUDE = "openai/gpt-4.1", "deepseek/deepseek-chat", "anthropic/claude-x"
T = {GPT: {"vendor": "openai", "model": "gpt-4.1"}, DS: {"vendor": "deepseek", "model": "deepseek-chat"},
     CLAUDE: {"vendor": "anthropic", "model": "claude-x"}}

FIRST_BYTE = 0.5   # generous: a loaded 2-core CI machine must not turn a slow fake into a timeout
IDLE = 0.2
RETRY_AFTER_MAX = 0.5


class Clock:
    """Virtual monotonic time for the breakers' cooldowns."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


class Setup:
    def __init__(self, *targets: str | dict, fallback: str | None = None, **sections: dict):
        raw: dict[str, Any] = {
            "store": {"path": ":memory:"},
            "timeouts": {"connect": 0.5, "first_byte": FIRST_BYTE, "idle": IDLE, "total": 5},
            "retry": {"max_attempts_per_target": 2, "backoff_base": 0.01, "backoff_max": 0.02,
                      "retry_after_max": RETRY_AFTER_MAX},
            "breaker": {"failures_to_open": 3, "cooldown": 30},
            "prober": {"enabled": False},
            "vendors": {"openai": {"kind": "openai", "base_url": "http://openai.test/v1"},
                        "deepseek": {"kind": "openai", "base_url": "http://deepseek.test/v1"},
                        "anthropic": {"kind": "anthropic", "base_url": "http://anthropic.test"}},
            "routes": [{"name": "chat", "targets": [T[t] if isinstance(t, str) else t for t in (targets or (GPT, DS))],
                        **({"fallback_response": fallback} if fallback else {})}],
            "prices": {GPT: {"input": 2.0, "output": 8.0}, DS: {"input": 0.27, "output": 1.10}},
        }
        for k, v in sections.items():
            raw[k] = {**raw.get(k, {}), **v}
        self.cfg = parse_config(raw, "/nonexistent/patchbay.toml", {})
        self.clock = Clock()
        self.store = RecordingStore()
        self.rt = Runtime(self.cfg, self.store, clock=self.clock, env={})
        self.fake = FakePool.for_config(self.cfg)
        self.router = Router(self.rt, self.fake)
        self.n = 0

    def t(self, tid: str):
        return self.rt.targets[tid]

    def call(self, stream: bool = False, messages: list | None = None) -> Call:
        self.n += 1
        route, targets, fallback = self.rt.resolve("chat")  # type: ignore[misc]
        body: dict[str, Any] = {"model": "chat", "messages": messages or [{"role": "user", "content": "hi"}]}
        if stream:
            body["stream"] = True
        return Call(id=f"req-{self.n}", route=route, targets=targets, fallback=fallback, body=body, stream=stream)

    async def complete(self, **kw: Any) -> tuple[Call, Answer | Failed]:
        c = self.call(**kw)
        return c, await self.router.complete(c)

    def urls(self) -> list[str]:
        """Every target tried, in order (refused connects included), as short names."""
        short = {OPENAI: "openai", DEEPSEEK: "deepseek", ANTHROPIC: "anthropic"}
        return [short.get(u, u) for u in self.fake.log.attempts]


def text_of(res: Answer | Failed) -> str:
    assert isinstance(res, Answer), res
    return res.result.message["content"]


async def relay(live: LiveStream) -> tuple[str, list]:
    """What a door would relay: the text, and every event in order."""
    text, events = "", []
    async for ev in live.events():
        events.append(ev)
        if isinstance(ev, list):
            text += "".join((d.delta or {}).get("content") or "" for d in ev)
    return text, events


@pytest.fixture
def s() -> Setup:
    return Setup()


# ---------------------------------------------------------------------------------------- transport rows


async def test_connection_refused_is_not_retried_and_fails_over_at_once(s):
    s.fake.script(OPENAI, [REFUSE])
    s.fake.script(DEEPSEEK, [openai_answer("from deepseek")])
    c, res = await s.complete()
    assert text_of(res) == "from deepseek" and res.target.id == DS
    assert s.urls() == ["openai", "deepseek"]             # one try on openai: no retry
    assert s.fake.sent_to(OPENAI) == []                     # nothing was sent to it
    assert [a.outcome for a in c.attempts] == ["connect", "ok"] and c.failovers == 1
    assert s.t(GPT).breaker.failures == 1 and s.t(GPT).health.consecutive_failures == 1   # counts against health


@pytest.mark.parametrize("cut", [RESET, EOF], ids=["reset", "eof"])
async def test_reset_or_eof_before_headers_is_retried_within_budget_then_fails_over(s, cut):
    s.fake.script(OPENAI, [cut, cut])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    c, res = await s.complete()
    assert text_of(res) == "ok"
    assert s.urls() == ["openai", "openai", "deepseek"]     # max_attempts_per_target = 2
    assert [a.outcome for a in c.attempts] == ["reset", "reset", "ok"]
    assert s.t(GPT).breaker.failures == 2


async def test_reset_before_headers_then_an_answer_on_the_retry_stays_on_the_target(s):
    s.fake.script(OPENAI, [RESET, openai_answer("second try")])
    c, res = await s.complete()
    assert text_of(res) == "second try" and res.target.id == GPT and c.failovers == 0
    assert s.urls() == ["openai", "openai"]


async def test_nothing_within_first_byte_is_not_retried_and_fails_over(s):
    s.fake.script(OPENAI, [[SILENCE]])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    t0 = time.perf_counter()
    c, res = await s.complete()
    took = time.perf_counter() - t0
    assert text_of(res) == "ok"
    assert s.urls() == ["openai", "deepseek"]               # a silent target is not retried
    assert FIRST_BYTE <= took < FIRST_BYTE + 0.5
    assert [a.outcome for a in c.attempts] == ["timeout", "ok"]
    assert s.t(GPT).breaker.failures == 1


async def test_headers_then_a_stalled_body_fails_the_attempt_not_the_request(s):
    s.fake.script(OPENAI, [[b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{",
                            SILENCE]])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    c, res = await s.complete()
    assert text_of(res) == "ok" and [a.outcome for a in c.attempts] == ["timeout", "ok"]


# ---------------------------------------------------------------------------------------- 429 rows


async def test_429_with_retry_after_within_max_waits_then_retries_the_same_target(s):
    s.fake.script(OPENAI, [error(429, "slow down", retry_after="0.15"), openai_answer("after the wait")])
    c, res = await s.complete()
    assert text_of(res) == "after the wait" and res.target.id == GPT and c.failovers == 0
    first, second = s.fake.sent_to(OPENAI)
    assert second.at - first.at >= 0.15 - 0.01             # it waited Retry-After
    assert s.t(GPT).breaker.failures == 0                  # throttled, not down


@pytest.mark.parametrize("retry_after,total", [("3", 5), ("0.4", 0.3)],
                         ids=["longer-than-retry_after_max", "within-max-but-past-the-total-budget"])
async def test_429_with_a_retry_after_that_cannot_be_waited_fails_over_at_once(retry_after, total):
    s = Setup(timeouts={"total": total})
    s.fake.script(OPENAI, [error(429, "slow down", retry_after=retry_after)])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    _c, res = await s.complete()
    assert text_of(res) == "ok"
    assert s.urls() == ["openai", "deepseek"]
    (r1,), (r2,) = s.fake.sent_to(OPENAI), s.fake.sent_to(DEEPSEEK)
    assert r2.at - r1.at < 0.3                              # no waiting (Retry-After is 3 s or 0.4 s)
    assert s.t(GPT).breaker.failures == 0 and s.rt.target_state(s.t(GPT)) == "throttled"


async def test_429_without_retry_after_backs_off_retries_then_fails_over_as_throttled_not_down(s):
    s.fake.script(OPENAI, [error(429, "rate limited"), error(429, "rate limited")])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    c, res = await s.complete()
    assert text_of(res) == "ok"
    assert s.urls() == ["openai", "openai", "deepseek"]
    r1, r2 = s.fake.sent_to(OPENAI)
    assert r2.at - r1.at >= 0.01 / 2 - 0.002                # backoff with jitter: at least base/2
    assert [a.outcome for a in c.attempts] == ["throttled", "throttled", "ok"]
    t = s.t(GPT)
    assert t.breaker.failures == 0 and t.breaker.state == "closed"   # not a breaker failure
    assert s.rt.target_state(t) == "throttled"


# ---------------------------------------------------------------------------------------- 5xx rows


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_backs_off_retries_fails_over_and_is_charged_to_health_and_breaker(s, status):
    s.fake.script(OPENAI, [error(status, "boom"), error(status, "boom")])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    c, res = await s.complete()
    assert text_of(res) == "ok" and res.target.id == DS
    assert s.urls() == ["openai", "openai", "deepseek"]
    assert [(a.outcome, a.http_status) for a in c.attempts] == [("server", status), ("server", status), ("ok", 200)]
    assert s.t(GPT).breaker.failures == 2 and s.rt.target_state(s.t(GPT)) == "down"


async def test_anthropic_529_overloaded_backs_off_retries_and_fails_over():
    s = Setup(CLAUDE, GPT)
    s.fake.script(ANTHROPIC, [anthropic_error(529, "overloaded_error", "Overloaded")] * 2)
    s.fake.script(OPENAI, [openai_answer("ok")])
    c, res = await s.complete()
    assert text_of(res) == "ok"
    assert s.urls() == ["anthropic", "anthropic", "openai"]
    assert [a.outcome for a in c.attempts] == ["server", "server", "ok"]
    assert s.t(CLAUDE).breaker.failures == 2


# ---------------------------------------------------------------------------------------- misconfigured


@pytest.mark.parametrize("reply", [error(401, "Incorrect API key provided", code="invalid_api_key"),
                                   error(403, "forbidden"),
                                   error(402, "billing hard limit reached"),
                                   error(429, "You exceeded your current quota", code="insufficient_quota"),
                                   error(404, "The model `gpt-4.1` does not exist", code="model_not_found")],
                         ids=["401", "403", "402", "429-insufficient_quota", "404-model"])
async def test_auth_billing_and_unknown_model_are_not_retried_fail_over_and_mark_the_target_misconfigured(s, reply):
    s.fake.script(OPENAI, [reply])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    c, res = await s.complete()
    assert text_of(res) == "ok"
    assert s.urls() == ["openai", "deepseek"]
    assert c.attempts[0].outcome == "misconfigured"
    assert s.rt.target_state(s.t(GPT)) == "misconfigured"


# ---------------------------------------------------------------------------------------- the client's own errors

CONTEXT = error(400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded")


async def test_context_length_fails_over_to_a_target_with_a_larger_window():
    s = Setup({**T[GPT], "context_window": 8192}, {**T[DS], "context_window": 128000})
    s.fake.script(OPENAI, [CONTEXT])
    s.fake.script(DEEPSEEK, [openai_answer("fits")])
    _c, res = await s.complete()
    assert text_of(res) == "fits" and s.urls() == ["openai", "deepseek"]
    assert s.t(GPT).breaker.failures == 0 and s.rt.target_state(s.t(GPT)) == "healthy"   # not charged


@pytest.mark.parametrize("targets", [
    ({**T[GPT], "context_window": 8192}, {**T[DS], "context_window": 4096}),
    ({**T[GPT], "context_window": 8192}, {**T[DS], "context_window": 8192}),
    (T[GPT],),
], ids=["next-is-smaller", "next-is-equal", "no-other-target"])
async def test_context_length_is_returned_when_no_target_has_a_larger_window(targets):
    s = Setup(*targets)
    s.fake.script(OPENAI, [CONTEXT])
    _c, res = await s.complete()
    assert isinstance(res, Failed) and res.fallback is None
    assert (res.error.status, res.error.code, res.error.param) == (400, "context_length_exceeded", "messages")
    assert s.urls() == ["openai"]                           # a smaller window is not even tried
    assert s.t(GPT).breaker.failures == 0


async def test_content_policy_refusal_is_returned_with_the_vendors_reason_and_not_failed_over(s):
    s.fake.script(OPENAI, [error(400, "Your request was flagged by our safety system",
                                 code="content_policy_violation")])
    c, res = await s.complete()
    assert isinstance(res, Failed) and res.outcome == "client_error"
    assert res.error.code == "content_policy_violation" and "safety system" in res.error.message
    assert s.urls() == ["openai"] and c.failovers == 0
    assert s.t(GPT).breaker.failures == 0 and s.rt.target_state(s.t(GPT)) == "healthy"


@pytest.mark.parametrize("status", [400, 422])
async def test_other_400_and_422_are_returned_as_the_clients_error_not_retried_not_failed_over(s, status):
    s.fake.script(OPENAI, [error(status, "'temperature' must be <= 2", code="invalid_value")])
    _c, res = await s.complete()
    assert isinstance(res, Failed) and res.error.status == status and res.error.code == "invalid_value"
    assert res.outcome == "client_error"
    assert s.urls() == ["openai"]
    assert s.t(GPT).breaker.failures == 0


# ------------------------------------------------------------------------------- stream: before the first token


@pytest.mark.parametrize("reply", [
    [error(503, "down")],
    [[SSE_HEAD, chunked(chunk({"role": "assistant", "content": ""})),
      chunked(b'data: {"error": {"message": "oops"}}\n\n'), b"0\r\n\r\n"]],
    [[SSE_HEAD, chunked(chunk({"role": "assistant", "content": ""})), RESET]],
    [[SSE_HEAD, chunked(chunk({"role": "assistant", "content": ""})), SILENCE]],
    [[SILENCE]],
], ids=["http-503", "error-event", "reset-after-headers", "silence-after-headers", "no-headers"])
async def test_stream_error_or_silence_before_the_first_token_fails_over_invisibly(reply):
    s = Setup(retry={"max_attempts_per_target": 1})
    s.fake.script(OPENAI, reply)
    s.fake.script(DEEPSEEK, [openai_sse("Hello", " world")])
    c = s.call(stream=True)
    live = await s.router.open_stream(c)
    assert isinstance(live, LiveStream) and live.target.id == DS
    text, events = await relay(live)
    assert text == "Hello world"
    assert not any(isinstance(e, (Continued, Interrupted)) for e in events)   # the client saw one clean stream
    assert live.outcome == "ok" and s.urls() == ["openai", "deepseek"]
    assert s.t(GPT).breaker.failures == 1


# ---------------------------------------------------------------------------------------- stream: after tokens

PARTIAL = [SSE_HEAD, chunked(chunk({"role": "assistant", "content": ""})), chunked(chunk({"content": "The answer"}))]
CUTS = {
    "reset": [*PARTIAL, RESET],
    "eof-without-finish": [*PARTIAL, b"0\r\n\r\n"],
    "stall": [*PARTIAL, SILENCE],
    "error-event": [*PARTIAL, chunked(b'data: {"error": {"message": "overloaded"}}\n\n')],
}


@pytest.mark.parametrize("cut", CUTS, ids=list(CUTS))
async def test_stream_cut_after_tokens_continues_on_a_prefill_target_with_the_partial_answer(cut):
    s = Setup(GPT, DS, {**T[CLAUDE], "prefill": True})
    s.fake.script(OPENAI, [CUTS[cut]])
    s.fake.script(ANTHROPIC, [anthropic_sse(" is 42.")])
    c = s.call(stream=True)
    live = await s.router.open_stream(c)
    assert isinstance(live, LiveStream) and live.target.id == GPT
    text, events = await relay(live)
    assert text == "The answer is 42."
    assert [type(e).__name__ for e in events if not isinstance(e, list)] == ["Continued"]
    assert live.outcome == "ok" and live.target.id == CLAUDE
    # deepseek is not prefill: skipped; the continuation carries the original messages + the partial answer
    assert s.urls() == ["openai", "anthropic"]
    (cont,) = s.fake.sent_to(ANTHROPIC)
    assert cont.json()["messages"][-1] == {"role": "assistant", "content": "The answer"}
    assert cont.json()["messages"][0]["content"] in ("hi", [{"type": "text", "text": "hi"}])
    assert [(a.target, a.outcome, a.continuation) for a in c.attempts] == [
        (GPT, "ok", False), (GPT, "stream_cut", False), (CLAUDE, "ok", True)]
    assert s.t(GPT).breaker.failures == 1                   # the cut counts against health


@pytest.mark.parametrize("cut", ["reset", "stall"])
async def test_stream_cut_after_tokens_without_a_prefill_target_ends_interrupted_and_cut(cut):
    s = Setup(GPT, DS)
    s.fake.script(OPENAI, [CUTS[cut]])
    c = s.call(stream=True)
    live = await s.router.open_stream(c)
    text, events = await relay(live)
    assert text == "The answer"
    assert isinstance(events[-1], Interrupted) and not any(isinstance(e, Continued) for e in events)
    assert live.outcome == "cut" and live.target.id == GPT
    assert s.urls() == ["openai"]                           # never restarted on a non-prefill target
    assert s.t(GPT).breaker.failures == 1


async def test_stream_one_malformed_event_is_skipped_and_counted():
    s = Setup()
    steps = openai_sse("one", "two")
    steps.insert(3, chunked(b"data: {not json\n\n"))
    s.fake.script(OPENAI, [steps])
    c = s.call(stream=True)
    live = await s.router.open_stream(c)
    text, _events = await relay(live)
    assert text == "onetwo" and live.outcome == "ok"
    assert c.malformed == 1
    assert s.urls() == ["openai"] and s.t(GPT).breaker.failures == 0


@pytest.mark.parametrize("after_finish", ["silence", "end-of-body"])
async def test_stream_complete_without_done_finishes_promptly(after_finish):
    s = Setup(timeouts={"idle": 3})
    steps = openai_sse("all", " here", done=False, end=after_finish == "end-of-body", usage=(3, 2))
    if after_finish == "silence":
        steps.append(SILENCE)
    s.fake.script(OPENAI, [steps])
    c = s.call(stream=True)
    live = await s.router.open_stream(c)
    t0 = time.perf_counter()
    text, events = await relay(live)
    assert text == "all here" and live.outcome == "ok" and not any(isinstance(e, Interrupted) for e in events)
    assert time.perf_counter() - t0 < 1.0                   # FINISH_GRACE_S, not idle (3 s)
    assert s.t(GPT).breaker.failures == 0


# ---------------------------------------------------------------------------------------- breaker


async def test_breaker_opens_after_failures_to_open_and_open_targets_are_skipped_without_a_request():
    s = Setup(retry={"max_attempts_per_target": 1})
    s.fake.script(OPENAI, [error(503)] * 3)
    s.fake.script(DEEPSEEK, [openai_answer("ok")] * 4)
    for _ in range(3):
        await s.complete()
    assert s.t(GPT).breaker.state == "open"
    assert [e.detail["to"] for e in s.store.of("EventRow") if e.kind == "breaker"] == ["open"]
    before = len(s.fake.sent_to(OPENAI))
    t0 = time.perf_counter()
    c, res = await s.complete()
    assert text_of(res) == "ok" and time.perf_counter() - t0 < 0.25  # skipped without waiting
    assert len(s.fake.sent_to(OPENAI)) == before == 3
    assert [a.target for a in c.attempts] == [DS]


async def test_half_open_admits_a_single_trial_after_cooldown_and_its_success_closes_the_breaker():
    s = Setup(retry={"max_attempts_per_target": 1})
    s.fake.script(OPENAI, [error(503)] * 3)
    s.fake.script(DEEPSEEK, [openai_answer("ds")] * 5)
    for _ in range(3):
        await s.complete()
    b = s.t(GPT).breaker
    assert b.state == "open"
    s.clock.advance(29)
    _, res = await s.complete()
    assert res.target.id == DS                              # cooldown not over: still skipped
    s.clock.advance(1)
    s.fake.script(OPENAI, [[Delay(0.1), *[openai_answer("trial")]]])
    trial = asyncio.ensure_future(s.complete())
    await asyncio.sleep(0.02)
    assert b.state == "half_open" and b.trial_in_flight
    _, other = await s.complete()                           # meanwhile: no second trial
    assert other.target.id == DS
    _, res = await trial
    assert text_of(res) == "trial" and b.state == "closed"
    assert len(s.fake.sent_to(OPENAI)) == 4


async def test_half_open_trial_failure_opens_the_breaker_again():
    s = Setup(retry={"max_attempts_per_target": 1})
    s.fake.script(OPENAI, [error(503)] * 4)
    s.fake.script(DEEPSEEK, [openai_answer("ds")] * 4)
    for _ in range(3):
        await s.complete()
    s.clock.advance(30)
    _, res = await s.complete()
    b = s.t(GPT).breaker
    assert res.target.id == DS and b.state == "open" and b.opened_at == s.clock.now
    moves = [(e.detail["from"], e.detail["to"]) for e in s.store.of("EventRow") if e.kind == "breaker"]
    assert moves == [("closed", "open"), ("half_open", "open")]


async def test_when_every_target_is_open_the_one_closest_to_recovery_is_tried():
    s = Setup(retry={"max_attempts_per_target": 1})
    s.fake.script(DEEPSEEK, [error(503)] * 3)
    for _ in range(3):
        s.fake.script(OPENAI, [REFUSE])
    s.fake.script(OPENAI, [openai_answer("unused")])
    # deepseek opens first (closest to recovery), then openai
    s.t(DS).breaker.failures = 0
    for _ in range(3):
        await s.router.complete(Call(id="x", route="chat", targets=[s.t(DS)], fallback=None,
                                     body={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                                     stream=False))
    s.clock.advance(5)
    for _ in range(3):
        await s.router.complete(Call(id="y", route="chat", targets=[s.t(GPT)], fallback=None,
                                     body={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                                     stream=False))
    assert s.t(GPT).breaker.state == s.t(DS).breaker.state == "open"
    s.fake.script(DEEPSEEK, [openai_answer("tried anyway")])
    c, res = await s.complete()
    assert text_of(res) == "tried anyway" and res.target.id == DS
    assert [a.target for a in c.attempts] == [DS]
    assert s.t(DS).breaker.state == "closed"


# ---------------------------------------------------------------------------------------- all failing


async def test_all_targets_failing_serves_the_fallback_response_when_configured():
    s = Setup(fallback="Briefly unavailable.", retry={"max_attempts_per_target": 1})
    s.fake.script(OPENAI, [error(503)])
    s.fake.script(DEEPSEEK, [error(502)])
    _c, res = await s.complete()
    assert isinstance(res, Failed) and res.fallback == "Briefly unavailable." and res.outcome == "fallback"
    assert s.urls() == ["openai", "deepseek"]


@pytest.mark.parametrize("replies,code", [
    ((error(503), REFUSE), "all_targets_failed"),
    ((error(429), error(429, retry_after="9")), "rate_limited"),
], ids=["all_targets_failed", "rate_limited"])
async def test_all_targets_failing_without_fallback_is_a_503_with_a_code_saying_why(replies, code):
    s = Setup(retry={"max_attempts_per_target": 1})
    s.fake.script(OPENAI, [replies[0]])
    s.fake.script(DEEPSEEK, [replies[1]])
    _c, res = await s.complete()
    assert isinstance(res, Failed) and res.fallback is None
    assert (res.error.status, res.error.code) == (503, code)
    assert GPT in res.error.message and DS in res.error.message   # lists what each target said


async def test_total_budget_exhausted_is_a_timeout_charged_to_no_vendor():
    s = Setup(timeouts={"total": 0.3, "first_byte": 1})
    s.fake.script(OPENAI, [[SILENCE]])
    s.fake.script(DEEPSEEK, [openai_answer("too late")])
    t0 = time.perf_counter()
    _c, res = await s.complete()
    assert time.perf_counter() - t0 < 0.6
    assert isinstance(res, Failed) and (res.error.status, res.error.code) == (503, "timeout")
    assert res.cause is not None and res.cause.code == "total_timeout"
    assert s.urls() == ["openai"]                           # no time left for deepseek
    t = s.t(GPT)
    assert t.breaker.failures == 0 and t.health.consecutive_failures == 0 and t.health.last_error is None


# ---------------------------------------------------------------------------------------- accounting


async def test_accounting_answer_target_and_usage_come_from_the_answering_attempt(s):
    s.fake.script(OPENAI, [error(500), error(500)])
    s.fake.script(DEEPSEEK, [openai_answer("ok", model="deepseek-chat", prompt_tokens=1000, completion_tokens=500)])
    c, res = await s.complete()
    assert isinstance(res, Answer) and res.target.id == DS
    assert res.result.usage["prompt_tokens"] == 1000 and res.result.usage["completion_tokens"] == 500
    assert res.cost == pytest.approx((1000 * 0.27 + 500 * 1.10) / 1e6)
    assert [(a.target, a.outcome) for a in c.attempts] == [(GPT, "server"), (GPT, "server"), (DS, "ok")]
    # the request sent to deepseek named deepseek's model
    assert s.fake.sent_to(DEEPSEEK)[0].json()["model"] == "deepseek-chat"


async def test_accounting_after_a_continuation_counts_both_attempts_tokens():
    s = Setup(GPT, {**T[CLAUDE], "prefill": True})
    s.fake.script(OPENAI, [[*PARTIAL[:3], chunked(openai_usage_chunk(10, 3)), RESET]])
    s.fake.script(ANTHROPIC, [anthropic_sse(" done", input_tokens=12, output_tokens=4)])
    c = s.call(stream=True)
    live = await s.router.open_stream(c)
    text, _ = await relay(live)
    assert text == "The answer done" and live.outcome == "ok"
    assert live.state.total_usage() == {"prompt_tokens": 22, "completion_tokens": 7, "total_tokens": 29}


async def test_the_fake_transport_reuses_keep_alive_connections_like_the_real_pool(s):
    s.fake.script(OPENAI, [openai_answer("a"), openai_answer("b")])
    assert text_of((await s.complete())[1]) == "a"
    assert text_of((await s.complete())[1]) == "b"
    assert s.fake.connections == 1 and s.fake.unscripted == []


async def test_the_anthropic_answer_builder_is_a_message_the_adapter_reads():
    s2 = Setup(CLAUDE)
    s2.fake.script(ANTHROPIC, [anthropic_answer("hello", 5, 6)])
    _, res = await s2.complete()
    assert text_of(res) == "hello" and res.result.usage["completion_tokens"] == 6


# ---------------------------------------------------------------------------------------- HTTP edges (README rows)


async def test_interim_1xx_responses_before_the_answer_are_skipped(s):
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n"
    s.fake.script(OPENAI, [[interim, interim, openai_answer("after hints")]])
    c, res = await s.complete()
    assert text_of(res) == "after hints" and s.urls() == ["openai"] and c.failovers == 0


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
], ids=["malformed-http", "unasked-content-encoding", "unexpected-101"])
async def test_broken_http_is_retried_as_a_protocol_error_then_fails_over_on_a_fresh_connection(s, reply):
    s.fake.script(OPENAI, [reply, reply])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    c, res = await s.complete()
    assert text_of(res) == "ok"
    assert [a.outcome for a in c.attempts] == ["protocol", "protocol", "ok"]
    assert s.fake.connections == 3                          # a broken connection is never reused
    assert s.t(GPT).breaker.failures == 2


async def test_bytes_after_an_answer_close_the_connection_so_they_never_reach_the_next_caller(s):
    s.fake.script(OPENAI, [openai_answer("first") + b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale",
                           openai_answer("second")])
    _, first = await s.complete()
    _, second = await s.complete()
    assert text_of(first) == "first" and text_of(second) == "second"
    assert s.fake.connections == 2


async def test_an_answer_over_max_body_bytes_is_not_retried_on_the_same_target_and_fails_over():
    s = Setup(upstream={"max_body_bytes": 1000})
    s.fake.script(OPENAI, [openai_answer("x" * 2000)])
    s.fake.script(DEEPSEEK, [openai_answer("small")])
    c, res = await s.complete()
    assert text_of(res) == "small" and s.urls() == ["openai", "deepseek"]
    assert c.attempts[0].outcome == "protocol"


async def test_a_header_block_over_max_header_bytes_is_a_protocol_failure_and_fails_over():
    s = Setup(upstream={"max_header_bytes": 2048}, retry={"max_attempts_per_target": 1})
    big = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-pad-%d: %s\r\n" % (i, b"y" * 100) for i in range(40))
    s.fake.script(OPENAI, [[big, SILENCE]])
    s.fake.script(DEEPSEEK, [openai_answer("ok")])
    c, res = await s.complete()
    assert text_of(res) == "ok" and c.attempts[0].outcome == "protocol"


async def test_a_body_trickled_until_the_total_budget_is_gone_is_a_timeout_charged_to_no_vendor():
    s = Setup(timeouts={"total": 0.5, "idle": 0.2})
    body = openai_answer("slow")
    head_end = body.index(b"\r\n\r\n") + 4
    steps: list = [body[:head_end]]
    for b in body[head_end:]:
        steps += [Delay(0.05), bytes([b])]
    s.fake.script(OPENAI, [steps])
    _c, res = await s.complete()
    assert isinstance(res, Failed) and res.error.code == "timeout"
    assert s.urls() == ["openai"]
    assert s.t(GPT).breaker.failures == 0 and s.t(GPT).health.last_error is None


async def test_a_non_stream_body_cut_midway_is_never_returned_in_part(s):
    body = openai_answer("complete answer")
    s.fake.script(OPENAI, [[body[:-10], RESET], [body[:-10], RESET]])
    s.fake.script(DEEPSEEK, [openai_answer("whole")])
    c, res = await s.complete()
    assert text_of(res) == "whole"
    assert [a.outcome for a in c.attempts] == ["reset", "reset", "ok"]


async def test_an_sse_event_over_max_event_bytes_before_the_first_token_fails_over_invisibly():
    s = Setup(upstream={"max_event_bytes": 1024}, retry={"max_attempts_per_target": 1})
    s.fake.script(OPENAI, [[SSE_HEAD, chunked(b"data: " + b"x" * 4096 + b"\n\n"), SILENCE]])
    s.fake.script(DEEPSEEK, [openai_sse("fine")])
    c = s.call(stream=True)
    live = await s.router.open_stream(c)
    assert isinstance(live, LiveStream) and live.target.id == DS
    text, _ = await relay(live)
    assert text == "fine" and c.attempts[0].outcome == "protocol"
