"""Action webhooks: every action that becomes pending is POSTed to each ``action_webhooks`` URL.

The runtime learns of self-healing actions by polling ``GET /v1/actions?state=pending`` or,
with this publisher, by a webhook. :class:`ActionPublisher` runs a background thread that reads
the pending actions, and POSTs each one it has not yet delivered to a URL as one JSON object::

    {"source": "fleetml", "id": 12, "kind": "failover", "account_id": "bot-017",
     "group": "eu-sales", "params": {"to": "bot-017-s1"}, "created_at": "...Z",
     "expires_at": "...Z", "decision_id": 301}

with the header ``X-Fleetml-Action-Id`` (the same id, for de-duplication). The tick never
waits for it: after a tick that created actions it only calls :meth:`ActionPublisher.wake`; an
operator's approval (which may happen in another process) is picked up by the next poll
(``poll_s``).

**Delivery rules.** No table records deliveries; the publisher keeps, per URL, the ids it
delivered, in memory:

* an action is delivered at most once per URL *within a process* (at least once: a receiver
  that stored the action but answered an error gets it again), and never while it is not
  ``pending`` (awaiting approval, acknowledged, expired, superseded);
* a restart does not resend: the actions already pending when the publisher starts are taken as
  delivered (they were sent, or at least offered, by the previous process; the runtime's
  ``GET /v1/actions?state=pending`` poll is the way to catch up after an outage). Only actions
  that become pending after the start are sent, which includes older actions approved later;
* a receiver answering 408, 425, 429 or 5xx, or unreachable, is retried with exponential
  backoff (tenacity), ``tries_per_round`` times per round, round after round while the action
  stays pending, up to ``settings.notify_retries + 1`` tries per action and URL; any other
  error status rejects the payload and is not retried. Each failure is logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

import httpx
from sqlalchemy.engine import Engine

from fleetml.config import Settings
from fleetml.schemas.alerts import iso
from fleetml.services._sender import BackgroundSender
from fleetml.store.actions import list_actions

log = logging.getLogger("fleetml.action_hooks")

#: The fields of an action a webhook carries.
PAYLOAD_FIELDS = (
    "id",
    "kind",
    "account_id",
    "group",
    "params",
    "created_at",
    "expires_at",
    "decision_id",
)


def action_payload(action: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook body of one action (timestamps as ISO-8601 UTC, like ``GET /v1/actions``)."""
    out: dict[str, Any] = {"source": "fleetml"}
    for name in PAYLOAD_FIELDS:
        value = action.get(name)
        out[name] = iso(value) if name in ("created_at", "expires_at") else value
    return out


