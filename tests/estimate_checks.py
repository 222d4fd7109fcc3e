"""Comparing two :class:`cliffwatch.analytics.recorded.Estimates` read in different ways
(the same sums added in another order: equal within a relative tolerance)."""

from __future__ import annotations

import math

from cliffwatch.analytics.recorded import Estimates


def close(a: float | None, b: float | None, rel_tol: float = 1e-12) -> bool:
    """Both None, or both numbers within ``rel_tol`` (and 1e-15 absolute)."""
    return (a is None and b is None) or (
        a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-15))


def assert_same_estimates(mine: Estimates, theirs: Estimates, rel_tol: float = 1e-12) -> None:
    """Same keys, equal sample counts, means within ``rel_tol``; every worker estimate has
    samples."""
    assert set(mine.workers) == set(theirs.workers)
    for key, w in theirs.workers.items():
        m = mine.workers[key]
        assert m.samples == w.samples and w.samples > 0, key
        assert close(m.cost_usd, w.cost_usd, rel_tol), key
        assert close(m.output_tokens, w.output_tokens, rel_tol), key
    for a, b in ((mine.synthesis_usd, theirs.synthesis_usd),
                 (mine.synthesis_price_input, theirs.synthesis_price_input)):
        assert set(a) == set(b)
        assert all(close(a[k], b[k], rel_tol) for k in b)
