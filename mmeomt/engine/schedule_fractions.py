"""Schedule points given as fractions of the run (docs/method.md §4).

The annealing windows and warm-ups of EoMT are fixed shares of the training run (the authors'
COCO windows are sixths of it).  A config that states them as fractions stays right when the run
is shortened or lengthened (``--cfg-options train_cfg.max_iters=...``, another dataset size);
:func:`fraction_to_iter` turns a fraction into an iteration once the run length is known.
"""
import math
from fractions import Fraction
from numbers import Integral, Real
from typing import List, Sequence

# Fractions are resolved on the rational number the float was written as (``7 / 24`` in a
# config is a float a little above or below 7/24); any denominator a config would use is far
# below this bound, and the float's error (~1e-17) far below 1 / bound**2.
_MAX_DENOMINATOR = 10**6


def fraction_to_iter(fraction: float, total: int) -> int:
    """The iteration at ``fraction`` of ``total``: ``floor(fraction * total + 1/2)``.

    Ties round up (7/24 of 88,692 iterations is 25,868.5 -> 25,869, as the authors' EoMT-g
    COCO windows), computed exactly on the fraction the float stands for, so the result does
    not depend on the float's last bit.
    """
    exact = Fraction(fraction).limit_denominator(_MAX_DENOMINATOR)
    return math.floor(exact * total + Fraction(1, 2))


def is_iters(value) -> bool:
    """A non-negative int (not a bool): an absolute iteration."""
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 0


def is_fraction(value) -> bool:
    """A float in ``[0, 1]``: a fraction of the run (an int is never taken for one)."""
    return (isinstance(value, Real) and not isinstance(value, (Integral, bool))
            and 0.0 <= value <= 1.0)


def check_iters(values: Sequence, field: str) -> List[int]:
    """``values`` as a list of ints, or a TypeError naming ``field``."""
    if not isinstance(values, (list, tuple)) or not all(is_iters(v) for v in values):
        raise TypeError(f'{field} must be a list of non-negative ints (iterations), got '
                        f'{values!r}')
    return [int(v) for v in values]


def check_fractions(values: Sequence, field: str) -> List[float]:
    """``values`` as a list of floats in ``[0, 1]``, or a TypeError naming ``field``."""
    if not isinstance(values, (list, tuple)) or not all(is_fraction(v) for v in values):
        raise TypeError(f'{field} must be a list of floats in [0, 1] (fractions of '
                        f'train_cfg.max_iters, e.g. 1 / 6), got {values!r}')
    return [float(v) for v in values]
