"""Estimators (scikit-learn contract): anomaly, risk, forecast. Import submodules directly."""
