"""Evaluation: event-wise alert metrics, the NAB score, point-wise AUCs and walk-forward backtests.

Import submodules directly (``from fleetml.evaluation.events import event_metrics``); this package
imports nothing heavy on its own.
"""
