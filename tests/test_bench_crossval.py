"""The learned judge's statistics: folds, pooled values, bootstrap intervals, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import bootstrap_interval, fold_of_each, paired_difference, picker_training, pooled
from cryoscore.metrics.picking import match_picks, pool_matches


def _micrograph(rng: np.random.Generator, n_truth: int, hit_rate: float, n_false: int):
    """A MatchResult for picks that find ``hit_rate`` of ``n_truth`` particles (scored high) plus
    ``n_false`` false picks (scored low, with some overlap)."""
    truth = rng.uniform(0, 1000, size=(n_truth, 2))
    found = truth[rng.random(n_truth) < hit_rate] + rng.normal(0, 1, size=(1, 2))
    false = rng.uniform(0, 1000, size=(n_false, 2)) + 2000  # nowhere near a particle
    picks = np.concatenate([found, false])
    scores = np.concatenate([rng.normal(2, 1, len(found)), rng.normal(0, 1, n_false)])
    return match_picks(picks, scores, truth, 10.0)


def _results(seed: int, hit_rate: float, n_seeds: int = 3, n_micrographs: int = 8):
    rng = np.random.default_rng(seed)
    return [[_micrograph(rng, 40, hit_rate, 20) for _ in range(n_micrographs)] for _ in range(n_seeds)]


def test_folds_put_every_micrograph_in_one_fold():
    assert list(fold_of_each(10, 5)) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert list(fold_of_each(3, 5)) == [0, 1, 2]  # at most one fold per micrograph
    with pytest.raises(ValueError, match="at least 2"):
        fold_of_each(1, 5)


def test_pooling_without_pairs_gives_the_same_curve():
    results = _results(0, 0.8)[0]
    with_pairs, without = pool_matches(results), pool_matches(results, match_pairs=False)
    assert without.average_precision == with_pairs.average_precision and without.f1 == with_pairs.f1
    assert len(with_pairs.pick_index) > 0 and len(without.pick_index) == 0
    assert pooled(results, "ap") == pytest.approx(with_pairs.average_precision)


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_micrographs():
    few, many = _results(1, 0.7, n_micrographs=4), _results(1, 0.7, n_micrographs=32)
    for results in (few, many):
        estimate = np.mean([pooled(row, "ap") for row in results])
        low, high = bootstrap_interval(results, "ap", n_boot=300)
        assert low < estimate < high
        assert bootstrap_interval(results, "ap", n_boot=300) == [low, high]  # a fixed generator
    assert np.diff(bootstrap_interval(many, "ap", n_boot=300)) < np.diff(bootstrap_interval(few, "ap", n_boot=300))


def test_paired_difference_sees_a_real_gap_and_none_between_equals():
    worse, better = _results(2, 0.5), _results(2, 0.9)
    same = paired_difference(worse, worse, "ap", n_boot=200)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0]
    gap = paired_difference(better, worse, "ap", n_boot=200)
    assert gap["difference"] > 0.2 and gap["ci"][0] > 0
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(better, worse[:2])


def test_settings_reach_the_picker_training():
    settings = LearnedJudgeSettings(steps=7, batch_size=3)
    training = picker_training(settings, seed=4)
    assert (training.steps, training.batch_size, training.seed) == (7, 3, 4)
    assert training.crop_px == picker_training(LearnedJudgeSettings(), 0).crop_px  # the picker's default
    with pytest.raises(ValueError, match="folds >= 2"):
        LearnedJudgeSettings(folds=1)
