"""The seam between the router and one vendor's wire format.

The router speaks OpenAI chat format in and out; an adapter turns a request
into the vendor's HTTP call, the vendor's answer (body, stream events, error)
back into OpenAI shapes, and every vendor failure into one `ErrorClass` of the
failover contract. Adapters are pure translation: no I/O, so they are cheap
to test table-driven and the router owns every timeout and retry.
"""

from __future__ import annotations

import functools
import itertools
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Literal

import orjson

from gateway.config import VendorConfig


class ErrorClass(str, Enum):
    """Rows of the failover contract table (DESIGN.md)."""

    CONNECT = "connect"                # refused, DNS, TLS: fail over at once
    RESET = "reset"                    # reset/EOF before headers: retry, then fail over
    TIMEOUT = "timeout"                # nothing within first_byte: fail over, no retry
    THROTTLED = "throttled"            # 429: Retry-After or backoff, then fail over
    SERVER = "server"                  # 500/502/503/504/529: backoff, then fail over
    MISCONFIGURED = "misconfigured"    # 401/403/402/404-model: fail over, mark target
    CONTEXT_LENGTH = "context_length"  # fail over only to a larger context window
    CONTENT_POLICY = "content_policy"  # return the vendor's reason
    BAD_REQUEST = "bad_request"        # client's fault: return it
    STREAM_CUT = "stream_cut"          # cut/stall/error after tokens were sent
    PROTOCOL = "protocol"              # vendor answered 200 with something unusable

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @property
    def fails_over(self) -> bool:
        return self not in _RETURNED

    @property
    def counts_against_health(self) -> bool:
        return self in _UNHEALTHY


_RETRYABLE = frozenset({ErrorClass.RESET, ErrorClass.THROTTLED, ErrorClass.SERVER, ErrorClass.PROTOCOL})
_RETURNED = frozenset({ErrorClass.CONTENT_POLICY, ErrorClass.BAD_REQUEST})
_UNHEALTHY = frozenset({ErrorClass.CONNECT, ErrorClass.RESET, ErrorClass.TIMEOUT, ErrorClass.SERVER,
                        ErrorClass.MISCONFIGURED, ErrorClass.STREAM_CUT, ErrorClass.PROTOCOL})


@dataclass(slots=True)
class VendorError(Exception):
    """A classified failure of one attempt."""

    cls: ErrorClass
    message: str
    status: int | None = None
    retry_after: float | None = None
    code: str | None = None

    def __str__(self) -> str:
        s = f" {self.status}" if self.status else ""
        return f"{self.cls.value}{s}: {self.message}"


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    dropped: tuple[str, ...] = ()   # what the client sent that this vendor cannot use and was left out, named


@dataclass(slots=True)
class StreamDelta:
    """One normalised stream event: an OpenAI `delta` dict and/or finish/usage."""

    delta: dict[str, Any] | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None

    @property
    def has_content(self) -> bool:
        d = self.delta
        if not d:
            return False
        return bool(d.get("content") or d.get("tool_calls") or d.get("reasoning_content") or d.get("refusal"))


class StreamDecoder:
    """Turns a vendor's SSE events into StreamDeltas; one per attempt.

    `feed` returns the deltas for one event, raises VendorError for an in-band
    error event, and sets `done` when the vendor's terminal event arrives.
    Malformed events are skipped and counted in `malformed`.
    """

    def __init__(self) -> None:
        self.done = False
        self.malformed = 0

    def feed(self, event: str | None, data: str) -> list[StreamDelta]:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, data: str) -> dict | None:
        """The event's JSON object, or None (counted as malformed) for anything else."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.malformed += 1
            return None
        if not isinstance(obj, dict):
            self.malformed += 1
            return None
        return obj


@dataclass(slots=True)
class ChatResult:
    """A complete non-streaming answer in OpenAI shape (without id/created)."""

    message: dict[str, Any]
    finish_reason: str | None
    usage: dict[str, Any] | None
    extra_choices: list[dict[str, Any]] = field(default_factory=list)


class Adapter:
    """Base class; one instance per vendor."""

    kind: ClassVar[str] = ""
    supports_prefill: ClassVar[bool] = False

    def __init__(self, vendor: VendorConfig):
        self.vendor = vendor

    # requests
    def chat_request(self, body: dict[str, Any], model: str, *, stream: bool,
                     prefill: str | None = None) -> UpstreamRequest:
        raise NotImplementedError

    def probe_request(self, model: str, mode: str) -> UpstreamRequest:
        """mode "models": the unbilled models list; "completion": max_tokens=1."""
        raise NotImplementedError

    # responses
    def parse_chat(self, data: bytes) -> ChatResult:
        raise NotImplementedError

    def stream_decoder(self) -> StreamDecoder:
        raise NotImplementedError

    def classify_error(self, status: int, headers: Any, body: bytes) -> VendorError:
        raise NotImplementedError


REDACTED = "[redacted]"


SECRET_MIN_CHARS = 8   # shorter values are not scrubbed (they would match ordinary text)
PROXY_ENV = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


def proxy_passwords(url: str) -> set[str]:
    """A proxy URL's password as written (percent-encoded) and as sent (decoded); a bare
    user:pass@host:port is read as http://, as the HTTP client reads it."""
    from urllib.parse import unquote, urlsplit

    if not url or not url.strip():
        return set()
    url = url.strip()
    try:
        pw = urlsplit(url if "://" in url else "http://" + url).password
    except ValueError:
        return set()
    return {pw, unquote(pw)} if pw else set()


