"""The serving layer: loads champions from the registry, keeps per-account state between ticks,
and scores the fleet or one account. The API, the scheduler, the CLI and notebooks all call it;
it never imports :mod:`fleetml.training`.
"""
