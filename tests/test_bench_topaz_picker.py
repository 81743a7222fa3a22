"""The Topaz-picker comparison's own pieces: its torchvision stand-in, its STAR reader and its scoring of Topaz's picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscore.io.coords import ParticleCoordinates, read_coordinates


def test_the_rotate_stand_in_turns_a_crop_like_a_quarter_turn_and_keeps_its_shape(benchmarks_on_path):
    """Topaz augments crops with torchvision's rotate; the stand-in must turn about the centre, nearest-neighbour,
    zeros outside: by 90 degrees an odd square crop is exactly a quarter turn, by 360 unchanged, by 45 the
    corners go to zero and the centre pixel stays."""
    from topaz_picker import rotate

    crop = torch.arange(1, 1 + 2 * 71 * 71, dtype=torch.float32).reshape(2, 71, 71)
    quarter = rotate(crop, 90.0)
    assert quarter.shape == crop.shape
    assert torch.equal(quarter, torch.rot90(crop, 1, dims=(-2, -1))) or torch.equal(
        quarter, torch.rot90(crop, -1, dims=(-2, -1)))
    assert torch.equal(rotate(crop, 360.0), crop)
    eighth = rotate(crop, 45.0)
    assert torch.all(eighth[:, 0, 0] == 0) and torch.all(eighth[:, 35, 35] == crop[:, 35, 35])


def test_the_star_reader_agrees_with_cryoscores_on_a_real_annotation(benchmarks_on_path, apoferritin_dir):
    from topaz_picker import read_star_xy

    star = sorted((apoferritin_dir / "coordinates").glob("*.star"))[0]
    truth = read_coordinates(star)
    xy = np.asarray(read_star_xy(star))
    assert len(xy) == len(truth) > 100
    np.testing.assert_allclose(xy, np.stack([truth.x_px, truth.y_px], axis=1))


def test_topaz_picks_are_scored_per_fold_like_the_learned_judge(benchmarks_on_path, tmp_path):
    """Each micrograph's picks are read from its own fold's file (micrograph i in fold i mod k); true picks ranked
    above a false one give AP 1, a micrograph with no picks AP 0, and a missing seed's file is an error."""
    from bench_topaz_picker import topaz_results

    rng = np.random.default_rng(0)
    names = [f"m{index}" for index in range(5)]
    truths = [ParticleCoordinates(x_px=rng.uniform(50, 950, 20), y_px=rng.uniform(50, 950, 20)) for _ in names]
    for fold in range(2):
        lines = ["image_name\tx_coord\ty_coord\tscore"]
        for index in range(fold, 5, 2):
            if index == 4:
                continue  # no picks on the last micrograph
            for x, y in zip(truths[index].x_px, truths[index].y_px):
                lines.append(f"{names[index]}\t{x + 2:.1f}\t{y:.1f}\t5.0")
            lines.append(f"{names[index]}\t2000\t2000\t1.0")
        (tmp_path / f"picks_seed0_fold{fold}_epoch1.txt").write_text("\n".join(lines) + "\n")
    results = topaz_results(tmp_path, names, truths, [0], 2, 1, radius_px=10.0, diameter_px=20.0)
    assert len(results) == 1 and len(results[0]) == 5
    for index in range(4):
        assert results[0][index].average_precision == pytest.approx(1.0)
    assert results[0][4].average_precision == pytest.approx(0.0)
    with pytest.raises(FileNotFoundError):
        topaz_results(tmp_path, names, truths, [1], 2, 1, radius_px=10.0, diameter_px=20.0)


def test_topaz_records_of_fold_subsets_merge_only_when_every_fold_is_there_and_they_agree(benchmarks_on_path,
                                                                                        tmp_path):
    """topaz_picker.py --run-folds writes one record per process; the scorer merges their seconds and commands,
    waits (None) while a fold is missing, and refuses records whose settings differ."""
    import json

    from bench_topaz_picker import topaz_record

    settings = {"topaz": "0.3.20", "torch": "2.13.0", "threads": 1, "names": ["a", "b", "c"], "folds": 3,
                "seeds": [0], "scale": 4, "extract_radius_px": 8, "epochs": 5, "epoch_size": 200}
    assert topaz_record(tmp_path) is None
    (tmp_path / "topaz_picker_folds-0-1.json").write_text(json.dumps(
        {**settings, "run_folds": [0, 1], "command": ["first"], "seconds": {"seed0_fold0": 1.0, "seed0_fold1": 2.0}}))
    assert topaz_record(tmp_path) is None
    (tmp_path / "topaz_picker_folds-2.json").write_text(json.dumps(
        {**settings, "run_folds": [2], "command": ["second"], "seconds": {"seed0_fold2": 3.0}}))
    merged = topaz_record(tmp_path)
    assert merged is not None and merged["commands"] == [["first"], ["second"]]
    assert merged["seconds"] == {"seed0_fold0": 1.0, "seed0_fold1": 2.0, "seed0_fold2": 3.0}
    (tmp_path / "topaz_picker.json").write_text(json.dumps(
        {**settings, "epochs": 10, "run_folds": None, "command": ["third"], "seconds": {}}))
    with pytest.raises(SystemExit, match="disagree"):
        topaz_record(tmp_path)
