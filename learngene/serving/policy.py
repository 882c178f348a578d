"""Which member answers, under a latency budget and the load of the moment (torch-free).

The frontier is this host's: every member's p90 latency at batch 1 from the pool's bench
report (the same runtime the server runs), and its test top1. A request names a member, or the
pool's virtual model with a budget (``parameters.max_latency_ms``, else ``--slo-ms``) and an
optional floor (``parameters.min_top1``).

The policy, for the virtual model:

1. the work ahead of a new request is the sum of the frontier latencies of the requests in
   flight (the worker serves one batch at a time, so this is what it must finish first);
2. what the frontier does not hold (HTTP, the engine's queues, decoding: milliseconds that do
   not shrink with the member) is learnt as an additive overhead, an exponential average of
   measured minus predicted work of finished requests (never below 0); under load it also
   absorbs whatever the sum in (1) misses;
3. the most accurate member whose predicted completion ``overhead + ahead + latency`` fits the
   budget (and whose top1 meets the floor) answers; none fits: 503 with ``Retry-After`` (the
   seconds the work ahead needs), since a request that would miss its budget anyway is
   better retried than queued;
4. in flight beyond ``max_queue`` requests (any model, named members too): 503.

Without a budget the most accurate member (above the floor) answers. A named member always
answers itself: a client that names one asked for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class Overloaded(Exception):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class NoMember(ValueError):
    """No member meets the request's floor or budget even on an idle server: a bad request."""


@dataclass(frozen=True)
class Choice:
    member: str
    predicted_ms: float


@dataclass
class Scheduler:
    latency_ms: dict[str, float]  # member -> p90 at batch 1 on this host
    top1: dict[str, float]  # member -> test top1
    slo_ms: float | None = None
    max_queue: int = 64
    smoothing: float = 0.2
    overhead_ms: float = 0.0
    in_flight: dict[int, tuple[str, float]] = field(default_factory=dict)  # ticket -> (member, predicted)
    _next: int = 0

    def __post_init__(self):
        # most accurate first; ties: the faster
        self.order = sorted(self.latency_ms, key=lambda m: (-self.top1.get(m, 0.0), self.latency_ms[m]))

    @property
    def ahead_ms(self) -> float:
        return sum(self.latency_ms[m] for m, _ in self.in_flight.values())

    def choose(self, member: str | None = None, budget_ms: float | None = None, min_top1: float | None = None):
        """(ticket, Choice) for a request; `Overloaded` or `NoMember` when it cannot be served."""
        if len(self.in_flight) >= self.max_queue:
            raise Overloaded(
                f"{len(self.in_flight)} requests in flight (the queue holds {self.max_queue})",
                math.ceil((self.overhead_ms + self.ahead_ms) / 1000),
            )
        ahead = self.ahead_ms
        if member is not None:
            pick = member
        else:
            budget = budget_ms if budget_ms is not None else self.slo_ms
            floor = [m for m in self.order if min_top1 is None or self.top1.get(m, 0.0) >= min_top1]
            if not floor:
                raise NoMember(f"no member reaches min_top1 {min_top1} (best {max(self.top1.values()):.2f})")
            if budget is None:
                pick = floor[0]
            else:
                fits = [m for m in floor if self.overhead_ms + ahead + self.latency_ms[m] <= budget]
                if not fits:
                    fastest = min(floor, key=self.latency_ms.get)
                    if self.latency_ms[fastest] > budget:
                        raise NoMember(
                            f"no member fits max_latency_ms {budget:g} on this host even when idle "
                            f"(fastest {fastest}: {self.latency_ms[fastest]:.2f} ms)"
                        )
                    raise Overloaded(
                        f"no member can answer within {budget:g} ms behind {len(self.in_flight)} requests",
                        math.ceil((self.overhead_ms + ahead) / 1000),
                    )
                pick = fits[0]
        ticket = self._next
        self._next += 1
        predicted = ahead + self.latency_ms[pick]
        self.in_flight[ticket] = (pick, predicted)
        return ticket, Choice(pick, self.overhead_ms + predicted)

    def done(self, ticket: int, measured_ms: float | None) -> None:
        """A request finished (``measured_ms`` None: failed): learn the overhead."""
        _, predicted = self.in_flight.pop(ticket, (None, None))
        if predicted is not None and measured_ms is not None:
            extra = max(0.0, measured_ms - predicted)
            self.overhead_ms = (1 - self.smoothing) * self.overhead_ms + self.smoothing * extra