def env_proxy_secrets(env: Any) -> tuple[str, ...]:
    """The passwords of the proxies the environment names (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, any
    case): the HTTP client sends them to every vendor it reaches through those proxies."""
    values: set[str] = set()
    for name in PROXY_ENV:
        values |= proxy_passwords(env.get(name) or "")
    return tuple(sorted((v for v in values if len(v) >= SECRET_MIN_CHARS), key=len, reverse=True))


def vendor_secrets(vendor: VendorConfig) -> tuple[str, ...]:
    """What this vendor was sent that it must never get to echo into Patchbay's logs, database or answers:
    its API key, its configured header values (relay auth headers) and its proxy's password
    (percent-encoded as configured, and decoded as sent), longest first."""
    values = {vendor.api_key or "", *vendor.headers.values()}
    if vendor.proxy:
        values |= proxy_passwords(vendor.proxy)
    return tuple(sorted((v for v in values if len(v) >= SECRET_MIN_CHARS), key=len, reverse=True))


FRAGMENT_CHARS = 8   # a run this long of any secret is scrubbed, wherever it stands
_PROBE = FRAGMENT_CHARS // 2   # probe stride and probe length (see _covered)


_WORD: Literal["I", ""] = "I" if memoryview(bytes(4)).cast("I").itemsize == 4 else ""   # 4 bytes read as one int
_BLOCK = 256   # words per set test


@functools.lru_cache(maxsize=64)
def _grams(secrets: tuple[Any, ...]) -> tuple[dict, frozenset, frozenset]:
    """The secrets' FRAGMENT_CHARS-grams (each with the secrets that hold it), their _PROBE-grams, and
    those _PROBE-grams that are ASCII as native-order ints (cached: every target shares one tuple)."""
    k, q = FRAGMENT_CHARS, _PROBE
    long = [s for s in secrets if len(s) >= k]
    holders: dict[Any, list] = {}
    for s in long:
        for i in range(len(s) - k + 1):
            h = holders.setdefault(s[i:i + k], [])
            if not h or h[-1] is not s:
                h.append(s)
    probes = frozenset(s[i:i + q] for s in long for i in range(len(s) - q + 1))
    raw = (g.encode("ascii") if isinstance(g, str) else g for g in probes
           if not isinstance(g, str) or g.isascii())   # a str text is read as bytes only when ASCII
    return ({g: (tuple(h), max(map(len, h))) for g, h in holders.items()}, probes,
            frozenset(int.from_bytes(g, sys.byteorder) for g in raw))