class ActionPublisher(BackgroundSender):
    """Delivers pending actions to ``settings.action_webhooks``: a daemon thread, or
    :meth:`publish_pending` by hand.

    Parameters
    ----------
    engine, settings
        The store and the settings (``action_webhooks``, ``notify_retries``).
    timeout_s : float, default 5.0
        Timeout of one request.
    backoff_s, backoff_max_s : float
        The exponential wait between tries of one request (tests make them tiny).
    tries_per_round : int, default 3
        Tries of one request in one round; a dead receiver delays the others by at most these.
    poll_s : float, default 5.0
        Pause between rounds when nobody calls :meth:`wake`; also how soon an approved action
        goes out.
    client : httpx.Client, optional
        The HTTP client (default: one of its own, closed by :meth:`stop`).
    """

    thread_name = "fleetml-action-publisher"
    user_agent = "fleetml-action-publisher"
    logger = log
    round_failed = "action webhook round failed; next round in %.0f s"

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        timeout_s: float = 5.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        tries_per_round: int = 3,
        poll_s: float = 5.0,
        client: httpx.Client | None = None,
    ):
        self.urls = list(dict.fromkeys(u for u in settings.action_webhooks if u))
        super().__init__(
            engine,
            settings,
            poll_s=poll_s,
            timeout_s=timeout_s,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
            tries_per_round=tries_per_round,
            client=client,
        )
        self._round_lock = threading.Lock()  # one delivery round at a time
        #: per URL, the ids delivered (or given up on); the baseline counts for every URL
        self._done: dict[str, set[int]] = {u: set() for u in self.urls}
        self._tries: dict[tuple[str, int], int] = {}
        self._baseline: set[int] | None = None

    # -- thread control

    def start(self) -> Self:
        """Take the actions pending now as delivered, then start the sender thread (once)."""
        self.mark_baseline()
        return super().start()

    def mark_baseline(self) -> int:
        """Take every action pending now as delivered (the restart rule); returns how many.
        Called once: later calls change nothing."""
        if self._baseline is None:
            self._baseline = {int(a["id"]) for a in self._pending()}
        return len(self._baseline)

    def _round(self) -> int:
        return self.publish_pending()

    # -- delivery

    def publish_pending(self) -> int:
        """One round: send every pending action not yet delivered to each URL, oldest first;
        returns how many (action, URL) deliveries succeeded.

        The first round (or :meth:`start`) takes the actions pending at that moment as
        delivered: call :meth:`mark_baseline` before the actions to send exist.
        """
        if not self.urls:
            return 0
        with self._round_lock:
            self.mark_baseline()
            pending = sorted(self._pending(), key=lambda a: int(a["id"]))
            live = {int(a["id"]) for a in pending}
            self._forget(live)
            fresh = [a for a in pending if int(a["id"]) not in self._baseline]
            delivered = 0
            for url in self.urls:
                delivered += self._deliver(
                    url, [a for a in fresh if a["id"] not in self._done[url]]
                )
            return delivered

    def _deliver(self, url: str, actions: list[dict]) -> int:
        delivered = 0
        for action in actions:
            if self._stopping.is_set():
                break
            action_id = int(action["id"])
            used = self._tries.get((url, action_id), 0)
            left = self.settings.notify_retries + 1 - used
            tries, error, give_up = self._send(
                url,
                action_payload(action),
                max(1, min(self.tries_per_round, left)),
                headers={"X-Fleetml-Action-Id": str(action_id)},
            )
            if error is None:
                self._done[url].add(action_id)
                self._tries.pop((url, action_id), None)
                delivered += 1
                continue
            self._tries[(url, action_id)] = used + tries
            if give_up or used + tries >= self.settings.notify_retries + 1:
                self._done[url].add(action_id)
                self._tries.pop((url, action_id), None)
                log.error(
                    "gave up sending action %d (%s of %s) to %s after %d tries: %s; the "
                    "runtime can still read it from GET /v1/actions?state=pending",
                    action_id,
                    action["kind"],
                    action["account_id"],
                    url,
                    used + tries,
                    error,
                )
                continue
            log.warning(
                "could not send action %d to %s (%d tries so far, next round in %.0f s): %s",
                action_id,
                url,
                used + tries,
                self.poll_s,
                error,
            )
            break  # the receiver is down or overloaded: the rest waits for the next round
        return delivered

    def _forget(self, live: set[int]) -> None:
        """Drop what concerns actions no longer pending: they never become pending again."""
        if self._baseline is not None:
            self._baseline &= live
        for url, done in self._done.items():
            self._done[url] = done & live
        self._tries = {k: v for k, v in self._tries.items() if k[1] in live}

    def _pending(self) -> list[dict]:
        """Every pending action, a page at a time (newest first)."""
        out: list[dict] = []
        after: int | None = None
        while True:
            page = list_actions(self.engine, state="pending", limit=500, after_id=after)
            out += page
            if len(page) < 500:
                return out
            after = int(page[-1]["id"])


# ---- wiring into the worker --------------------------------------------------------------------


class Senders:
    """Several senders run as one (``start``, ``stop``, ``wake`` each in turn)."""

    def __init__(self, senders: Iterable[Any]):
        self.senders = list(senders)

    def start(self) -> Senders:
        for sender in self.senders:
            sender.start()
        return self

    def wake(self) -> None:
        for sender in self.senders:
            sender.wake()

    def stop(self) -> None:
        for sender in self.senders:
            sender.stop()


def with_action_hooks(
    factory: Callable[[], Any] | None, settings: Settings, engine: Engine
) -> Callable[[], Any] | None:
    """The worker's sender factory plus an :class:`ActionPublisher` when ``action_webhooks``
    are set: what the score tick wakes after writing alerts or creating actions.

    Returns ``factory`` unchanged when no action webhook is configured, and None when neither
    is there.
    """
    if not any(settings.action_webhooks):
        return factory
    if factory is None:
        return lambda: ActionPublisher(engine, settings)
    return lambda: Senders([factory(), ActionPublisher(engine, settings)])
