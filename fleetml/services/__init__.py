"""Services: the one place that chains store -> features -> models for a batch.

The CLI, the API, notebooks and the scheduler call these functions; they hold no logic of their
own beyond parsing their inputs and presenting the results.
"""
