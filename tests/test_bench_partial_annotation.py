"""The partial-annotation control: which particles an incomplete annotation keeps."""

from __future__ import annotations

import numpy as np

from cryoscore.bench import datasets
from cryoscore.io.coords import ParticleCoordinates

PIXEL_A, RADIUS_PX = 2.0, 10.0


def _micrograph() -> datasets.TestMicrograph:
    """Five discs of radius 10 px on 256^2: four inside at contrasts 1 to 4, one of contrast 4 cut by the edge."""
    rows, cols = np.indices((256, 256))
    xs, ys, contrasts = [40, 100, 160, 220, 3], [60, 60, 160, 160, 128], [1.0, 2.0, 3.0, 4.0, 4.0]
    clean = np.zeros((256, 256))
    for x, y, contrast in zip(xs, ys, contrasts):
        clean -= contrast * (np.hypot(rows - y, cols - x) <= RADIUS_PX)
    truth = ParticleCoordinates(x_px=np.array(xs, float), y_px=np.array(ys, float))
    return datasets.TestMicrograph("m", clean + np.random.default_rng(0).normal(size=clean.shape), truth, clean, None)


def test_visible_keeps_the_strongest_whole_particles_and_random_is_reproducible(benchmarks_on_path):
    from bench_partial_annotation import kept_annotation, visibility

    micrograph = _micrograph()
    scores = visibility(micrograph, PIXEL_A, RADIUS_PX)
    np.testing.assert_allclose(scores[:4] / scores[0], [1, 2, 3, 4], rtol=0.02)  # contrast, on a flat background
    assert scores[2] < scores[4] < scores[3]  # the edge cuts the disc: the same contrast counts less
    kept = kept_annotation(micrograph, 0, 0.6, "visible", PIXEL_A, RADIUS_PX)
    assert kept.x_px.tolist() == [160.0, 220.0, 3.0]  # three of five, in the annotation's order
    random_a = kept_annotation(micrograph, 0, 0.6, "random", PIXEL_A, RADIUS_PX)
    random_b = kept_annotation(micrograph, 0, 0.6, "random", PIXEL_A, RADIUS_PX)
    assert len(random_a.x_px) == 3 and np.array_equal(random_a.x_px, random_b.x_px)
