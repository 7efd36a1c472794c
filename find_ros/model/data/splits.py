"""Split rules of the sim data: each split draws scene seeds from its own range, and ``train``/``val``/``test``
never contain a held-out (category, colour) pair while every ``heldout`` target has one.

The pairs come from ``find_ros.sim``'s categories and colours; it is imported on first use, not with this module
(its open3d import took 0.85-1.05 s here, several times this package's own 0.12-0.18 s; reading cached shards
needs none).
"""
from __future__ import annotations

import functools

SPLIT_SEED_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000, "heldout": 30_000_000}
"""First scene seed of each split; a split uses seeds ``base + index``; references use ``base + 5_000_000 + ...``."""
REF_SEED_OFFSET = 5_000_000
"""Reference scenes of a split use seeds from ``SPLIT_SEED_BASE[split] + REF_SEED_OFFSET``."""


@functools.cache
def heldout_pairs() -> frozenset[tuple[str, str]]:
    """The (category, colour) pairs reserved for the ``heldout`` split."""
    import find_ros.sim as sim

    colours = list(sim.COLOURS)
    # one colour per category, spread over the palette: every category and most colours still occur in training
    return frozenset((c, colours[(3 + 5 * i) % len(colours)]) for i, c in enumerate(sim.CATEGORIES))


def is_heldout_pair(category: str, colour: str) -> bool:
    """True when (category, colour) is reserved for the ``heldout`` split."""
    return (category, colour) in heldout_pairs()
