"""Run ``fleetml tick`` in this process and SIGKILL it at a chosen point (test helper).

Usage: python _kill_tick.py MODE NOW
MODE: ``in-alerts`` (inside the alerts transaction, after the outbox rows were written but
before the commit) or ``after-alerts`` (after the alerts committed, before the tick returns).
"""

import os
import signal
import sys

mode, now = sys.argv[1], sys.argv[2]

import fleetml.services.alerts as service  # noqa: E402
import fleetml.store.alerts as store  # noqa: E402


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if mode == "in-alerts":
    original = store.write_notifications

    def write_then_die(*args, **kwargs):
        original(*args, **kwargs)
        die()

    store.write_notifications = write_then_die
else:
    evaluate = service.evaluate_alerts

    def evaluate_then_die(*args, **kwargs):
        evaluate(*args, **kwargs)
        die()

    service.evaluate_alerts = evaluate_then_die

from fleetml.cli import main  # noqa: E402

sys.argv = ["fleetml", "tick", "--now", now]
main()
