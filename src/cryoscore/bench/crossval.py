"""The learned-picker judge: k-fold over micrographs, several training seeds, bootstrap intervals.

For one denoiser's outputs of a test set's micrographs (DESIGN.md section 3): the
micrographs are split into ``k`` folds (micrograph ``i`` in fold ``i mod k``); for each
fold and each training seed a :mod:`~cryoscore.pick.learned` picker is trained on the
other folds' micrographs (all of them, or a *label budget* of a few drawn at random) and
picks the fold's micrographs, which it never saw. So every micrograph is judged once per
seed, unseen, and each (seed, micrograph) gives one :class:`~cryoscore.metrics.picking.MatchResult`.
A *particle budget* goes below one micrograph: each fold's picker sees only a random
subset of its training micrographs' annotations (the rest unlabelled, as the PU loss
treats them). :func:`transfer` judges a picker trained on one dataset and applied
unchanged to another, with the same statistics (one "fold": every target micrograph is
unseen).

Statistics are pooled over micrographs (:func:`~cryoscore.metrics.picking.pool_matches`)
and averaged over seeds. The 95 % interval is a two-level percentile bootstrap: each
replicate resamples the micrographs with replacement (the same draw for every seed) and
the seeds with replacement, so it holds both the spread between micrographs and between
training runs. Differences between two denoisers are bootstrapped *paired* (the same
micrographs and seeds for both), which is what the headline checks use.

The pickers of a cross-validation are independent trainings: with ``workers`` > 1 in the
settings they train that many at a time, each in its own single-threaded process, with the
numbers of one thread (a single-threaded training is the same wherever it runs).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.jobs import start_pool_worker
from cryoscore.metrics.picking import MatchResult, match_picks, pool_matches
from cryoscore.pick.learned import LearnedPicker
from cryoscore.pick.learned_training import PickerTraining, train_picker

STATISTICS: dict[str, Callable[[MatchResult], float | None]] = {
    "ap": lambda result: result.average_precision,
    "f1": lambda result: result.f1,
}


def picker_training(settings: LearnedJudgeSettings, seed: int,
                    particles_per_micrograph: float | None = None) -> PickerTraining:
    """The picker's training for one seed: ``settings``' steps, batch and crop where given, else the defaults;
    ``particles_per_micrograph`` (the PU prior's expected count) None takes the labelled count."""
    given = {name: getattr(settings, name) for name in ("steps", "batch_size", "crop_px")
             if getattr(settings, name) is not None}
    return PickerTraining(seed=seed, particles_per_micrograph=particles_per_micrograph, **given)


def annotation_subset(truths: Sequence[ParticleCoordinates], budget: int,
                      rng: np.random.Generator) -> list[ParticleCoordinates]:
    """``truths`` of some micrographs with only ``budget`` annotations kept, drawn at random without
    replacement from all of them together (every one when there are no more than ``budget``)."""
    if budget < 1:
        raise ValueError(f"a particle budget must be >= 1, got {budget}")
    counts = [len(truth) for truth in truths]
    if budget >= sum(counts):
        return list(truths)
    chosen = rng.choice(sum(counts), budget, replace=False)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return [truth.take(np.sort(chosen[(chosen >= start) & (chosen < start + count)]) - start)
            for truth, start, count in zip(truths, starts, counts)]


def _judge(picker: LearnedPicker, image: np.ndarray, truth: ParticleCoordinates, pixel_size_a: float,
           match_radius_px: float, diameter_px: float) -> tuple[MatchResult, ParticleCoordinates]:
    """The picker's picks on one unseen micrograph matched against its annotations, and the picks."""
    found = picker.pick(image, pixel_size_a)
    return match_picks(np.stack([found.x_px, found.y_px], axis=1), found.figure_of_merit,
                       np.stack([truth.x_px, truth.y_px], axis=1), match_radius_px, diameter_px=diameter_px), found


def fold_of_each(n_micrographs: int, folds: int) -> np.ndarray:
    """(n,) fold index of each micrograph: ``i mod k`` with ``k = min(folds, n)``; ValueError for n < 2."""
    if n_micrographs < 2:
        raise ValueError(f"k-fold judging needs at least 2 micrographs, got {n_micrographs}")
    return np.arange(n_micrographs) % min(folds, n_micrographs)


@dataclass(frozen=True)
class ThresholdedPicker:
    """A trained picker and the threshold at which it keeps picks (its best F1 where it was judged;
    None: keep every pick)."""

    picker: LearnedPicker
    threshold: float | None

    def count(self, image: np.ndarray, pixel_size_a: float) -> int:
        """How many particles it picks in ``image`` (H, W) at ``pixel_size_a`` A/px."""
        return len(self.picker.pick(image, pixel_size_a).scoring_at_least(self.threshold))


@dataclass
class CrossValidation:
    """Every micrograph judged unseen, once per seed: ``results[s][i]`` for seed ``seeds[s]`` and micrograph ``i``.

    ``picks[i]`` are the first seed's picks on micrograph ``i`` (every local maximum, best
    first, by the picker that did not see it), for judges that work on picks (2D classes);
    ``pickers`` every seed's picker of each fold (seed-major: all folds of the first seed,
    then of the next) with the threshold of its best F1 on the fold's unseen micrographs, for
    judging other micrographs as a user would (the particle-free control counts with all of
    them; :func:`transfer` keeps the first seed's).
    ``train_micrographs`` is how many micrographs each fold's picker trained on (a list
    over folds); ``restarted_trainings`` how many of the pickers ended dead at first and
    were trained again (:data:`~cryoscore.pick.learned_training.TRAINING_ATTEMPTS`); ``seconds`` the
    wall time of training and picking.
    """

    results: list[list[MatchResult]]
    picks: list[ParticleCoordinates]
    pickers: list[ThresholdedPicker]
    seeds: tuple[int, ...]
    folds: int
    train_micrographs: list[int]
    restarted_trainings: int
    seconds: float

    def summary(self, settings: LearnedJudgeSettings) -> dict[str, Any]:
        """JSON-ready: for ``ap`` and ``f1``, the mean over seeds of the pooled value, its interval
        ``[low, high]`` and the per-seed values; plus the split and the time."""
        summary: dict[str, Any] = {}
        for name in STATISTICS:
            per_seed = [pooled(row, name) for row in self.results]
            summary[name] = _mean(per_seed)
            summary[f"{name}_ci"] = bootstrap_interval(self.results, name, settings.bootstrap, settings.confidence)
            summary[f"{name}_per_seed"] = per_seed
        summary.update({"confidence": settings.confidence, "bootstrap": settings.bootstrap, "folds": self.folds, "seeds": list(self.seeds),
                        "n_micrographs": len(self.results[0]), "train_micrographs_per_fold": self.train_micrographs,
                        "restarted_trainings": self.restarted_trainings, "seconds": self.seconds})
        return summary


def _mean(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return float(np.mean(known)) if known else None


def pooled(results: Sequence[MatchResult], statistic: str) -> float | None:
    """``statistic`` (``"ap"`` or ``"f1"``) of ``results`` pooled into one ranking (None without truth)."""
    return STATISTICS[statistic](pool_matches(results, match_pairs=False))


def _replicates(n_seeds: int, n_micrographs: int, n_boot: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_boot`` (seed indices, micrograph indices) draws with replacement, from a fixed generator."""
    rng = np.random.default_rng(0)
    return [(rng.integers(n_seeds, size=n_seeds), rng.integers(n_micrographs, size=n_micrographs))
            for _ in range(n_boot)]


def _replicate_value(results: list[list[MatchResult]], statistic: str, seeds: np.ndarray,
                     micrographs: np.ndarray) -> float | None:
    return _mean([pooled([results[seed][index] for index in micrographs], statistic) for seed in seeds])


def _interval(values: Sequence[float | None], confidence: float) -> list[float] | None:
    known = np.array([value for value in values if value is not None])
    if not len(known):
        return None
    tail = 100 * (1 - confidence) / 2
    return [float(np.percentile(known, tail)), float(np.percentile(known, 100 - tail))]


def bootstrap_interval(results: list[list[MatchResult]], statistic: str, n_boot: int = 1000,
                       confidence: float = 0.95) -> list[float] | None:
    """Percentile interval ``[low, high]`` of the seed-averaged pooled ``statistic`` (module docstring)."""
    draws = _replicates(len(results), len(results[0]), n_boot)
    return _interval([_replicate_value(results, statistic, seeds, micrographs) for seeds, micrographs in draws],
                     confidence)


def paired_difference(first: list[list[MatchResult]], second: list[list[MatchResult]], statistic: str = "ap",
                      n_boot: int = 1000, confidence: float = 0.95) -> dict[str, Any]:
    """``statistic`` of ``first`` minus that of ``second`` (same micrographs and seeds, in the same order):
    the difference of the seed means and its paired bootstrap interval."""
    if len(first) != len(second) or len(first[0]) != len(second[0]):
        raise ValueError("paired results need the same seeds and micrographs")
    first_mean = _mean([pooled(row, statistic) for row in first])
    second_mean = _mean([pooled(row, statistic) for row in second])
    difference = None if first_mean is None or second_mean is None else first_mean - second_mean
    replicates = []
    for seeds, micrographs in _replicates(len(first), len(first[0]), n_boot):
        a = _replicate_value(first, statistic, seeds, micrographs)
        b = _replicate_value(second, statistic, seeds, micrographs)
        replicates.append(None if a is None or b is None else a - b)
    return {"difference": difference, "ci": _interval(replicates, confidence), "confidence": confidence}


def _train_one(images: Sequence[np.ndarray], labels: Sequence[ParticleCoordinates], training: PickerTraining,
               pixel_size_a: float, diameter_a: float, background: str, device: str) -> LearnedPicker:
    return train_picker(images, labels, pixel_size_a, diameter_a, training=training, background=background,
                        device=device)


def train_pickers(jobs: Sequence[tuple[Sequence[np.ndarray], Sequence[ParticleCoordinates], PickerTraining]],
                  pixel_size_a: float, diameter_a: float, settings: LearnedJudgeSettings) -> list[LearnedPicker]:
    """One picker per job (its training micrographs, their annotations, its training), in order.

    With ``settings.workers`` > 1 they train that many at a time in single-threaded processes
    (started fresh, as ``spawn`` does, so no thread pool is inherited half-used; each exits when
    this process dies, killed or not: :func:`~cryoscore.jobs.start_pool_worker`), giving the
    pickers a single-threaded run in this process gives; otherwise one after another here.
    """
    arguments = [(images, labels, training, pixel_size_a, diameter_a, settings.background, settings.device)
                 for images, labels, training in jobs]
    if settings.workers <= 1 or len(jobs) <= 1:
        return [_train_one(*job) for job in arguments]
    with ProcessPoolExecutor(max_workers=min(settings.workers, len(jobs)), initializer=start_pool_worker,
                             initargs=(1, os.getpid()), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_one, *job) for job in arguments]
        return [future.result() for future in futures]


def cross_validate(
    images: Sequence[np.ndarray],
    truths: Sequence[ParticleCoordinates],
    pixel_size_a: float,
    diameter_a: float,
    match_radius_px: float,
    settings: LearnedJudgeSettings,
    *,
    label_budget: int | None = None,
    particle_budget: int | None = None,
) -> CrossValidation:
    """Train and test the learned picker k-fold over ``images`` (H, W) with annotated ``truths``.

    Each fold's picker trains on all the other folds' micrographs, or on ``label_budget``
    of them drawn with ``numpy.random.default_rng([seed, fold])`` (all when fewer exist).
    With ``particle_budget`` it sees only that many of their annotations
    (:func:`annotation_subset`, drawn with ``default_rng([seed, fold, 1])``, so the same for
    every denoiser), and its PU prior takes the micrographs' full annotated count per
    micrograph as the expected count: a user who annotates a few particles still sees about
    how many a micrograph holds. Picks match the *full* annotations within
    ``match_radius_px`` (original pixels).
    """
    started = time.perf_counter()
    fold = fold_of_each(len(images), settings.folds)
    n_folds = int(fold.max()) + 1
    diameter_px = diameter_a / pixel_size_a
    plan: list[tuple[list[int], list[ParticleCoordinates], PickerTraining]] = []  # seed-major, then fold
    for seed in settings.seeds:
        for held_out in range(n_folds):
            train = np.flatnonzero(fold != held_out).tolist()
            if label_budget is not None and label_budget < len(train):
                train = np.sort(np.random.default_rng([seed, held_out]).choice(train, label_budget,
                                                                               replace=False)).tolist()
            labels = [truths[index] for index in train]
            expected = None
            if particle_budget is not None:
                expected = float(np.mean([len(truth) for truth in labels]))
                labels = annotation_subset(labels, particle_budget, np.random.default_rng([seed, held_out, 1]))
            plan.append((train, labels, picker_training(settings, seed, expected)))
    trained = train_pickers([([images[index] for index in train], labels, training)
                             for train, labels, training in plan], pixel_size_a, diameter_a, settings)
    results: list[list[MatchResult]] = []
    picks: list[ParticleCoordinates | None] = [None] * len(images)
    pickers: list[ThresholdedPicker] = []
    for seed_index in range(len(settings.seeds)):
        row: list[MatchResult | None] = [None] * len(images)
        for held_out in range(n_folds):
            picker = trained[seed_index * n_folds + held_out]
            unseen = np.flatnonzero(fold == held_out).tolist()
            for index in unseen:
                row[index], found = _judge(picker, images[index], truths[index], pixel_size_a, match_radius_px,
                                           diameter_px)
                if seed_index == 0:
                    picks[index] = found
            best = pool_matches([row[index] for index in unseen], match_pairs=False)  # type: ignore[misc]
            pickers.append(ThresholdedPicker(picker, best.threshold))
        results.append(row)  # type: ignore[arg-type]
    train_counts = [len(train) for train, _, _ in plan[:n_folds]]
    restarted = sum(picker.record["attempts"] > 1 for picker in trained)
    return CrossValidation(results, picks, pickers, tuple(settings.seeds), n_folds,  # type: ignore[arg-type]
                           train_counts, restarted, time.perf_counter() - started)


def transfer(
    source_images: Sequence[np.ndarray],
    source_truths: Sequence[ParticleCoordinates],
    source_pixel_size_a: float,
    target_images: Sequence[np.ndarray],
    target_truths: Sequence[ParticleCoordinates],
    target_pixel_size_a: float,
    diameter_a: float,
    match_radius_px: float,
    settings: LearnedJudgeSettings,
) -> CrossValidation:
    """A picker trained on one dataset applied unchanged to another, once per seed of ``settings``.

    Each seed's picker trains on every ``source`` micrograph (annotations as given, the PU
    prior from their count) and picks every ``target`` micrograph; picks match the target's
    annotations within ``match_radius_px`` (target pixels). The result has the k-fold's shape
    with one fold (``results[s][i]``: seed ``s``, target micrograph ``i``), so
    :meth:`CrossValidation.summary`, :func:`bootstrap_interval` (over target micrographs and
    seeds) and :func:`paired_difference` apply.
    """
    if not target_images or len(target_images) != len(target_truths):
        raise ValueError(f"need as many target annotations as target micrographs (>= 1), got "
                         f"{len(target_truths)} and {len(target_images)}")
    started = time.perf_counter()
    diameter_px = diameter_a / target_pixel_size_a
    results, picks, pickers = [], [], []
    trained = train_pickers([(source_images, source_truths, picker_training(settings, seed)) for seed in settings.seeds],
                            source_pixel_size_a, diameter_a, settings)
    for picker in trained:
        judged = [_judge(picker, image, truth, target_pixel_size_a, match_radius_px, diameter_px)
                  for image, truth in zip(target_images, target_truths)]
        results.append([result for result, _ in judged])
        if picker is trained[0]:
            picks = [found for _, found in judged]
            best = pool_matches(results[0], match_pairs=False)
            pickers = [ThresholdedPicker(picker, best.threshold)]
    restarted = sum(picker.record["attempts"] > 1 for picker in trained)
    return CrossValidation(results, picks, pickers, tuple(settings.seeds), 1, [len(source_images)], restarted,
                           time.perf_counter() - started)


def judge_with_learned_picker(
    images: Sequence[np.ndarray],
    truths: Sequence[ParticleCoordinates],
    pixel_size_a: float,
    diameter_a: float,
    match_radius_px: float,
    settings: LearnedJudgeSettings,
) -> tuple[dict[str, Any], CrossValidation]:
    """The learned judge's metrics for one denoiser's outputs ``images``, and the full-label cross-validation.

    Metrics: :meth:`CrossValidation.summary` of the full-label k-fold, plus under
    ``label_budget`` one summary per budget of ``settings.label_budgets`` (keyed by the
    number of training micrographs as a string).
    """
    full = cross_validate(images, truths, pixel_size_a, diameter_a, match_radius_px, settings)
    metrics = full.summary(settings)
    budgets = {}
    for budget in settings.label_budgets:
        if budget >= max(full.train_micrographs):
            continue  # the full-label run already is this budget
        run = cross_validate(images, truths, pixel_size_a, diameter_a, match_radius_px, settings, label_budget=budget)
        budgets[str(budget)] = run.summary(settings)
    if budgets:
        metrics["label_budget"] = budgets
    return metrics, full

