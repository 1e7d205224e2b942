"""Random-number generator state as JSON data, so a search can save and resume it.

>>> import random
>>> rng = random.Random(3)
>>> restore_rng(rng_state(rng)).random() == rng.random()
True
"""

from __future__ import annotations

import random


def rng_state(rng: random.Random) -> list:
    """The state of ``rng`` as JSON data (``random.Random.getstate`` holds tuples)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def restore_rng(state: list) -> random.Random:
    """A ``random.Random`` in the state :func:`rng_state` returned."""
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng
