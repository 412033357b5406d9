"""Load forecasting (kept importable here; the code lives in :mod:`fleetml.models.forecasting`).

Registered ``fleetml-forecast`` bundles pickled before the split name
``fleetml.models.forecast.ForecastBundle``; this module re-exports it, so they still load.
"""

from fleetml.models.forecasting import *  # noqa: F403
from fleetml.models.forecasting import __all__  # noqa: F401
from fleetml.models.forecasting.methods import (  # noqa: F401  (older private names)
    _ETS,
    _METHOD_CLASSES,
    _MSTLETS,
    _Combo,
    _fit_combo,
    _fit_method,
    _Fitted,
    _SeasonalNaive,
    _Theta,
)
