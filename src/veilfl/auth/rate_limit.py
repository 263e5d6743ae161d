"""Per-client rate limits: one token bucket per client id."""

from __future__ import annotations

from dataclasses import dataclass

from veilfl.errors import ConfigurationError, RateLimitedError

__all__ = ["DEFAULT_RATE_LIMIT", "RateLimit", "RateLimiter"]


@dataclass(frozen=True)
class RateLimit:
    """How many requests a client may send.

    Attributes:
        per_second: Sustained requests per second.
        burst: Requests allowed at once after a quiet spell.
    """

    per_second: float = 20.0
    burst: float = 60.0

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ConfigurationError(
                "A rate limit needs a positive rate and a burst of at least one request."
            )


DEFAULT_RATE_LIMIT = RateLimit()
"""20 requests per second per client, 60 at once."""


class RateLimiter:
    """Token buckets keyed by client id."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str, *, now_s: float) -> None:
        """Spend one request of ``key``'s allowance.

        Raises:
            RateLimitedError: with the seconds to wait, if the allowance is spent.
        """
        tokens, last = self._buckets.get(key, (self.limit.burst, now_s))
        tokens = min(self.limit.burst, tokens + max(0.0, now_s - last) * self.limit.per_second)
        if tokens < 1.0:
            wait = (1.0 - tokens) / self.limit.per_second
            self._buckets[key] = (tokens, now_s)
            raise RateLimitedError(
                f"Too many requests from client {key} (limit {self.limit.per_second:g}/s, "
                f"burst {self.limit.burst:g}); retry in {wait:.2f} s.",
                retry_after_s=wait,
            )
        self._buckets[key] = (tokens - 1.0, now_s)
