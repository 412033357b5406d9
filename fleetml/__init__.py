"""fleetml: predictive operations for fleets of messaging-bot accounts."""

__version__ = "0.1.0"
