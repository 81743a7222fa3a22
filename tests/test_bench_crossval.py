"""The learned judge's statistics: folds, pooled values, bootstrap intervals, paired differences."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cryoscore.bench import crossval
from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import (
    CrossValidation,
    annotation_subset,
    bootstrap_interval,
    cross_validate,
    fold_of_each,
    paired_difference,
    picker_training,
    pooled,
    transfer,
)
from cryoscore.io.coords import ParticleCoordinates
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
    assert training.particles_per_micrograph is None
    assert picker_training(settings, 0, 150.0).particles_per_micrograph == 150.0
    with pytest.raises(ValueError, match="folds >= 2"):
        LearnedJudgeSettings(folds=1)


def _dotted(rng: np.random.Generator, n: int, size: int = 200):
    """A (size, size) image that is 1 at ``n`` particle centres and 0 elsewhere, and those centres."""
    centres = rng.choice(size * size, n, replace=False)
    image = np.zeros(size * size, dtype=np.float32)
    image[centres] = 1
    rows, cols = np.divmod(centres, size)
    return image.reshape(size, size), ParticleCoordinates(x_px=cols.astype(float), y_px=rows.astype(float))


class _PerfectPicker:
    """Picks the image's bright pixels, the trained-on label count as every score (to see what it trained on);
    ``attempts`` is how many trainings its record says it took."""

    def __init__(self, labelled: int, attempts: int = 1):
        self.labelled = labelled
        self.record = {"attempts": attempts}

    def pick(self, image, pixel_size_a):
        rows, cols = np.nonzero(image > 0.5)
        return ParticleCoordinates(x_px=cols.astype(float), y_px=rows.astype(float),
                                   figure_of_merit=np.full(len(rows), float(self.labelled)))


@pytest.fixture
def fake_training(monkeypatch):
    """train_picker replaced by a recorder returning a perfect picker: the calls' labels and training settings.
    The second call's picker says it had to be trained again."""
    calls = []

    def fake(images, labels, pixel_size_a, diameter_a, *, training, background, device):
        calls.append({"n_images": len(images), "labels": [len(label) for label in labels], "training": training,
                      "background": background})
        return _PerfectPicker(sum(len(label) for label in labels), attempts=2 if len(calls) == 2 else 1)

    monkeypatch.setattr(crossval, "train_picker", fake)
    return calls


def test_annotation_subset_keeps_budget_annotations_of_the_given_micrographs():
    rng = np.random.default_rng(3)
    truths = [_dotted(rng, n)[1] for n in (30, 50)]
    subset = annotation_subset(truths, 20, np.random.default_rng(0))
    assert [len(truth) for truth in subset] != [0, 20] and sum(len(truth) for truth in subset) == 20
    for kept, full in zip(subset, truths):  # each kept annotation is one of its own micrograph's
        pairs = set(zip(full.x_px, full.y_px))
        assert all(pair in pairs for pair in zip(kept.x_px, kept.y_px))
        assert len(set(zip(kept.x_px, kept.y_px))) == len(kept)  # without replacement
    again = annotation_subset(truths, 20, np.random.default_rng(0))
    assert all(np.array_equal(a.x_px, b.x_px) for a, b in zip(subset, again))
    assert annotation_subset(truths, 500, np.random.default_rng(0)) == truths
    with pytest.raises(ValueError, match=">= 1"):
        annotation_subset(truths, 0, np.random.default_rng(0))


