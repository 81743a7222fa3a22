"""Picking judged against ground truth: one-to-one matching, precision/recall/F1, AP, pooling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates, read_coordinates, write_coordinates
from cryoscore.io.layout import write_json
from cryoscore.metrics.pick_score import score_directories, write_score_json
from cryoscore.metrics.picking import match_picks, pool_matches

# Four true centres 100 px apart on a line; radius 10 px.
TRUTH = [(0.0, 0.0), (100.0, 0.0), (200.0, 0.0), (300.0, 0.0)]


def _coords(xy, scores=None) -> ParticleCoordinates:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return ParticleCoordinates(x_px=xy[:, 0], y_px=xy[:, 1], figure_of_merit=scores)


def test_perfect_picks_score_one():
    result = match_picks(TRUTH, [0.4, 0.3, 0.2, 0.1], TRUTH, 10.0, diameter_px=20.0)
    assert (result.precision, result.recall, result.f1, result.average_precision) == (1.0, 1.0, 1.0, 1.0)
    assert result.threshold == 0.1
    assert result.centring_error_px == 0.0
    assert sorted(zip(result.pick_index, result.truth_index)) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_misses_and_false_positives_match_hand_values():
    picks = [(0, 1), (50, 50), (100, 2), (500, 500), (203, 0)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]  # TP, FP, TP, FP, TP
    result = match_picks(picks, scores, TRUTH, 10.0, diameter_px=20.0)
    np.testing.assert_array_equal(result.n_selected, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(result.n_true_positives, [1, 1, 2, 2, 3])
    np.testing.assert_allclose(result.precision_curve, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(result.recall_curve, [1 / 4, 1 / 4, 2 / 4, 2 / 4, 3 / 4])
    np.testing.assert_allclose(result.f1_curve, [2 / 5, 1 / 3, 4 / 7, 1 / 2, 2 / 3])
    # Best F1 with all five picks: P = 3/5, R = 3/4, F1 = 2/3.
    assert result.threshold == 0.5
    assert result.precision == pytest.approx(3 / 5)
    assert result.recall == pytest.approx(3 / 4)
    assert result.f1 == pytest.approx(2 / 3)
    # AP = 1/4 (1 + 2/3 + 3/5): recall steps at picks 1, 3, 5 only.
    assert result.average_precision == pytest.approx(17 / 30)
    # Matched pairs at distances 1, 2, 3 px: mean 2 px = 0.1 of a 20 px diameter.
    assert result.centring_error_px == pytest.approx(2.0)
    assert result.centring_error_diameters == pytest.approx(0.1)
    assert sorted(zip(result.pick_index.tolist(), result.truth_index.tolist())) == [(0, 0), (2, 1), (4, 2)]


def test_best_threshold_can_drop_low_scoring_picks():
    picks = [(0, 0), (100, 0), (50, 50), (60, 60), (70, 70)]
    result = match_picks(picks, [5, 4, 3, 2, 1], TRUTH, 10.0)
    # F1 per threshold: 2/5, 2/3, 4/7, 1/2, 4/9: best keeps the two true picks.
    assert result.threshold == 4.0
    assert (result.selected_at_best, result.true_positives_at_best) == (2, 2)
    assert result.f1 == pytest.approx(2 / 3)
    assert result.average_precision == pytest.approx(1 / 2)


def test_maximum_matching_beats_greedy_nearest():
    # The best pick is nearer truth A (4.9 px) than B (5.1 px); greedy-by-score nearest would take
    # A, leaving the second pick (only near A) unmatched. The maximum matching pairs both.
    truth = [(0.0, 0.0), (10.0, 0.0)]
    result = match_picks([(4.9, 0.0), (-1.0, 0.0)], [0.9, 0.8], truth, 6.0)
    np.testing.assert_array_equal(result.n_true_positives, [1, 2])
    assert result.recall == 1.0
    assert result.average_precision == 1.0
    assert sorted(zip(result.pick_index.tolist(), result.truth_index.tolist())) == [(0, 1), (1, 0)]
    assert result.centring_error_px == pytest.approx((5.1 + 1.0) / 2)


def test_reported_pairs_have_least_total_distance():
    # Both assignments are complete; the crossing one would cost 2.8 + 2.8 px, the direct one 0.4 px.
    result = match_picks([(0.2, 0.0), (2.8, 0.0)], None, [(0.0, 0.0), (3.0, 0.0)], 5.0)
    assert sorted(zip(result.pick_index.tolist(), result.truth_index.tolist())) == [(0, 0), (1, 1)]
    assert result.centring_error_px == pytest.approx(0.2)


def test_prefix_true_positives_equal_a_full_assignment_per_prefix():
    # The incremental augmenting-path counts against linear_sum_assignment on each prefix, in a
    # crowded field where many picks compete for the same truth.
    rng = np.random.default_rng(3)
    truth = rng.uniform(0, 100, size=(40, 2))
    picks = np.concatenate([truth + rng.normal(0, 4, size=truth.shape), rng.uniform(0, 100, size=(30, 2))])
    scores = rng.permutation(len(picks)).astype(float)
    result = match_picks(picks, scores, truth, 7.0)
    order = np.argsort(-scores)
    for k, true_positives in zip(result.n_selected, result.n_true_positives):
        prefix = match_picks(picks[order[:k]], None, truth, 7.0)
        assert len(prefix.pick_index) == true_positives
    assert len(result.pick_index) == result.true_positives_at_best


def test_tied_scores_enter_together_and_order_does_not_matter():
    truth = [(0.0, 0.0), (100.0, 0.0), (200.0, 0.0)]
    picks = [(0.0, 0.0), (50.0, 50.0), (100.0, 0.0)]  # TP and FP tied at 0.9, then TP at 0.5
    result = match_picks(picks, [0.9, 0.9, 0.5], truth, 10.0)
    np.testing.assert_array_equal(result.thresholds, [0.9, 0.5])
    np.testing.assert_array_equal(result.n_selected, [2, 3])
    np.testing.assert_array_equal(result.n_true_positives, [1, 2])
    # AP = 1/3 * 1/2 + 1/3 * 2/3 (a tie-break putting the TP first would give 5/9).
    assert result.average_precision == pytest.approx(7 / 18)
    swapped = match_picks(picks[::-1], [0.5, 0.9, 0.9], truth, 10.0)
    assert swapped.average_precision == pytest.approx(7 / 18)
    assert swapped.to_dict()["curve"] == result.to_dict()["curve"]


def test_no_picks():
    result = match_picks(np.zeros((0, 2)), [], TRUTH, 10.0)
    assert (result.precision, result.recall, result.f1, result.average_precision) == (1.0, 0.0, 0.0, 0.0)
    assert result.threshold is None and result.centring_error_px is None
    summary = result.to_dict()
    assert summary["curve"] == {"threshold": [], "n_selected": [], "recall": [], "precision": []}
    json.dumps(summary, allow_nan=False)


def test_no_truth_makes_every_pick_false_and_recall_undefined():
    result = match_picks([(0, 0), (5, 5)], [0.9, 0.1], [], 10.0)
    assert result.precision == 0.0
    assert result.recall is None and result.f1 is None and result.average_precision is None
    assert result.threshold is None and result.selected_at_best == 2
    summary = result.to_dict()
    assert summary["curve"]["recall"] == [None, None]
    assert summary["curve"]["precision"] == [0.0, 0.0]
    json.dumps(summary, allow_nan=False)
    neither = match_picks([], None, [], 10.0)
    assert (neither.precision, neither.recall, neither.average_precision) == (1.0, None, None)


def test_radius_is_inclusive():
    # A 3-4-5 triangle: exactly 5 px apart.
    assert match_picks([(3.0, 4.0)], [1.0], [(0.0, 0.0)], 5.0).recall == 1.0
    assert match_picks([(3.0, 4.0)], [1.0], [(0.0, 0.0)], 5.0 - 1e-9).recall == 0.0
    assert match_picks([(0.0, 7.5)], None, [(0.0, 0.0)], 7.5).centring_error_px == 7.5


def test_unranked_picks_give_one_point():
    result = match_picks([(0, 0), (100, 1), (50, 50)], None, TRUTH, 10.0)
    assert result.threshold is None
    np.testing.assert_array_equal(result.n_selected, [3])
    assert result.precision == pytest.approx(2 / 3) and result.recall == pytest.approx(1 / 2)
    assert result.average_precision == pytest.approx(1 / 3)  # precision x recall
    assert result.to_dict()["curve"]["threshold"] == [None]


def test_malformed_inputs_raise_value_error():
    with pytest.raises(ValueError, match="scores must have shape"):
        match_picks([(0, 0)], [1.0, 2.0], TRUTH, 10.0)
    with pytest.raises(ValueError, match="radius_px"):
        match_picks([(0, 0)], [1.0], TRUTH, 0.0)
    with pytest.raises(ValueError, match=r"picks_xy must have shape \(N, 2\)"):
        match_picks([1.0, 2.0, 3.0], None, TRUTH, 10.0)


def _two_micrographs():
    """Micrograph 1: TP at 0.9, FP at 0.5. Micrograph 2: FP at 0.8, TPs at 0.7 and 0.6. Two truths each."""
    truth = [(0.0, 0.0), (100.0, 0.0)]
    first = match_picks([(1.0, 0.0), (500.0, 500.0)], [0.9, 0.5], truth, 10.0, diameter_px=20.0)
    second = match_picks([(400.0, 0.0), (0.0, 3.0), (100.0, 0.0)], [0.8, 0.7, 0.6], truth, 10.0, diameter_px=40.0)
    return first, second


def test_pooled_curve_merges_picks_by_score():
    first, second = _two_micrographs()
    assert first.average_precision == pytest.approx(1 / 2)
    assert second.average_precision == pytest.approx(1 / 2 * 1 / 2 + 1 / 2 * 2 / 3)
    pooled = pool_matches([first, second])
    # Merged ranking 0.9 TP, 0.8 FP, 0.7 TP, 0.6 TP, 0.5 FP against 4 truths.
    np.testing.assert_array_equal(pooled.n_true_positives, [1, 1, 2, 3, 3])
    assert pooled.average_precision == pytest.approx(1 / 4 * (1 + 2 / 3 + 3 / 4))  # 29/48
    assert pooled.average_precision != pytest.approx((first.average_precision + second.average_precision) / 2)
    assert pooled.threshold == 0.6
    assert (pooled.precision, pooled.recall, pooled.f1) == pytest.approx((3 / 4, 3 / 4, 3 / 4))
    # Pairs at the pooled threshold: 1 px (of 20) in the first micrograph, 3 px and 0 px (of 40) in the second.
    assert pooled.centring_error_px == pytest.approx(4 / 3)
    assert pooled.centring_error_diameters == pytest.approx((1 / 20 + 3 / 40) / 3)
    # Indices are into the concatenation: the second micrograph's picks start at 2, its truths at 2.
    assert sorted(zip(pooled.pick_index.tolist(), pooled.truth_index.tolist())) == [(0, 0), (3, 2), (4, 3)]


def test_pooled_ties_across_micrographs_enter_together():
    first = match_picks([(0.0, 0.0)], [0.5], TRUTH, 10.0)
    second = match_picks([(50.0, 50.0)], [0.5], TRUTH, 10.0)
    pooled = pool_matches([first, second])
    np.testing.assert_array_equal(pooled.n_selected, [2])
    assert pooled.precision == 0.5 and pooled.recall == pytest.approx(1 / 8)


def test_pooling_ranked_with_unranked_is_refused():
    ranked = match_picks([(0.0, 0.0)], [0.5], TRUTH, 10.0)
    unranked = match_picks([(0.0, 0.0)], None, TRUTH, 10.0)
    with pytest.raises(ValueError, match="unranked"):
        pool_matches([ranked, unranked])
    assert pool_matches([ranked, match_picks([], None, TRUTH, 10.0)]).ranked


def _write_pair(picks_dir, truth_dir, name, picks_xy, scores, truth_xy):
    write_coordinates(picks_dir / f"{name}.star", _coords(picks_xy, scores))
    write_coordinates(truth_dir / f"{name}.star", _coords(truth_xy))


def test_score_directories_with_pick_json(tmp_path):
    picks_dir, truth_dir = tmp_path / "picks", tmp_path / "truth"
    _write_pair(picks_dir, truth_dir, "a", [(1, 0), (500, 500)], [0.9, 0.5], [(0, 0), (100, 0)])
    _write_pair(picks_dir, truth_dir, "b", [(400, 0), (0, 3), (100, 0)], [0.8, 0.7, 0.6], [(0, 0), (100, 0)])
    write_coordinates(truth_dir / "c.star", _coords([(0, 0)]))  # no picks file: all misses
    # Diameter 40 A at 2 A/px: 20 px, radius 10 px; a dict of pixel sizes keyed by file name.
    write_json(picks_dir / "pick.json", {"diameter_a": 40.0, "pixel_size_a": {"a.mrc": 2.0, "b.mrc": 2.0, "c": 2.0}})
    score = score_directories(picks_dir, truth_dir)
    assert list(score.micrographs) == ["a", "b", "c"]
    assert score.radius_px("a") == 10.0 and score.diameter_px("b") == 20.0
    assert score.micrographs["c"].n_picks == 0 and score.micrographs["c"].recall == 0.0
    first, second = _two_micrographs()
    assert score.micrographs["a"].average_precision == pytest.approx(first.average_precision)
    assert score.micrographs["b"].average_precision == pytest.approx(second.average_precision)
    # Pooled over 5 truths now (c adds a miss): 1/5 (1 + 2/3 + 3/4).
    assert score.pooled.n_truth == 5
    assert score.pooled.average_precision == pytest.approx((1 + 2 / 3 + 3 / 4) / 5)

    summary = score.to_dict()
    assert summary["micrographs"]["a"]["radius_px"] == 10.0
    assert summary["pooled"]["ap"] == pytest.approx(score.pooled.average_precision)
    assert summary["pooled"]["curve"]["recall"] == pytest.approx([1 / 5, 1 / 5, 2 / 5, 3 / 5, 3 / 5])
    write_score_json(tmp_path / "out" / "score.json", score)
    assert json.loads((tmp_path / "out" / "score.json").read_text()) == json.loads(json.dumps(summary))
    lines = score.table().splitlines()
    assert [line.split()[0] for line in lines if line[:1].isalpha()] == ["micrograph", "a", "b", "c", "pooled"]
    assert len({len(line) for line in lines}) == 1  # fixed width
    # An explicit value wins over pick.json: radius 0.5 * 40 / 4 = 5 px.
    assert score_directories(picks_dir, truth_dir, pixel_size_a=4.0).radius_px("a") == 5.0


def test_score_directories_reads_a_dataset_manifest(tmp_path):
    dataset, picks_dir = tmp_path / "dataset", tmp_path / "picks"
    write_json(dataset / "manifest.json", {"particle_diameter_a": 30.0, "pixel_size_a": 1.5})
    truth_xy = [(10.0, 10.0), (60.0, 10.0)]
    write_coordinates(dataset / "coordinates" / "m.star", _coords(truth_xy))
    # A CSV picks file: 5 px off (radius 0.5 * 30 / 1.5 = 10 px) and 10 px off (inclusive).
    write_coordinates(picks_dir / "m.csv", _coords([(15.0, 10.0), (60.0, 20.0)], [2.0, 1.0]))
    score = score_directories(picks_dir, dataset / "coordinates", radius_fraction=0.5)
    result = score.micrographs["m"]
    assert score.radius_px("m") == pytest.approx(10.0)
    assert (result.recall, result.precision, result.average_precision) == (1.0, 1.0, 1.0)
    assert result.centring_error_px == pytest.approx(7.5)
    assert result.centring_error_diameters == pytest.approx(0.375)


def test_score_directories_errors_name_the_problem(tmp_path):
    picks_dir, truth_dir = tmp_path / "picks", tmp_path / "truth"
    _write_pair(picks_dir, truth_dir, "a", [(0, 0)], [1.0], [(0, 0)])
    with pytest.raises(InputError, match="--diameter and --pixel-size"):
        score_directories(picks_dir, truth_dir)
    write_json(picks_dir / "pick.json", {"diameter_a": 40.0})
    with pytest.raises(InputError, match="pixel_size_a.*--diameter and --pixel-size"):
        score_directories(picks_dir, truth_dir)
    write_json(picks_dir / "pick.json", {"diameter_a": -1.0, "pixel_size_a": 1.0})
    with pytest.raises(InputError) as error:
        score_directories(picks_dir, truth_dir)
    assert error.value.source == str(picks_dir / "pick.json")

    orphan = picks_dir / "orphan.star"
    write_coordinates(orphan, _coords([(0, 0)], [1.0]))
    with pytest.raises(InputError) as error:
        score_directories(picks_dir, truth_dir, diameter_a=40.0, pixel_size_a=2.0)
    assert error.value.source == str(orphan)
    orphan.unlink()

    write_coordinates(picks_dir / "b.star", _coords([(0, 0)]))  # no scores beside a scored file
    write_coordinates(truth_dir / "b.star", _coords([(0, 0)]))
    with pytest.raises(InputError, match="no scores") as error:
        score_directories(picks_dir, truth_dir, diameter_a=40.0, pixel_size_a=2.0)
    assert error.value.source == str(picks_dir / "b.star")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as error:
        score_directories(empty, truth_dir, diameter_a=40.0, pixel_size_a=2.0)
    assert error.value.source == str(empty)


# Real annotations (EMPIAR-10146 apoferritin): about 65 px across at 1.85 A/px; the closest two
# annotated centres of a micrograph are 35 px apart, so a radius of 0.5 * 120 / 1.85 = 32.4 px
# never reaches a neighbour.
APOFERRITIN_DIAMETER_A, APOFERRITIN_PIXEL_SIZE_A = 120.0, 1.85


def test_real_annotations_against_themselves(apoferritin_dir):
    truth_dir = apoferritin_dir / "coordinates"
    score = score_directories(
        truth_dir, truth_dir, diameter_a=APOFERRITIN_DIAMETER_A, pixel_size_a=APOFERRITIN_PIXEL_SIZE_A
    )
    assert len(score.micrographs) == 10
    assert score.pooled.n_truth > 1500
    for result in [*score.micrographs.values(), score.pooled]:
        assert (result.precision, result.recall, result.average_precision) == (1.0, 1.0, 1.0)
        assert result.centring_error_px == 0.0


def test_real_annotations_with_displaced_picks(apoferritin_dir, tmp_path):
    """Every 10th centre moved 2000 px away (far beyond the radius), the rest shifted by 2 px."""
    rng = np.random.default_rng(0)
    radius_px = 0.5 * APOFERRITIN_DIAMETER_A / APOFERRITIN_PIXEL_SIZE_A
    n_truth = n_moved = 0
    for path in sorted((apoferritin_dir / "coordinates").glob("*.star")):
        truth = read_coordinates(path)
        xy = np.stack([truth.x_px, truth.y_px], axis=1)
        moved = np.arange(len(xy)) % 10 == 3
        angle = rng.uniform(0, 2 * np.pi, size=len(xy))
        xy = xy + 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        xy[moved, 0] += 2000.0
        # Moved picks score lowest, so the ranking puts every true pick first.
        write_coordinates(tmp_path / "ranked" / path.name, _coords(xy, np.where(moved, 0.0, 1.0)))
        write_coordinates(tmp_path / "unranked" / path.name, _coords(xy))
        n_truth += len(xy)
        n_moved += int(moved.sum())
    expected_recall = (n_truth - n_moved) / n_truth
    assert 0.09 < n_moved / n_truth < 0.11

    kwargs = dict(diameter_a=APOFERRITIN_DIAMETER_A, pixel_size_a=APOFERRITIN_PIXEL_SIZE_A)
    ranked = score_directories(tmp_path / "ranked", apoferritin_dir / "coordinates", **kwargs)
    assert ranked.pooled.threshold == 1.0
    assert ranked.pooled.recall == pytest.approx(expected_recall)
    assert ranked.pooled.precision == 1.0
    assert ranked.pooled.average_precision == pytest.approx(expected_recall)  # precision 1 up to that recall
    assert ranked.pooled.centring_error_px == pytest.approx(2.0, abs=1e-5)
    assert ranked.pooled.centring_error_diameters == pytest.approx(2.0 / (2 * radius_px), abs=1e-6)

    unranked = score_directories(tmp_path / "unranked", apoferritin_dir / "coordinates", **kwargs)
    assert unranked.pooled.recall == pytest.approx(expected_recall)
    assert unranked.pooled.precision == pytest.approx(expected_recall)  # as many picks as truths
    assert unranked.pooled.average_precision == pytest.approx(expected_recall**2)
