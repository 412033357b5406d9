"""Predictive alerts: the pure rules that decide which alerts a scoring tick opens and resolves.

The store side is :mod:`fleetml.store.alerts`, the tick's entry point
:func:`fleetml.services.alerts.evaluate_alerts`, delivery :mod:`fleetml.services.notify`.
"""
