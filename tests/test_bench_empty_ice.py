"""The empty-ice analysis: the rank correlation between a run's learned APs and its particle-free learned picks."""

from __future__ import annotations


def _dataset(aps: dict[str, float], picks: dict[str, float]) -> dict:
    return {"denoisers": {name: {"learned": {"ap": ap}, "blob": {"ap": 0.5}} for name, ap in aps.items()},
            "particle_free": {**{name: {"learned_picks_per_micrograph": count} for name, count in picks.items()},
                              "pass": True, "picker": "learned"}}


def test_more_empty_ice_picks_with_lower_ap_correlates_minus_one_and_others_are_skipped(benchmarks_on_path):
    from empty_ice_picks_vs_ap import rank_correlation_rows

    aps = {"raw": 0.6, "default": 0.5, "n2n": 0.3, "topaz": 0.4}
    metrics = {"datasets": {
        "hard": _dataset(aps, {"raw": 10.0, "default": 20.0, "n2n": 50.0, "topaz": 30.0}),
        "blob only": {"denoisers": {name: {"blob": {"ap": ap}} for name, ap in aps.items()},
                      "particle_free": {name: {"picks_per_micrograph": 5.0} for name in aps}},
        "untied": _dataset(aps, {"raw": 30.0, "default": 20.0, "n2n": 10.0, "topaz": 40.0}),
    }}
    rows = rank_correlation_rows(metrics, "run", without=set())
    assert len(rows) == 2  # no learned counts, no row
    assert rows[0].startswith("| run | hard | 4 | -1.00 | 0.000 | n2n 50.0, raw 10.0 |")
    assert "| untied | 4 | +0.40 |" in rows[1]  # ranks 4 3 1 2 against 3 2 1 4: 1 - 6 * 6 / (4 * 15)
    assert "| 3 |" in rank_correlation_rows(metrics, "run", without={"topaz"})[0]
