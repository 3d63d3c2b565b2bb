"""k-means with k-means++ seeding, for CFPG's eq. 5 (k = 2 on pixel colours).

Written here instead of importing scikit-learn: a process that imports `sklearn.cluster` pays ~85 MB
(scikit-learn, SciPy, joblib) for a fit on at most a few thousand 3-d points, and the boxes task's CPU
workers sit beside the SAM actor whose memory budget is small. The method is the usual one (Arthur and
Vassilvitskii 2007, with the greedy seeding that scikit-learn also uses: 2 + floor(ln k) candidates per
centre, keep the one that lowers the potential most), then Lloyd iterations until the centres move less
than `tol` x the mean per-feature variance (squared), best of `n_init` seeded runs by inertia.
"""

from __future__ import annotations

import math

import numpy as np


def squared_distance(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(N,) squared Euclidean distances of (N, D) points to one (D,) centre, summed in float64."""
    return np.square(points - centre).sum(axis=1, dtype=np.float64)


def nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, squared distances) of each of (N, D) points to the nearest of (K, D) centres; ties go to
    the lower label. One (N,) distance array per centre, so N can be every pixel of a big ROI."""
    best = np.full(len(points), np.inf)
    labels = np.zeros(len(points), dtype=np.int64)
    for j, centre in enumerate(np.asarray(centres, dtype=np.float64)):
        d = squared_distance(points, centre)
        closer = d < best
        labels[closer], best[closer] = j, d[closer]
    return labels, best


def plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (greedy): (k, D) centres drawn from the (N, D) points."""
    n = len(points)
    trials = 2 + int(math.log(k))
    centres = [points[rng.integers(n)]]
    closest = squared_distance(points, centres[0])
    for _ in range(1, k):
        potential = float(closest.sum())
        if potential <= 0.0:  # every point sits on a centre already: any point will do
            candidates = rng.integers(n, size=trials)
        else:
            candidates = np.searchsorted(np.cumsum(closest), rng.random(trials) * potential, side="right")
            candidates = np.minimum(candidates, n - 1)
        options = [np.minimum(closest, squared_distance(points, points[c])) for c in candidates]
        pick = int(np.argmin([o.sum() for o in options]))
        centres.append(points[candidates[pick]])
        closest = options[pick]
    return np.array(centres)


def kmeans(
    points: np.ndarray, k: int, *, n_init: int = 1, max_iter: int = 300, seed: int = 0, tol: float = 1e-4
) -> np.ndarray:
    """(k, D) centres of the lowest-inertia run of `n_init` (seeded by `seed`); an empty cluster keeps its
    centre. Needs at least k points."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"k-means needs at least {k} points as an (N, D) array, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    stop = tol * float(np.mean(np.var(x, axis=0)))
    best, best_inertia = x[:k], math.inf
    for _ in range(n_init):
        centres = plus_plus(x, k, rng)
        for _ in range(max_iter):
            labels, _ = nearest(x, centres)
            moved = centres.copy()
            for j in range(k):
                members = labels == j
                if members.any():
                    moved[j] = x[members].mean(axis=0)
            shift = float(np.square(moved - centres).sum())
            centres = moved
            if shift <= stop:
                break
        inertia = float(nearest(x, centres)[1].sum())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best
