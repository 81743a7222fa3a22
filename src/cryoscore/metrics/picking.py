"""Particle picks judged against ground-truth centres: precision, recall, F1, average precision.

Coordinates are (x, y) in pixels of the micrograph, as in :mod:`cryoscore.io.coords`.

Definitions
-----------
Match
    A pick and a true centre match when their Euclidean distance is at most the matching
    radius (inclusive: a pick exactly at the radius matches). Matching is one-to-one.
Thresholds
    Picks are ranked by descending score; a threshold keeps the picks whose score is
    ``>=`` it. The curve has one point per *distinct* score, so picks with equal scores
    enter together and the order of tied picks never matters.
True positives
    At each threshold, TP is the size of the *maximum* one-to-one matching between the kept
    picks and the truth (not a greedy one), found for every prefix of the ranking at once
    (:func:`~cryoscore.metrics.matching.prefix_matching_gains`, Kuhn's augmenting paths).
Precision, recall, F1
    ``precision = TP / kept``, ``recall = TP / n_truth``, ``F1 = 2 TP / (kept + n_truth)``
    (0 when TP is 0). The best threshold is the one of highest F1; on a tie the highest
    threshold (fewest picks) wins.
Average precision (AP)
    The area under the uninterpolated step precision-recall curve, as scikit-learn's
    ``average_precision_score``: ``AP = sum_k (R_k - R_{k-1}) P_k`` over the thresholds in
    descending order with ``R_0 = 0``. Precision is not made monotone, and recall is
    divided by all true particles, so truth that no pick reaches lowers AP (AP <= max recall).
Matched pairs and centring error
    At the best threshold, the pairs reported are a maximum matching of least total
    distance, from :func:`scipy.optimize.linear_sum_assignment` on each connected block of
    the pick-truth graph (pairs beyond the radius get a prohibitive cost and are dropped).
    It has the same size as the augmenting-path TP. The centring error is the mean distance
    of these pairs, in pixels and in particle diameters.
Pooling micrographs
    The pooled curve merges all picks of all micrographs into one ranking by score; at each
    threshold the TP counts of the micrographs add up. It is not an average of
    per-micrograph values.
Edge cases
    No picks: precision 1.0, recall 0, F1 0, AP 0; the curve is empty and there is no
    threshold. No truth: every pick is a false positive, precision 0; recall, F1 and AP are
    undefined (NaN in arrays, None in scalars and in :meth:`MatchResult.to_dict`). Picks
    without scores (unranked) give a single point with all picks and no threshold, so their
    AP is precision x recall.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cryoscore.metrics.matching import closest_maximum_matching, prefix_matching_gains

_EMPTY_INDEX = np.zeros(0, dtype=np.intp)
_EMPTY_FLOAT = np.zeros(0, dtype=np.float64)


def _points(value: Any, name: str) -> np.ndarray:
    """``value`` as a finite float64 (N, 2) array; an empty input gives (0, 2)."""
    points = np.array(value, dtype=np.float64)
    if points.size == 0:
        points = points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} has NaN or infinite values")
    return points


@dataclasses.dataclass(frozen=True, eq=False)
class _MicrographPicks:
    """The inputs of one micrograph and its picks' matching gains in rank order.

    ``scores`` are zeros when the picks are unranked; ``order`` (N,) sorts the picks by
    descending score and ``gains`` (N,) are :func:`~cryoscore.metrics.matching.prefix_matching_gains` in that order.
    """

    picks_xy: np.ndarray
    scores: np.ndarray
    ranked: bool
    truth_xy: np.ndarray
    radius_px: float
    diameter_px: float | None
    order: np.ndarray
    gains: np.ndarray

    def pairs_at(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`~cryoscore.metrics.matching.closest_maximum_matching` of the picks scoring ``>= threshold``; pick indices into ``picks_xy``."""
        kept = np.flatnonzero(self.scores >= threshold)
        pick_index, truth_index, distance = closest_maximum_matching(
            self.picks_xy[kept], self.truth_xy, self.radius_px
        )
        return kept[pick_index], truth_index, distance


def _optional(value: float) -> float | None:
    """A float for JSON: None for NaN."""
    return None if math.isnan(value) else float(value)


