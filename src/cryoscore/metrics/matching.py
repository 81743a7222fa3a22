"""One-to-one matching of picks to true centres within a radius (:mod:`cryoscore.metrics.picking` uses it).

Picks and centres are (x, y) pixels, arrays (N, 2) and (M, 2); a pick and a centre may pair
when their distance is at most the radius (inclusive). The graph of allowed pairs is sparse
and built with a k-d tree.

- :func:`prefix_matching_gains`: the size of the *maximum* matching of every prefix of a
  ranking at once, by Kuhn's augmenting-path algorithm: each new pick searches for an
  augmenting path; the matching grows by one exactly when one exists, and a pick that finds
  none never enlarges a later prefix's matching, so one pass is exact for every prefix.
- :func:`closest_maximum_matching`: a maximum matching of least total distance, from
  :func:`scipy.optimize.linear_sum_assignment` on each connected block of the graph.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

_EMPTY_INDEX = np.zeros(0, dtype=np.intp)
_EMPTY_FLOAT = np.zeros(0, dtype=np.float64)


def _edges(picks_xy: np.ndarray, truth_xy: np.ndarray, radius_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (pick, truth) pairs at distance <= ``radius_px``: index arrays (E,) and distances (E,), px.

    The k-d tree proposes candidates within a slightly larger radius; the exact inclusive
    test is done here, on ``hypot``, so every caller agrees on which pairs match.
    """
    if len(picks_xy) == 0 or len(truth_xy) == 0:
        return _EMPTY_INDEX, _EMPTY_INDEX, _EMPTY_FLOAT
    candidates = cKDTree(truth_xy).query_ball_point(picks_xy, r=radius_px * (1 + 1e-9))
    counts = [len(found) for found in candidates]
    pick_index = np.repeat(np.arange(len(picks_xy)), counts)
    truth_index = np.array([index for found in candidates for index in found], dtype=np.intp)
    offset = picks_xy[pick_index] - truth_xy[truth_index]
    distance = np.hypot(offset[:, 0], offset[:, 1])
    keep = distance <= radius_px
    return pick_index[keep], truth_index[keep], distance[keep]


def _augment(start: int, adjacency: list[list[int]], partner: list[int], owner: list[int], stamp: list[int]) -> bool:
    """Search an augmenting path from the unmatched pick ``start``; flip it and return True if found.

    ``partner[pick]`` is the truth matched to a pick and ``owner[truth]`` the pick matched
    to a truth (-1 when free); ``stamp[truth] == start`` marks truths visited in this search.
    Iterative depth-first search, so long alternating paths cannot overflow the stack.
    """
    stack, cursors = [start], [0]
    while stack:
        neighbours = adjacency[stack[-1]]
        cursor = cursors[-1]
        while cursor < len(neighbours) and stamp[neighbours[cursor]] == start:
            cursor += 1
        if cursor == len(neighbours):
            stack.pop()
            cursors.pop()
            continue
        truth = neighbours[cursor]
        cursors[-1] = cursor + 1
        stamp[truth] = start
        if owner[truth] < 0:
            # Each pick on the stack takes the truth the next one gives up (the free one at the top).
            for pick in reversed(stack):
                partner[pick], truth = truth, partner[pick]
                owner[partner[pick]] = pick
            return True
        stack.append(owner[truth])
        cursors.append(0)
    return False


def prefix_matching_gains(ranked_xy: np.ndarray, truth_xy: np.ndarray, radius_px: float) -> np.ndarray:
    """(N,) int64: 1 where adding pick k to picks 0..k-1 enlarges the maximum matching, else 0.

    ``np.cumsum`` of the result is the maximum matching size of every prefix of ``ranked_xy``.
    """
    gains = np.zeros(len(ranked_xy), dtype=np.int64)
    pick_index, truth_index, distance = _edges(ranked_xy, truth_xy, radius_px)
    adjacency: list[list[int]] = [[] for _ in range(len(ranked_xy))]
    for edge in np.lexsort((distance, pick_index)):  # nearest truth tried first
        adjacency[pick_index[edge]].append(int(truth_index[edge]))
    partner, owner, stamp = [-1] * len(ranked_xy), [-1] * len(truth_xy), [-1] * len(truth_xy)
    for pick, neighbours in enumerate(adjacency):
        if neighbours and _augment(pick, adjacency, partner, owner, stamp):
            gains[pick] = 1
    return gains


def closest_maximum_matching(
    picks_xy: np.ndarray, truth_xy: np.ndarray, radius_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A maximum one-to-one matching within ``radius_px`` of least total distance.

    Returns pick indices (P,), truth indices (P,) and distances (P,) in pixels. Solved by
    ``linear_sum_assignment`` on each connected block of the pick-truth graph; a pair
    beyond the radius costs more than any set of allowed pairs could, so the assignment
    first maximises the allowed pairs, then minimises their total distance; the
    prohibitive pairs are dropped.
    """
    pick_index, truth_index, distance = _edges(picks_xy, truth_xy, radius_px)
    if len(pick_index) == 0:
        return _EMPTY_INDEX, _EMPTY_INDEX, _EMPTY_FLOAT
    n_picks = len(picks_xy)
    graph = coo_matrix(
        (np.ones(len(pick_index)), (pick_index, n_picks + truth_index)), shape=(n_picks + len(truth_xy),) * 2
    )
    _, labels = connected_components(graph, directed=False)
    edge_label = labels[pick_index]
    by_block = np.argsort(edge_label, kind="stable")
    matched: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for edges in np.split(by_block, np.flatnonzero(np.diff(edge_label[by_block])) + 1):
        rows, row_of_edge = np.unique(pick_index[edges], return_inverse=True)
        cols, col_of_edge = np.unique(truth_index[edges], return_inverse=True)
        prohibitive = (min(len(rows), len(cols)) + 1) * radius_px + 1.0
        cost = np.full((len(rows), len(cols)), prohibitive)
        cost[row_of_edge, col_of_edge] = distance[edges]
        row, col = linear_sum_assignment(cost)
        allowed = cost[row, col] <= radius_px
        matched.append((rows[row[allowed]], cols[col[allowed]], cost[row, col][allowed]))
    return tuple(np.concatenate(arrays) for arrays in zip(*matched))  # type: ignore[return-value]
