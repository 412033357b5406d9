"""Train the anomaly detector: the same as ``fleetml train anomaly`` (a thin entry point).

Usage: ``python pipelines/train_anomaly.py [--from TS] [--to TS] [--account ID ...] [--promote]``
(``FLEETML_HOME`` selects the store, ``MLFLOW_TRACKING_URI`` a remote MLflow server).
"""

from __future__ import annotations

import sys

from fleetml.cli import cli

if __name__ == "__main__":
    cli.main(args=["train", "anomaly", *sys.argv[1:]], prog_name="train_anomaly")