@dataclasses.dataclass(frozen=True, eq=False)
class MatchResult:
    """Picks of one micrograph, or of several pooled, matched one-to-one to the true centres.

    The curve has K points, one per distinct score in descending order (see the module
    docstring); point k keeps the picks scoring ``>= thresholds[k]``. K is 0 without picks
    and 1 for unranked picks.

    Attributes
    ----------
    thresholds:
        (K,) float64 distinct scores, descending (zeros, meaningless, when unranked).
    n_selected:
        (K,) int64 number of picks kept at each threshold.
    n_true_positives:
        (K,) int64 maximum one-to-one matching size between the kept picks and the truth.
    n_picks, n_truth:
        All picks and all true centres.
    ranked:
        False when the picks carry no scores: one point (all picks) and no threshold.
    best_index:
        Index of the highest F1 on the curve (the first on a tie); None without picks or
        without truth.
    pick_index, truth_index:
        (P,) int the pairs matched at the best threshold (a maximum matching of least total
        distance): indices into the ``picks_xy`` and ``truth_xy`` given to :func:`match_picks`,
        or for a pooled result into the concatenation of the micrographs' arrays in order.
    distance_px:
        (P,) float64 distance of each pair, pixels (<= the matching radius).
    distance_diameters:
        (P,) float64 the same in particle diameters, or None when a diameter is unknown.
    """

    thresholds: np.ndarray
    n_selected: np.ndarray
    n_true_positives: np.ndarray
    n_picks: int
    n_truth: int
    ranked: bool
    best_index: int | None
    pick_index: np.ndarray
    truth_index: np.ndarray
    distance_px: np.ndarray
    distance_diameters: np.ndarray | None
    _parts: tuple[_MicrographPicks, ...] = dataclasses.field(repr=False)

    @property
    def precision_curve(self) -> np.ndarray:
        """(K,) TP / kept picks at each threshold."""
        return self.n_true_positives / np.maximum(self.n_selected, 1)

    @property
    def recall_curve(self) -> np.ndarray:
        """(K,) TP / true centres at each threshold; NaN without truth."""
        if self.n_truth == 0:
            return np.full(len(self.thresholds), np.nan)
        return self.n_true_positives / self.n_truth

    @property
    def f1_curve(self) -> np.ndarray:
        """(K,) 2 TP / (kept + n_truth) at each threshold; NaN without truth."""
        if self.n_truth == 0:
            return np.full(len(self.thresholds), np.nan)
        return 2 * self.n_true_positives / (self.n_selected + self.n_truth)

    @property
    def threshold(self) -> float | None:
        """The best threshold (keep picks scoring >= it); None when unranked or there is no best."""
        if self.best_index is None or not self.ranked:
            return None
        return float(self.thresholds[self.best_index])

    @property
    def selected_at_best(self) -> int:
        """Picks kept at the best threshold (all picks when there is no best threshold)."""
        return self.n_picks if self.best_index is None else int(self.n_selected[self.best_index])

    @property
    def true_positives_at_best(self) -> int:
        """TP at the best threshold (0 when there is no best threshold)."""
        return 0 if self.best_index is None else int(self.n_true_positives[self.best_index])

    @property
    def precision(self) -> float:
        """Precision at the best threshold; 1.0 without picks, 0.0 without truth."""
        if self.n_picks == 0:
            return 1.0
        return self.true_positives_at_best / self.selected_at_best

    @property
    def recall(self) -> float | None:
        """Recall at the best threshold; None without truth."""
        return None if self.n_truth == 0 else self.true_positives_at_best / self.n_truth

    @property
    def f1(self) -> float | None:
        """F1 at the best threshold (the highest on the curve); 0.0 without picks, None without truth."""
        if self.n_truth == 0:
            return None
        return 2 * self.true_positives_at_best / (self.selected_at_best + self.n_truth)

    @property
    def average_precision(self) -> float | None:
        """Sum over the curve of (recall step) x precision; 0.0 without picks, None without truth."""
        if self.n_truth == 0:
            return None
        recall_steps = np.diff(self.recall_curve, prepend=0.0)
        return float(np.sum(recall_steps * self.precision_curve))

    @property
    def centring_error_px(self) -> float | None:
        """Mean distance of the pairs matched at the best threshold, pixels; None without pairs."""
        return float(np.mean(self.distance_px)) if len(self.distance_px) else None

    @property
    def centring_error_diameters(self) -> float | None:
        """Mean distance of the matched pairs in particle diameters; None without pairs or diameter."""
        if self.distance_diameters is None or len(self.distance_diameters) == 0:
            return None
        return float(np.mean(self.distance_diameters))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary at the best threshold plus the curve (undefined values are None).

        ``threshold`` keeps picks scoring >= it; ``n_selected`` and ``n_true_positives`` are
        counted there. ``curve`` holds per-threshold lists ``threshold``, ``n_selected``,
        ``recall`` and ``precision``, thresholds descending.
        """
        ranked = self.ranked
        return {
            "n_picks": self.n_picks,
            "n_truth": self.n_truth,
            "threshold": self.threshold,
            "n_selected": self.selected_at_best,
            "n_true_positives": self.true_positives_at_best,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "ap": self.average_precision,
            "centring_error_px": self.centring_error_px,
            "centring_error_diameters": self.centring_error_diameters,
            "curve": {
                "threshold": [float(value) if ranked else None for value in self.thresholds],
                "n_selected": [int(value) for value in self.n_selected],
                "recall": [_optional(value) for value in self.recall_curve],
                "precision": [float(value) for value in self.precision_curve],
            },
        }


def _result(parts: tuple[_MicrographPicks, ...], match_pairs: bool = True) -> MatchResult:
    """The curve, best threshold and matched pairs of the pooled ``parts`` (one part: one micrograph);
    without ``match_pairs`` the pair arrays are left empty."""
    if not parts:
        raise ValueError("no micrographs to score")
    rankings = {part.ranked for part in parts if len(part.picks_xy)}
    if len(rankings) > 1:
        raise ValueError("cannot pool ranked picks with unranked ones (picks without scores)")
    ranked = rankings.pop() if rankings else True
    scores = np.concatenate([part.scores[part.order] for part in parts])
    merged = np.argsort(-scores, kind="stable")
    scores = scores[merged]
    true_positives = np.cumsum(np.concatenate([part.gains for part in parts])[merged])
    # The last pick of each run of equal scores closes one threshold.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if len(scores) else _EMPTY_INDEX
    n_truth = sum(len(part.truth_xy) for part in parts)
    n_selected = ends + 1
    n_true_positives = true_positives[ends]
    best_index = None
    if len(ends) and n_truth:
        best_index = int(np.argmax(n_true_positives / (n_selected + n_truth)))
    pick_index, truth_index = [_EMPTY_INDEX], [_EMPTY_INDEX]
    distance_px, distance_diameters = [_EMPTY_FLOAT], [_EMPTY_FLOAT]
    pick_offset = truth_offset = 0
    for part in parts:
        if best_index is not None and match_pairs:
            picks, truths, distance = part.pairs_at(scores[ends[best_index]])
            pick_index.append(picks + pick_offset)
            truth_index.append(truths + truth_offset)
            distance_px.append(distance)
            distance_diameters.append(distance / (np.nan if part.diameter_px is None else part.diameter_px))
        pick_offset += len(part.picks_xy)
        truth_offset += len(part.truth_xy)
    in_diameters = np.concatenate(distance_diameters)
    return MatchResult(
        thresholds=scores[ends],
        n_selected=n_selected.astype(np.int64),
        n_true_positives=n_true_positives.astype(np.int64),
        n_picks=len(scores),
        n_truth=n_truth,
        ranked=ranked,
        best_index=best_index,
        pick_index=np.concatenate(pick_index),
        truth_index=np.concatenate(truth_index),
        distance_px=np.concatenate(distance_px),
        distance_diameters=None if np.any(np.isnan(in_diameters)) else in_diameters,
        _parts=parts,
    )


def match_picks(
    picks_xy: Any,
    scores: Any,
    truth_xy: Any,
    radius_px: float,
    *,
    diameter_px: float | None = None,
) -> MatchResult:
    """Match the picks of one micrograph to its true particle centres, at every score threshold.

    Parameters
    ----------
    picks_xy:
        (N, 2) picked centres (x, y), pixels; N may be 0.
    scores:
        (N,) pick scores, higher is more confident; None for unranked picks (one point,
        all picks).
    truth_xy:
        (M, 2) true centres (x, y), pixels; M may be 0.
    radius_px:
        Matching radius, pixels (> 0); a pair at exactly this distance matches.
    diameter_px:
        Particle diameter, pixels, used only to express the centring error in diameters.

    Returns
    -------
    MatchResult: TP per threshold from the maximum matching of each prefix of the ranking
    (augmenting paths), and at the best-F1 threshold the least-distance maximum matching
    (``linear_sum_assignment``). Raises ValueError for malformed inputs.
    """
    picks = _points(picks_xy, "picks_xy")
    truth = _points(truth_xy, "truth_xy")
    if not (math.isfinite(radius_px) and radius_px > 0):
        raise ValueError(f"radius_px must be a positive number, got {radius_px}")
    if diameter_px is not None and not (math.isfinite(diameter_px) and diameter_px > 0):
        raise ValueError(f"diameter_px must be a positive number, got {diameter_px}")
    ranked = scores is not None
    score_values = np.zeros(len(picks)) if scores is None else np.array(scores, dtype=np.float64).reshape(-1)
    if score_values.shape != (len(picks),):
        raise ValueError(f"scores must have shape ({len(picks)},), got {np.shape(scores)}")
    if not np.all(np.isfinite(score_values)):
        raise ValueError("scores has NaN or infinite values")
    order = np.argsort(-score_values, kind="stable")
    part = _MicrographPicks(
        picks_xy=picks,
        scores=score_values,
        ranked=ranked,
        truth_xy=truth,
        radius_px=float(radius_px),
        diameter_px=None if diameter_px is None else float(diameter_px),
        order=order,
        gains=prefix_matching_gains(picks[order], truth, float(radius_px)),
    )
    return _result((part,))


def pool_matches(results: Sequence[MatchResult], *, match_pairs: bool = True) -> MatchResult:
    """One result for the picks of several micrographs: all picks merged into one ranking by score.

    At each threshold the micrographs' TP counts add up (each micrograph keeps its own
    radius and truth). A micrograph may appear more than once (a bootstrap resample).
    ``match_pairs=False`` skips the least-distance pairs at the best threshold (empty
    ``pick_index``, ``truth_index`` and distances; the curve, AP and F1 are unchanged),
    which makes resampling loops fast. Raises ValueError when ranked and unranked picks
    are mixed (micrographs without picks are neutral).
    """
    return _result(tuple(part for result in results for part in result._parts), match_pairs)
