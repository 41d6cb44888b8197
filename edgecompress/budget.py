"""Accuracy budgets: how much a compressed file loses against the float model, with a
95 % interval, judged on the same images (a paired comparison).

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import OptionError

__all__ = ["DEFAULT_MAX_DROP", "Drop", "paired_drop", "clearly_worse", "check_max_drop", "verdict"]

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
DEFAULT_MAX_DROP = 1.0  # points of top-1 accuracy


@dataclass(frozen=True)
class Drop:
    """Accuracy lost by a candidate against a reference on the same images, in points.

    `points` is positive when the candidate is worse; (`low`, `high`) is its 95 %
    interval. `gained` and `lost` count the images only one of the two gets right.
    """

    reference_accuracy: float
    accuracy: float
    points: float
    low: float
    high: float
    samples: int
    gained: int
    lost: int

    def to_json(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return f"{self.points:+.2f} points (95 % interval {self.low:+.2f} to {self.high:+.2f})"


def paired_drop(reference_correct, candidate_correct) -> Drop:
    """The paired drop of `candidate` against `reference`, with a 95 % interval.

    The interval is the Wald interval for a difference of matched proportions with
    Agresti and Min's adjustment (half an image added to each cell of the 2x2 table;
    Statistics in Medicine 24:729-740, 2005), which stays honest when few images differ.

    Args:
        reference_correct: per image, whether the reference (the float model) was right.
        candidate_correct: the same for the candidate, on the same images in the same order.

    Returns:
        A `Drop`.

    Example:
        >>> paired_drop([1, 1, 1, 0], [1, 0, 1, 0]).points
        25.0
    """
    reference = np.asarray(reference_correct, bool)
    candidate = np.asarray(candidate_correct, bool)
    if reference.shape != candidate.shape or reference.ndim != 1 or not len(reference):
        raise OptionError(f"A paired comparison needs two equal, non-empty lists of results. "
                          f"Received: {reference.shape} and {candidate.shape}.")
    n = len(reference)
    lost = int(np.sum(reference & ~candidate))
    gained = int(np.sum(~reference & candidate))
    b, c, m = lost + 0.5, gained + 0.5, n + 2
    centre = (b - c) / m
    half = Z95 * math.sqrt(max(b + c - (b - c) ** 2 / m, 0.0)) / m
    return Drop(reference_accuracy=float(reference.mean()), accuracy=float(candidate.mean()),
                points=100 * (lost - gained) / n, low=100 * (centre - half),
                high=100 * (centre + half), samples=n, gained=gained, lost=lost)


CLEARLY_WORSE = 20.0  # points: what counts as a preprocessing or a file known wrong


def clearly_worse(better_correct, worse_correct, points: float = CLEARLY_WORSE) -> bool:
    """Whether `worse` loses at least `points` against `better` on the same images, and
    the whole 95 % interval of that loss is above zero (a few images prove nothing)."""
    drop = paired_drop(better_correct, worse_correct)
    return drop.points >= points and drop.low > 0


def check_max_drop(max_drop: float) -> float:
    """`max_drop` in points, or an `OptionError` for a value outside [0, 100]."""
    if not 0 <= max_drop <= 100:
        raise OptionError(f"`max_drop` is in points of accuracy, between 0 and 100. "
                          f"Received: max_drop={max_drop}.")
    return max_drop


def verdict(drop: Drop, max_drop: float) -> dict:
    """Judges `drop` against a budget of `max_drop` points.

    Returns:
        {"passed", "certain", "text"}: `passed` when the measured drop is within the budget;
        `certain` when the whole 95 % interval is on the same side of the budget.
    """
    passed = drop.points <= max_drop
    certain = drop.high <= max_drop if passed else drop.low > max_drop
    verb = "PASS" if passed else "FAIL"
    text = (f"{verb}: drop {drop.text()} against a budget of {max_drop:g} points, on "
            f"{drop.samples:,} images")
    if not certain:
        text += " (not certain: the interval reaches the other side of the budget; more " \
                "evaluation images would narrow it)"
    return {"passed": passed, "certain": certain, "max_drop": max_drop, "text": text}
