"""Training pipelines: train, evaluate, register and promote models with MLflow.

:mod:`fleetml.training.registry` is the MLflow glue shared by every model family; each family has a
library module (``anomaly.py``, ...) and its click commands (``anomaly_cli.py``, ...). MLflow is
imported lazily, only by the functions that need it.
"""
