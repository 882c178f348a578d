"""Which member answers, under a latency budget and the load of the moment (torch-free).

The frontier is this host's: every member's p90 latency at batch 1 from the pool's bench
report (the same runtime the server runs), and its test top1. A request names a member, or the
pool's virtual model with a budget (``parameters.max_latency_ms``, else ``--slo-ms``) and an
optional floor (``parameters.min_top1``).

The policy, for the virtual model:

1. a request of ``n`` images costs its member ``latency + (n - 1) * per_image`` (the frontier's
   batch-1 p90 and the slope to its batch-32 p90: a request of 16 images is not one image's
   work); the work ahead of a new request is the sum of the costs of the ``k`` requests in
   flight (the worker serves one batch at a time, so this is what it must finish first);
2. what the frontier does not hold is learnt from finished requests, in two parts: a fixed
   overhead (HTTP, the engine's queues, decoding: milliseconds that do not shrink with the
   member), an exponential average of measured minus predicted time over requests that found
   the server idle, and a cost per request ahead (their HTTP and queue work, which shares the
   cores), the same average of what is left per request ahead over requests that were not
   alone. Both never below 0;
3. the most accurate member whose predicted completion
   ``overhead + k * per_ahead + ahead + cost`` fits the budget (and whose top1 meets the
   floor) answers; none fits: 503 with ``Retry-After`` (the seconds the work ahead needs),
   since a request that would miss its budget anyway is better retried than queued. Each
   such refusal also shrinks both learnt terms by 5%, so a run of refusals soon admits a
   request again, whose measurement sets them anew: estimates learnt while the cores were
   busiest can never shut the server for good (one learnt overhead once refused every
   request at concurrency 8, and with nothing finishing nothing unlearnt it);
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
    per_image_ms: dict[str, float] | None = None  # member -> p90 per further image (None: latency_ms)
    slo_ms: float | None = None
    max_queue: int = 64
    smoothing: float = 0.2
    recovery: float = 0.05  # what each refusal takes off the learnt overhead terms
    overhead_ms: float = 0.0  # learnt on an idle server
    per_ahead_ms: float = 0.0  # learnt per request in flight ahead
    # ticket -> (member, its cost, k ahead, the work predicted to finish with it)
    in_flight: dict[int, tuple[str, float, int, float]] = field(default_factory=dict)
    _next: int = 0

    def __post_init__(self):
        # most accurate first; ties: the faster
        self.order = sorted(self.latency_ms, key=lambda m: (-self.top1.get(m, 0.0), self.latency_ms[m]))

    @property
    def ahead_ms(self) -> float:
        return sum(cost for _, cost, _, _ in self.in_flight.values())

    def cost_ms(self, member: str, n: int = 1) -> float:
        """The frontier's time for ``member`` to answer a request of ``n`` images."""
        per = (self.per_image_ms or {}).get(member, self.latency_ms[member])
        return self.latency_ms[member] + max(0, n - 1) * per

    def _waiting_ms(self) -> float:
        """What a request admitted now waits for besides its own member's latency."""
        return self.overhead_ms + len(self.in_flight) * self.per_ahead_ms + self.ahead_ms

    def choose(
        self, member: str | None = None, budget_ms: float | None = None, min_top1: float | None = None, n: int = 1
    ):
        """(ticket, Choice) for a request of ``n`` images; `Overloaded` or `NoMember` when it
        cannot be served."""
        if len(self.in_flight) >= self.max_queue:
            raise Overloaded(
                f"{len(self.in_flight)} requests in flight (the queue holds {self.max_queue})",
                math.ceil(self._waiting_ms() / 1000),
            )
        ahead, waiting, k = self.ahead_ms, self._waiting_ms(), len(self.in_flight)
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
                fits = [m for m in floor if waiting + self.cost_ms(m, n) <= budget]
                if not fits:
                    fastest = min(floor, key=lambda m: self.cost_ms(m, n))
                    if self.cost_ms(fastest, n) > budget:
                        raise NoMember(
                            f"no member fits max_latency_ms {budget:g} on this host even when idle "
                            f"(fastest {fastest}: {self.cost_ms(fastest, n):.2f} ms for {n} image(s))"
                        )
                    self.overhead_ms *= 1 - self.recovery
                    self.per_ahead_ms *= 1 - self.recovery
                    raise Overloaded(
                        f"no member can answer within {budget:g} ms behind {len(self.in_flight)} requests",
                        math.ceil(waiting / 1000),
                    )
                pick = fits[0]
        ticket = self._next
        self._next += 1
        cost = self.cost_ms(pick, n)
        self.in_flight[ticket] = (pick, cost, k, ahead + cost)
        return ticket, Choice(pick, waiting + cost)

    def done(self, ticket: int, measured_ms: float | None) -> None:
        """A request finished (``measured_ms`` None: failed): learn the overhead, or the cost
        per request ahead when it was not alone."""
        _, _, k, work = self.in_flight.pop(ticket, (None, None, 0, None))
        if work is None or measured_ms is None:
            return
        a = self.smoothing
        if k == 0:
            self.overhead_ms = (1 - a) * self.overhead_ms + a * max(0.0, measured_ms - work)
        else:
            each = max(0.0, measured_ms - work - self.overhead_ms) / k
            self.per_ahead_ms = (1 - a) * self.per_ahead_ms + a * each