def test_particle_budget_trains_on_few_labels_with_the_full_count_and_scores_against_all(fake_training):
    rng = np.random.default_rng(4)
    images, truths = zip(*[_dotted(rng, n) for n in (40, 44, 48, 52, 56, 60)])
    settings = LearnedJudgeSettings(folds=3, seeds=(0, 1), bootstrap=50)
    run = cross_validate(images, truths, 1.0, 10.0, 3.0, settings, label_budget=1, particle_budget=12)
    assert len(fake_training) == 6 and run.train_micrographs == [1, 1, 1] and run.restarted_trainings == 1
    for call in fake_training:
        assert call["n_images"] == 1 and call["labels"] == [12]
        assert call["training"].particles_per_micrograph in {40.0, 44.0, 48.0, 52.0, 56.0, 60.0}
    # the perfect picker finds every particle: recall against the *full* annotations is 1
    assert all(result.recall == 1 and result.precision == 1 for row in run.results for result in row)
    assert all(call["background"] == "median" for call in fake_training)  # the picker's default
    fake_training.clear()
    cross_validate(images, truths, 1.0, 10.0, 3.0, replace(settings, background="gaussian"), label_budget=1)
    assert all(call["training"].particles_per_micrograph is None and call["labels"][0] >= 40
               and call["background"] == "gaussian" for call in fake_training)


def test_transfer_trains_once_per_seed_on_the_source_and_judges_every_target(fake_training):
    rng = np.random.default_rng(5)
    source = [_dotted(rng, 30) for _ in range(3)]
    target = [_dotted(rng, 20, size=150) for _ in range(4)]
    settings = LearnedJudgeSettings(seeds=(0, 1, 2), steps=5, bootstrap=50)
    run = transfer([image for image, _ in source], [truth for _, truth in source], 1.0,
                   [image for image, _ in target], [truth for _, truth in target], 1.0, 10.0, 3.0, settings)
    assert [call["n_images"] for call in fake_training] == [3, 3, 3]
    assert [call["training"].seed for call in fake_training] == [0, 1, 2]
    assert all(call["training"].steps == 5 for call in fake_training)
    assert len(run.results) == 3 and all(len(row) == 4 for row in run.results)
    summary = run.summary(settings)
    assert summary["ap"] == pytest.approx(1.0) and summary["folds"] == 1 and summary["train_micrographs_per_fold"] == [3]
    assert summary["restarted_trainings"] == 1
    with pytest.raises(ValueError, match="target"):
        transfer([source[0][0]], [source[0][1]], 1.0, [], [], 1.0, 10.0, 3.0, settings)


