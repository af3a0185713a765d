"""Per-target circuit breaker: stop sending traffic to a target that keeps failing.

closed -> open after `failures_to_open` consecutive failures; an open target is
skipped without waiting; after `cooldown` exactly one trial (a real request or
a probe) decides half-open -> closed or back to open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    trial_owner: object = field(default=None, repr=False, compare=False)

    @property
    def ready_at(self) -> float:
        """When an open breaker will admit its trial."""
        return self.opened_at + self.cfg.cooldown if self.state != CLOSED else 0.0

    def allow(self, owner: object = None) -> bool:
        """May a request use this target now? Takes the half-open trial slot (for `owner`) if so."""
        if self.state == CLOSED:
            return True
        if self.trial_in_flight:
            return self.trial_owner is owner and owner is not None  # the trial's own retry
        if self.state == OPEN and self.clock() < self.opened_at + self.cfg.cooldown:
            return False
        self.state = HALF_OPEN
        self.trial_in_flight = True
        self.trial_owner = owner
        return True

    def force_trial(self, owner: object = None) -> None:
        """Every target is open: take this one's trial now rather than fail untried."""
        if self.state != CLOSED:
            self.state = HALF_OPEN
            self.trial_in_flight = True
            self.trial_owner = owner

    def _others_trial(self, owner: object) -> bool:
        """A trial is running and `owner` is not running it: its verdict is not ours to give."""
        return self.trial_in_flight and owner is not None and self.trial_owner is not owner

    def success(self, owner: object = None) -> tuple[str, str] | None:
        if self._others_trial(owner):
            return None
        self.failures = 0
        self.trial_in_flight = False
        self.trial_owner = None
        if self.state != CLOSED:
            old, self.state = self.state, CLOSED
            return old, CLOSED
        return None

    def failure(self, owner: object = None) -> tuple[str, str] | None:
        if self._others_trial(owner):
            return None
        self.failures += 1
        was_trial = self.trial_in_flight
        self.trial_in_flight = False
        self.trial_owner = None
        if self.state == HALF_OPEN or (self.state == OPEN and was_trial):
            old = self.state
            self.state, self.opened_at = OPEN, self.clock()
            return old, OPEN
        if self.state == CLOSED and self.failures >= self.cfg.failures_to_open:
            self.state, self.opened_at = OPEN, self.clock()
            return CLOSED, OPEN
        return None

    def release(self, owner: object = None) -> None:
        """The trial ended without a verdict (e.g. the client's own bad request)."""
        if self.trial_in_flight and not self._others_trial(owner):
            self.trial_in_flight = False
            self.trial_owner = None
            if self.state == HALF_OPEN:
                # No verdict: stay eligible for another trial right away.
                self.state = OPEN
                self.opened_at = self.clock() - self.cfg.cooldown
