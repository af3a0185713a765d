"""Per-target circuit breaker: stop sending traffic to a target that keeps failing.

closed -> open after `failures_to_open` consecutive failures; an open target is
skipped without waiting; after `cooldown` exactly one trial (a real request or
a probe) decides half-open -> closed or back to open.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from gateway.config import BreakerConfig

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class Breaker:
    cfg: BreakerConfig
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    trial_in_flight: bool = False

    @property
    def ready_at(self) -> float:
        """When an open breaker will admit its trial."""
        return self.opened_at + self.cfg.cooldown if self.state != CLOSED else 0.0

    def allow(self) -> bool:
        """May a request use this target now? Takes the half-open trial slot if so."""
        if self.state == CLOSED:
            return True
        if self.trial_in_flight:
            return False
        if self.state == OPEN and self.clock() < self.opened_at + self.cfg.cooldown:
            return False
        self.state = HALF_OPEN
        self.trial_in_flight = True
        return True

    def force_trial(self) -> None:
        """Every target is open: take this one's trial now rather than fail untried."""
        if self.state != CLOSED:
            self.state = HALF_OPEN
            self.trial_in_flight = True

    def success(self) -> tuple[str, str] | None:
        self.failures = 0
        self.trial_in_flight = False
        if self.state != CLOSED:
            old, self.state = self.state, CLOSED
            return old, CLOSED
        return None

    def failure(self) -> tuple[str, str] | None:
        self.failures += 1
        was_trial = self.trial_in_flight
        self.trial_in_flight = False
        if self.state == HALF_OPEN or (self.state == OPEN and was_trial):
            old = self.state
            self.state, self.opened_at = OPEN, self.clock()
            return old, OPEN
        if self.state == CLOSED and self.failures >= self.cfg.failures_to_open:
            self.state, self.opened_at = OPEN, self.clock()
            return CLOSED, OPEN
        return None

    def release(self) -> None:
        """The trial ended without a verdict (e.g. the client's own bad request)."""
        if self.trial_in_flight:
            self.trial_in_flight = False
            if self.state == HALF_OPEN:
                # No verdict: stay eligible for another trial right away.
                self.state = OPEN
                self.opened_at = self.clock() - self.cfg.cooldown