def test_the_transfer_benchmark_cuts_a_run_over_two_target_sets_back_into_one_run_each(monkeypatch):
    """benchmarks/bench_picker_transfer.py judges the real and the simulated targets in one run and splits it;
    every field of the run must survive the split (it broke once when CrossValidation gained fields)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_picker_transfer import split

    run = CrossValidation(results=[list("abcde"), list("ABCDE")], picks=list("vwxyz"), pickers=[], seeds=(0, 1), folds=1,
                          train_micrographs=[8], restarted_trainings=1, seconds=3.0)
    first, second = split(run, [2, 3])
    assert first.results == [["a", "b"], ["A", "B"]] and first.picks == ["v", "w"]
    assert second.results == [["c", "d", "e"], ["C", "D", "E"]] and second.picks == ["x", "y", "z"]
    assert (second.seeds, second.folds, second.train_micrographs, second.restarted_trainings, second.seconds) == (
        (0, 1), 1, [8], 1, 3.0)


def test_each_folds_picker_is_kept_with_the_threshold_of_its_best_f1(fake_training):
    """Every seed's picker of every fold comes back with the threshold its best F1 chose on the fold's
    unseen micrographs, and counts the picks it keeps at that threshold."""
    rng = np.random.default_rng(5)
    images, truths = zip(*[_dotted(rng, n) for n in (40, 44, 48, 52)])
    run = cross_validate(images, truths, 1.0, 10.0, 3.0, LearnedJudgeSettings(folds=2, seeds=(0, 1), bootstrap=20))
    assert len(run.pickers) == 4 and len(fake_training) == 4  # one kept per fold and seed
    assert len({id(kept.picker) for kept in run.pickers}) == 4
    for kept, fold_labels in zip(run.pickers, 2 * (44 + 52, 40 + 48)):  # fold 0 trains on micrographs 1 and 3
        assert kept.threshold == float(fold_labels)  # every pick scores its training label count
        assert kept.count(images[0], 1.0) == 40
    image, _ = _dotted(rng, 7)
    assert crossval.ThresholdedPicker(run.pickers[0].picker, run.pickers[0].threshold + 1).count(image, 1.0) == 0
    assert crossval.ThresholdedPicker(run.pickers[0].picker, None).count(image, 1.0) == 7


def test_pickers_trained_in_worker_processes_are_those_of_one_thread_here():
    """``workers = 2``: the folds' pickers train two at a time in single-threaded processes and come
    back with the very weights, picks and APs of training them one after another on one thread."""
    import torch
    from scipy import ndimage

    rng = np.random.default_rng(8)
    images, truths = [], []
    for _ in range(4):
        dots, truth = _dotted(rng, 12, size=96)
        images.append(ndimage.gaussian_filter(dots, 2.0) * 30 + rng.normal(size=dots.shape).astype(np.float32))
        truths.append(truth)
    settings = LearnedJudgeSettings(folds=2, seeds=(0, 1), steps=6, batch_size=2, crop_px=32, bootstrap=20)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = cross_validate(images, truths, 10.0, 80.0, 4.0, settings)
    finally:
        torch.set_num_threads(threads)
    apart = cross_validate(images, truths, 10.0, 80.0, 4.0, replace(settings, workers=2))
    assert len(apart.pickers) == len(here.pickers) == 4
    for mine, theirs in zip(here.pickers, apart.pickers):
        assert mine.threshold == theirs.threshold and mine.picker.record["torch_threads"] == 1
        assert theirs.picker.record["torch_threads"] == 1
        for name, weights in mine.picker.network.state_dict().items():
            assert torch.equal(weights, theirs.picker.network.state_dict()[name]), name
    assert [[result.average_precision for result in row] for row in apart.results] == [
        [result.average_precision for result in row] for row in here.results]
    assert apart.summary(settings)["ap"] == here.summary(settings)["ap"]
    with pytest.raises(ValueError, match="workers must be >= 1, and 1 on a GPU"):
        LearnedJudgeSettings(workers=2, device="cuda")


KILLED_PARENT_SCRIPT = """
import numpy as np
from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import picker_training, train_pickers
from cryoscore.io.coords import ParticleCoordinates

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(96, 96)).astype(np.float32) for _ in range(2)]
    labels = [ParticleCoordinates(x_px=np.array([30.0, 60.0]), y_px=np.array([40.0, 50.0]))] * 2
    settings = LearnedJudgeSettings(folds=2, seeds=(0, 1), steps=10**6, batch_size=2, crop_px=32, workers=2)
    train_pickers([(images, labels, picker_training(settings, seed)) for seed in (0, 1)], 10.0, 80.0, settings)
"""


def _state_and_parent(pid_dir: Path) -> tuple[str, int]:
    """A process's state letter and parent pid from its ``/proc/PID/stat`` line (Linux);
    OSError if it is gone."""
    state, parent = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[:2]
    return state, int(parent)


def _children(parent_pid: int, marker: str) -> list[int]:
    """Live processes whose parent is ``parent_pid`` and whose command line holds ``marker`` (Linux /proc)."""
    found = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            state, parent = _state_and_parent(pid_dir)
            command = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent == parent_pid and state != "Z" and marker in command:
            found.append(int(pid_dir.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return _state_and_parent(Path("/proc") / str(pid))[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from Linux's /proc")
def test_picker_workers_exit_when_the_bench_is_killed(tmp_path):
    """SIGTERM to the process training pickers on two workers (a user's ``kill``, a scheduler's
    time limit) stops the workers within seconds, not when their (here endless) trainings end."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "train_forever.py"
    script.write_text(KILLED_PARENT_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = _children(parent.pid, "spawn_main")
        assert len(workers) == 2, "the two picker workers did not start"
        time.sleep(1.0)  # let them get into their trainings
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
    finally:
        parent.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
