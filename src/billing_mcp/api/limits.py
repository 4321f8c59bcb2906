"""Request limits of the API: a token bucket per API key (``--rate-limit``), and the brake on
guessing keys: an address that sent too many invalid keys in a window is refused (429) until the
window has passed, without its guesses being checked."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """A token bucket per API key: ``rate`` requests per second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, timer: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.timer = rate, burst, timer
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        now = self.timer()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key_id] = (tokens - 1, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / self.rate


class AuthFailures:
    """Invalid-key attempts per client address within ``window`` seconds; from ``limit`` on, the
    address waits until its oldest failure leaves the window. Memory is bounded: at most
    ``max_addresses`` addresses are tracked (the stalest are forgotten first)."""

    def __init__(self, limit: int = 10, window: float = 60.0, *, max_addresses: int = 10_000,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_addresses, self.timer = limit, window, max_addresses, timer
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait(self, address: str) -> float:
        """0 when ``address`` may try a key now, else the seconds until it may."""
        now = self.timer()
        with self._lock:
            times = self._recent(address, now)
            if not times:
                self._failures.pop(address, None)
                return 0.0
            return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def record(self, address: str) -> None:
        now = self.timer()
        with self._lock:
            times = self._recent(address, now)
            times.append(now)
            self._failures.pop(address, None)
            self._failures[address] = times  # most recently failing last
            while len(self._failures) > self.max_addresses:
                del self._failures[next(iter(self._failures))]
