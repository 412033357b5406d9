"""The background thread shared by the senders (:mod:`fleetml.services.notify`,
:mod:`fleetml.services.action_hooks`): start once, wake on demand, run a round every
``poll_s``, stop cleanly and close the HTTP client it owns."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import httpx
import tenacity


class BackgroundSender(ABC):
    """A daemon thread that calls :meth:`_round` until stopped, then waits ``poll_s`` or until
    :meth:`wake`.

    Subclasses set ``thread_name``, ``user_agent``, ``logger`` and ``round_failed`` (logged
    with ``poll_s`` when a round raises), implement :meth:`_round`, and may override
    :meth:`_after_round` for work outside the round that also decides how long to wait.
    Without a ``client`` the sender makes its own (``timeout_s``), closed by :meth:`stop`.
    ``backoff_s`` and ``backoff_max_s`` shape the exponential wait between tries of one request
    (tests make them tiny); ``tries_per_round`` bounds the tries of one request in one round, so
    one dead receiver delays the others by at most a few waits.
    """

    thread_name: ClassVar[str]
    user_agent: ClassVar[str]
    logger: ClassVar[logging.Logger]
    round_failed: ClassVar[str] = "round failed; next round in %.0f s"

    def __init__(
        self,
        engine,
        settings,
        *,
        poll_s: float,
        timeout_s: float,
        backoff_s: float,
        backoff_max_s: float,
        tries_per_round: int,
        client: httpx.Client | None,
    ):
        self.engine = engine
        self.settings = settings
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.tries_per_round = max(1, tries_per_round)
        self.poll_s = poll_s
        self._client = client or httpx.Client(
            timeout=timeout_s, headers={"User-Agent": self.user_agent}
        )
        self._own_client = client is None
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start the sender thread (once)."""
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Ask for a round now; never blocks."""
        self._woken.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: a wait between tries is cut short, the current request finishes."""
        self._stopping.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._own_client:
            self._client.close()

    @abstractmethod
    def _round(self) -> object:
        """One delivery round."""

    def _after_round(self) -> float:
        """Run after each round (its errors are the override's to handle); returns the seconds
        to wait before the next one."""
        return self.poll_s

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._woken.clear()
            try:
                self._round()
            except Exception:
                self.logger.exception(self.round_failed, self.poll_s)
            self._woken.wait(max(self._after_round(), 0.0))

    def _send(
        self, url: str, body: Any, max_tries: int, headers: dict[str, str] | None = None
    ) -> tuple[int, str | None, bool]:
        """POST ``body`` with retries; returns (tries, error or None, whether to give up now).

        Retries (exponential backoff of ``backoff_s`` up to ``backoff_max_s``) on transport
        errors and retryable statuses; a stop cuts the waits short."""
        tries = 0

        def post() -> None:
            nonlocal tries
            tries += 1
            response = self._client.post(url, json=body, headers=headers)
            if response.status_code >= 300:
                raise DeliveryError(url, response.status_code, response.text)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max_tries)
            | tenacity.stop_when_event_set(self._stopping),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
            retry=tenacity.retry_if_exception(retryable),
            sleep=self._stopping.wait,
            reraise=True,
        )
        try:
            retrying(post)
        except (httpx.HTTPError, DeliveryError) as exc:
            return tries, f"{type(exc).__name__}: {exc}", not retryable(exc)
        return tries, None, False


#: Statuses worth another try: the receiver is overloaded or briefly down.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class DeliveryError(Exception):
    """A receiver answered with an error status."""

    def __init__(self, target: str, status: int, body: str):
        super().__init__(f"{target} answered HTTP {status}: {body[:200]}")
        self.status = status


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, DeliveryError):
        return exc.status in RETRY_STATUS
    return isinstance(exc, httpx.TransportError)