def _probe_hits(text: Any, probes: frozenset, words: frozenset) -> list[int]:
    """The positions i, multiples of _PROBE, where text[i:i+_PROBE] is one of `probes`, ascending."""
    q = _PROBE
    raw = text if isinstance(text, bytes) else text.encode("ascii") if text.isascii() else None
    if raw is None or not _WORD:  # non-ASCII str: one slice and lookup per probe, in a comprehension
        return [i for i in range(0, len(text) - q + 1, q) if text[i:i + q] in probes]
    mv = memoryview(raw)[:len(raw) // q * q].cast(_WORD)   # every aligned 4-gram as an int, in C
    hits: list[int] = []
    for start in range(0, len(mv), _BLOCK):
        block = mv[start:start + _BLOCK]
        if words.isdisjoint(block):
            continue  # the usual case: no piece of any secret in these 1 KiB
        hits.extend(itertools.compress(itertools.count(start * q, q), map(words.__contains__, block)))
    return hits


def _covered(text: Any, secrets: tuple[Any, ...]) -> list[tuple[int, int]]:
    """Spans of `text` made of runs of >= FRAGMENT_CHARS characters of some secret, merged.

    A run text[p:p+8] of a secret contains the 4 characters at the one or two positions
    i in p..p+4 that are multiples of 4, and those are a 4-gram of the same secret. So
    only every 4th position is probed against the secrets' 4-grams (in C where the text
    is ASCII: its aligned 4-byte words are ints intersected with a set), and only around
    a hit, at p = i-4..i, are the 8-grams checked: every p the plain scan would find,
    and no other. A match at p is extended to the longest run of one secret there
    (a few substring searches): the 8-runs inside it add nothing to the union, so
    they are skipped. Same spans as the plain scan (tests/test_scrub.py checks it);
    about 10x less CPU on ordinary 64 KiB bodies; on a text made entirely of secret
    fragments every position is checked, as before, plus the probing.
    """
    k, q = FRAGMENT_CHARS, _PROBE
    grams, probes, words = _grams(secrets)
    n = len(text)
    spans: list[tuple[int, int]] = []
    # the windows p = i-4..i of the hits, merged into ranges (dense where a text is full of secrets)
    hits = _probe_hits(text, probes, words)
    ranges: list[list[int]] = []
    if len(hits) * q * 2 > n:  # most aligned positions hit (a text made of secrets): scan it all
        ranges.append([0, n])
    else:
        for i in hits:
            if ranges and i - q <= ranges[-1][1] + 1:
                ranges[-1][1] = i
            else:
                ranges.append([i - q, i])
    p = 0   # every start before this is decided
    for lo, hi in ranges:
        p, top = max(lo, p), min(hi, n - k)
        while p <= top:
            for p in range(p, top + 1):  # (a for loop: the tightest scan Python has)
                if text[p:p + k] in grams:
                    break
            else:
                p = top + 1
                break
            # text[p:p+good] lies in one secret, so does every 8-run starting in p..p+good-8:
            # those add nothing to the union; find how far the run goes, then go on after it
            holders, longest = grams[text[p:p + k]]
            good = k
            if longest > k and p + k < n:  # does the run go on? (inline: most runs are just 8 long)
                ext = text[p:p + k + 1]
                if (ext in holders[0]) if len(holders) == 1 else any(ext in h for h in holders):
                    good = _run(text, p, holders, longest)
            if spans and spans[-1][1] >= p:
                spans[-1] = (spans[-1][0], p + good)
            else:
                spans.append((p, p + good))
            p += good - k + 1
    return spans


def _run(text: Any, p: int, holders: tuple, longest: int) -> int:
    """The longest L such that text[p:p+L] is in one of `holders` (known: L >= FRAGMENT_CHARS)."""
    good = FRAGMENT_CHARS
    cap = min(len(text) - p, longest)
    if good >= cap:
        return good
    one = holders[0] if len(holders) == 1 else None
    bad = cap + 1
    step = 1       # most runs are short (a cut key, a quoted fragment): try one more character first
    while good < cap:  # gallop, then bisect: a few substring searches for a run of any length
        want = min(good + step, cap)
        sub = text[p:p + want]
        if (sub in one) if one is not None else any(sub in s for s in holders):
            good, step = want, step * 2
        else:
            bad = want
            break
    while bad - good > 1:
        mid = (good + bad) // 2
        sub = text[p:p + mid]
        if (sub in one) if one is not None else any(sub in s for s in holders):
            good = mid
        else:
            bad = mid
    return good


def scrub_text(text: Any, secrets: tuple[Any, ...]) -> Any:
    """`text` (str, or bytes with bytes secrets) with every secret, and every fragment of
    FRAGMENT_CHARS or more characters of one, replaced by [redacted].

    Fragments matter because vendors and relays cut what they echo: a key quoted
    near the end of a truncated error page must not leak 33 of its 34 characters.
    Callers scrub before they cut anything, so no cut can leave a shorter piece.
    TypeError if text and secrets are not both str or both bytes (bytes text with
    str secrets would never match: nothing scrubbed, silently).
    """
    if not secrets:
        return text
    want = str if isinstance(text, str) else bytes
    for s in secrets:
        if not isinstance(s, want):
            raise TypeError(f"scrub_text: {type(text).__name__} text with {type(s).__name__} secrets")
    if not text or len(text) < FRAGMENT_CHARS:
        return text
    spans = _covered(text, tuple(secrets))
    if not spans:
        return text
    mark: Any = REDACTED if isinstance(text, str) else REDACTED.encode()
    out = []
    pos = 0
    for a, b in spans:
        out.append(text[pos:a])
        out.append(mark)
        pos = b
    out.append(text[pos:])
    return text[:0].join(out)


def scrub(err: VendorError, secrets: tuple[str, ...]) -> VendorError:
    """Remove echoed secrets, whole or in part, from a vendor's error text (some relays quote the key)."""
    if secrets:
        err.message = scrub_text(err.message, secrets)
        if err.code:
            err.code = scrub_text(err.code, secrets)
    return err


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def status_class(status: int) -> ErrorClass:
    """Default mapping of an HTTP status to the contract, before body inspection."""
    if status == 429:
        return ErrorClass.THROTTLED
    if status in (401, 402, 403, 404):
        return ErrorClass.MISCONFIGURED
    if status >= 500 or status == 408 or status == 529:
        return ErrorClass.SERVER
    if 400 <= status < 500:
        return ErrorClass.BAD_REQUEST
    return ErrorClass.PROTOCOL


CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window",
                   "prompt is too long", "too many tokens", "input token count", "exceeds the context")
POLICY_MARKERS = ("content_policy", "content policy", "content_filter", "safety", "responsible ai",
                  "flagged")


def refine_400(message: str, code: str | None, etype: str | None) -> ErrorClass:
    """Tell context-length and content-policy 400s from other client errors."""
    hay = " ".join(x for x in (message, code or "", etype or "") if x).lower()
    if any(m in hay for m in CONTEXT_MARKERS):
        return ErrorClass.CONTEXT_LENGTH
    if any(m in hay for m in POLICY_MARKERS):
        return ErrorClass.CONTENT_POLICY
    return ErrorClass.BAD_REQUEST
