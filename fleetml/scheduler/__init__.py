"""The scheduler: the live loop's jobs on a schedule, run by one active worker across processes.

``fleetml worker`` runs it in its own process, ``fleetml serve --worker`` inside the API.
See :mod:`fleetml.scheduler.worker` (the worker and its schedule), :mod:`fleetml.scheduler.jobs`
(the jobs and how a run is recorded) and :mod:`fleetml.scheduler.leader` (the leader lock).
The scheduler never imports :mod:`fleetml.training`: the nightly retrain runs the training CLI.
"""
