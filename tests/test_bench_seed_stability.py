"""The seed-stability benchmark's runs, one process per seed, joined into one summary."""

from __future__ import annotations

import json

import pytest


def _write_run(directory, seed, raw_ap, condition=None):
    directory.mkdir()
    runs = [{"denoiser": "raw", "seed": seed, "blob_ap": 0.3, "learned_ap": raw_ap, "correlation_with_clean": 0.1}]
    runs += [{"denoiser": name, "seed": seed, "blob_ap": 0.2 + seed / 10, "learned_ap": 0.5 + seed / 10,
              "correlation_with_clean": 0.2, "loss_curve": [[0, 2.0], [10, 1.0]]} for name in ("score", "guided")]
    results = {"condition": condition or {"specimen": "apoferritin", "dose_e_per_a2": 10.0}, "runs": runs}
    (directory / "results.json").write_text(json.dumps(results))


def test_combined_runs_keep_one_raw_row_and_every_seed(benchmarks_on_path, tmp_path):
    from bench_seed_stability import combine, summarise

    for seed in (0, 1, 2):
        _write_run(tmp_path / f"s{seed}", seed, raw_ap=0.4)
    results = combine([tmp_path / f"s{seed}" for seed in (0, 1, 2)])
    assert [run["denoiser"] for run in results["runs"]].count("raw") == 1
    assert sorted(run["seed"] for run in results["runs"] if run["denoiser"] == "score") == [0, 1, 2]
    summarise(results, tmp_path)
    spread = json.loads((tmp_path / "results.json").read_text())["spread"]["guided"]["learned_ap"]
    assert spread["mean"] == pytest.approx(0.6) and spread["range"] == pytest.approx(0.2)
    assert spread["std"] == pytest.approx(0.1)
    assert "| guided | learned_ap | 0.500 | 0.600 | 0.700 |" in (tmp_path / "results.md").read_text()


def test_runs_of_other_conditions_or_other_raw_numbers_are_refused(benchmarks_on_path, tmp_path):
    from bench_seed_stability import combine

    _write_run(tmp_path / "a", 0, raw_ap=0.4)
    _write_run(tmp_path / "b", 1, raw_ap=0.41)
    _write_run(tmp_path / "c", 2, raw_ap=0.4, condition={"specimen": "apoferritin", "dose_e_per_a2": 20.0})
    with pytest.raises(SystemExit, match="raw rows differ"):
        combine([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(SystemExit, match="different conditions"):
        combine([tmp_path / "a", tmp_path / "c"])
