"""Quality against compute: L(C) = E + A C^(-alpha), fitted robustly, with bootstrap intervals.

L is a model's test LogLoss and C its forward MFLOP per example, one point per run (rungs x seeds). The
fit is Huber-robust least squares (scipy.optimize.least_squares; Huber's 1.345 on the residuals' MAD; A
and alpha kept positive by fitting their logs; C scaled by its median); intervals are 95% percentiles over bootstrap resamples of the runs.
The paper's relative form, y = -100 + a x^b with y the LogLoss relative to the model's smallest rung in
percent and x in GFLOP, is fitted by least squares on log(1 + y / 100) = log(a / 100) + b log x. A model
"stops improving" past the compute C* where another 4x gains less than `threshold` LogLoss:
L(C*) - L(4 C*) = threshold, i.e. C* = (A (1 - 4^-alpha) / threshold)^(1 / alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ctrbench.core.errors import CtrbenchError

SATURATION_THRESHOLD = 0.0005  # LogLoss gained by another 4x of compute below which a model has stopped


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = E + A C^(-alpha)."""

    E: float
    A: float
    alpha: float

    def __call__(self, compute: np.ndarray | float) -> np.ndarray | float:
        return self.E + self.A * np.power(compute, -self.alpha)

    def saturation(self, threshold: float = SATURATION_THRESHOLD) -> float:
        """The compute past which another 4x gains less than `threshold`."""
        gain = self.A * (1 - 4.0 ** -self.alpha)
        if gain <= 0 or self.alpha <= 0:
            return 0.0
        log_compute = math.log(gain / threshold) / self.alpha
        return math.exp(log_compute) if log_compute < 700 else math.inf  # a law that never flattens: inf


def fit_power_law(compute: np.ndarray, loss: np.ndarray) -> PowerLaw:
    """Huber-robust least squares of L = E + A C^-alpha, A and alpha kept positive (fitted as logs)."""
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if len(np.unique(compute)) < 3:
        raise CtrbenchError("a power law needs runs at 3 or more compute values")
    scale = float(np.median(compute))
    x = compute / scale  # fitted on C / median(C), then A is rescaled

    def residuals(theta: np.ndarray) -> np.ndarray:
        E, log_A, log_alpha = theta
        return E + np.exp(log_A) * x ** -np.exp(log_alpha) - loss

    spread = float(loss.max() - loss.min()) or 1e-3
    start = np.array([loss.min() - spread, math.log(spread), math.log(0.3)])
    # Huber's loss with the usual tuning constant 1.345 on a robust noise scale (the residuals' MAD after a
    # first pass with a scale of a tenth of the spread): quadratic for typical runs, linear for outliers.
    first = least_squares(residuals, start, loss="huber", f_scale=max(spread * 0.1, 1e-9), max_nfev=2000)
    noise = 1.4826 * float(np.median(np.abs(first.fun - np.median(first.fun))))
    fit = least_squares(residuals, first.x, loss="huber", f_scale=max(1.345 * noise, 1e-9), max_nfev=2000)
    E, log_A, log_alpha = fit.x
    alpha = math.exp(log_alpha)
    return PowerLaw(E=float(E), A=float(math.exp(log_A) * scale ** alpha), alpha=float(alpha))


def fit_relative(gflop: np.ndarray, relative_logloss: np.ndarray) -> tuple[float, float]:
    """(a, b) of the paper's y = -100 + a x^b, by least squares on log(1 + y/100) = log(a/100) + b log x."""
    b, log_a = np.polyfit(np.log(gflop), np.log1p(np.asarray(relative_logloss) / 100), 1)
    return 100 * math.exp(log_a), float(b)


@dataclass(frozen=True)
class LawFit:
    law: PowerLaw
    intervals: dict[str, tuple[float, float]]  # "E", "A", "alpha", "saturation" -> 95% bootstrap interval
    relative: tuple[float, float]  # the paper's (a, b)
    bootstraps: int  # resamples whose fit converged


def fit_with_intervals(compute: np.ndarray, loss: np.ndarray, resamples: int = 200, seed: int = 0) -> LawFit:
    """The fit on every run, with percentile intervals from `resamples` bootstrap resamples of the runs."""
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    law = fit_power_law(compute, loss)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        index = rng.integers(0, len(loss), len(loss))
        if len(np.unique(compute[index])) < 3:
            continue
        try:
            fitted = fit_power_law(compute[index], loss[index])
        except CtrbenchError:
            continue
        draws.append((fitted.E, fitted.A, fitted.alpha, fitted.saturation()))
    table = np.array(draws) if draws else np.full((1, 4), np.nan)
    intervals = {name: (float(np.nanpercentile(table[:, k], 2.5)), float(np.nanpercentile(table[:, k], 97.5)))
                 for k, name in enumerate(("E", "A", "alpha", "saturation"))}
    smallest = compute.min()
    reference = float(np.mean(loss[compute == smallest]))
    relative = fit_relative(compute / 1000, 100 * (loss / reference - 1))
    return LawFit(law, intervals, relative, len(draws))
