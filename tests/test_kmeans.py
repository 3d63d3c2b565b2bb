"""CFPG's own k-means (rrsis.refine.kmeans) against scikit-learn's, on real Landsat pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from sklearn.cluster import KMeans

from rrsis.refine.kmeans import kmeans, nearest


def test_two_separated_blobs_are_recovered_and_a_seed_repeats() -> None:
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.normal(0, 1, (300, 3)), rng.normal(20, 1, (100, 3))])
    centres = kmeans(points, 2, n_init=2, seed=7)
    labels, _ = nearest(points, centres)
    assert len(set(labels[:300].tolist())) == 1 and len(set(labels[300:].tolist())) == 1
    assert labels[0] != labels[-1]
    assert np.array_equal(centres, kmeans(points, 2, n_init=2, seed=7))
    assert np.allclose(sorted(centres[:, 0]), [points[:300, 0].mean(), points[300:, 0].mean()])


def test_identical_points_and_too_few_points() -> None:
    centres = kmeans(np.ones((50, 3)), 2, n_init=2)
    assert np.array_equal(centres, np.ones((2, 3)))  # both centres on the only colour, no NaN
    with pytest.raises(ValueError, match="at least 2 points"):
        kmeans(np.ones((1, 3)), 2)


def test_same_partition_and_inertia_as_scikit_learn_on_landsat_rois(samples: Path) -> None:
    with rasterio.open(samples / "rasterio" / "RGB.byte.tif") as src:
        image = src.read().transpose(1, 2, 0).astype(np.float32)
    rng = np.random.default_rng(1)
    checked = 0
    while checked < 20:
        y, x = rng.integers(0, image.shape[0] - 100), rng.integers(0, image.shape[1] - 100)
        h, w = rng.integers(20, 100, 2)
        roi = image[y : y + h, x : x + w].reshape(-1, 3)
        if roi.std(axis=0).max() < 1:  # CFPG calls such an ROI uniform and does not cluster it
            continue
        checked += 1
        ours, ours_d2 = nearest(roi, kmeans(roi, 2, n_init=2, max_iter=100, seed=0))
        theirs = KMeans(2, init="k-means++", n_init=2, max_iter=100, random_state=0).fit(roi)
        same = max(float(np.mean(ours == theirs.labels_)), float(np.mean(ours != theirs.labels_)))
        assert same >= 0.98  # the same two clusters (labels may be swapped); borders differ by tolerance
        assert ours_d2.sum() <= theirs.inertia_ * (1 + 1e-3)
