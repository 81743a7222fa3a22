"""The judges of a benchmark: what each denoiser does to pixels, picking and the 3D map.

Every denoiser's output goes through the same judges: pixel metrics against the clean
image (simulated data); the learned picker (primary where enabled: trained on the
denoiser's output k-fold over the test micrographs, :mod:`cryoscore.bench.crossval`), the
blob picker (reference-free) and the template picker, scored against the true
coordinates; and a reconstruction and 2D classes from the learned picker's picks (the blob
picks without the learned judge), extracted from the RAW micrographs, so only where the
picks are differs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from cryoscore.bench.config import ClassJudgeSettings, LearnedJudgeSettings
from cryoscore.bench.crossval import ThresholdedPicker, judge_with_learned_picker
from cryoscore.bench.datasets import TestSet
from cryoscore.bench.denoisers import DenoiseFunction
from cryoscore.bench.plots import radial_power_spectrum
from cryoscore.classify.match import judge_classes, template_projections
from cryoscore.classify.twod import Classification2DSettings, classify_2d
from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.metrics.picking import MatchResult, match_picks, pool_matches
from cryoscore.metrics.pixel import pixel_metrics
from cryoscore.pick.blob import pick_blobs
from cryoscore.pick.template import pick_template, reference_correlation
from cryoscore.reconstruct.extract import extract_picked_particles
from cryoscore.reconstruct.pipeline import ReconstructionResult, ReconstructionSettings, reconstruct_from_picks
from cryoscore.settings import SettingError
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.volume import load_specimen

logger = logging.getLogger(__name__)

RADIUS_FRACTION = 0.5
"""Picks match a true particle within half a diameter (DESIGN.md section 3)."""


@dataclass
class DenoiserOutcome:
    """What the judges found for one denoiser on one test set.

    ``metrics`` is JSON-ready; ``picks`` the blob picks per micrograph name, ``matches``
    the blob picker's pooled match (for its precision-recall curve; None when no judge
    picked with the blob picker), ``example`` the
    first micrograph's output (H, W) and ``spectrum`` its radial power spectrum
    (frequencies 1/A, power). ``learned_results[s][i]``: the learned picker's match on
    test micrograph ``i`` with seed ``s``, judged unseen (None without the learned judge),
    for paired comparisons between denoisers; ``learned_picks`` its first seed's picks per
    micrograph name (matched in ``learned_results[0]``) and ``learned_pickers`` every seed's
    picker of each fold at its best-F1 threshold.
    """

    metrics: dict[str, Any]
    picks: dict[str, ParticleCoordinates]
    matches: MatchResult | None
    example: np.ndarray
    spectrum: tuple[np.ndarray, np.ndarray]
    reconstruction: ReconstructionResult | None = None
    template_matches: MatchResult | None = None
    learned_results: list[list[MatchResult]] | None = None
    learned_picks: dict[str, ParticleCoordinates] | None = None
    learned_pickers: list[ThresholdedPicker] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class JudgedDataset:
    """One test set with every denoiser's outcome and the bias controls run on it.

    ``kind`` is ``"simulated"`` or ``"real"``; ``dose_e_per_a2`` the simulated dose (None for
    real data); ``particle_free`` the particle-free control (``run._particle_free_control``,
    the lowest dose of a simulated specimen only) and ``decoy`` the decoy control
    (``run._decoy_control``), each None where it did not run; ``failed`` the denoisers that
    failed to train or to be judged on it, each with its one-line error (not in ``outcomes``).
    """

    label: str
    kind: str
    test_set: TestSet
    outcomes: dict[str, DenoiserOutcome]
    dose_e_per_a2: float | None = None
    particle_free: dict[str, Any] | None = None
    decoy: dict[str, Any] | None = None
    failed: dict[str, str] = field(default_factory=dict)


def _picking_metrics(result: MatchResult) -> dict[str, Any]:
    summary = result.to_dict()
    return {key: summary[key] for key in ("ap", "f1", "precision", "recall", "threshold", "n_picks", "n_selected", "n_truth",
                                          "centring_error_px") if key in summary}


def _score_picks(test_set: TestSet, picks: dict[str, ParticleCoordinates]) -> MatchResult:
    diameter_px = test_set.diameter_a / test_set.pixel_size_a
    results = []
    for micrograph in test_set.micrographs:
        found = picks[micrograph.name]
        results.append(match_picks(np.stack([found.x_px, found.y_px], axis=1), found.figure_of_merit,
                                   np.stack([micrograph.truth.x_px, micrograph.truth.y_px], axis=1),
                                   RADIUS_FRACTION * diameter_px, diameter_px=diameter_px))
    return pool_matches(results)


def reference_volume(test_set: TestSet) -> np.ndarray:
    """The test set's reference density at its pixel size (V*A per voxel, cube)."""
    if test_set.reference is None:
        raise ValueError(f"{test_set.label}: no reference density (a real dataset without a map)")
    return load_specimen(test_set.reference, test_set.pixel_size_a).volume_v


def judge_denoiser(
    test_set: TestSet,
    name: str,
    denoise: DenoiseFunction,
    judges: tuple[str, ...],
    *,
    template_reference: np.ndarray | None = None,
    correlation_reference: np.ndarray | None = None,
    learned_settings: LearnedJudgeSettings | None = None,
    counting_pickers: Sequence[ThresholdedPicker] = (),
) -> DenoiserOutcome:
    """Denoise every micrograph of ``test_set`` with ``denoise`` and judge the outputs.

    ``template_reference`` is the cube the template picker correlates with (None: no
    template judge). With a ``correlation_reference`` cube, ``metrics["reference_correlation"]``
    holds the largest and the 99th-percentile local Pearson correlation of each output with
    that reference's CTF-modulated projections
    (:func:`~cryoscore.pick.template.reference_correlation`), averaged over the micrographs:
    the bias control on particle-free micrographs, as is ``metrics["learned_picks_per_micrograph"]``,
    the mean number of picks each of ``counting_pickers`` keeps in an output (pickers trained on
    another test set's outputs of the same denoiser). With ``"learned"`` in ``judges``,
    ``metrics["learned"]`` holds the learned picker's k-fold AP and F1 with intervals
    (:func:`~cryoscore.bench.crossval.judge_with_learned_picker`, ``learned_settings`` or
    the defaults). Reconstruction is done afterwards (:func:`attach_reconstruction`), as it
    needs the picking threshold.
    """
    judging_started = time.perf_counter()
    diameter_px = test_set.diameter_a / test_set.pixel_size_a
    seconds, pixel_records, picks, template_picks, correlations, estimates, counts = [], [], {}, {}, [], [], []
    example = None
    for micrograph in test_set.micrographs:
        started = time.perf_counter()
        estimate = np.asarray(denoise(micrograph.full_sum), dtype=np.float32)
        seconds.append(time.perf_counter() - started)
        if example is None:
            example = estimate
        if "learned" in judges:
            estimates.append(estimate)
        if "pixel" in judges and micrograph.clean is not None:
            centres_rc = np.stack([micrograph.truth.y_px, micrograph.truth.x_px], axis=1)
            pixel_records.append(dataclasses.asdict(pixel_metrics(estimate, micrograph.clean, centres_rc,
                                                                  diameter_px, test_set.pixel_size_a)))
        if "blob" in judges or "reconstruction" in judges or "classes" in judges:
            picks[micrograph.name] = pick_blobs(estimate, test_set.pixel_size_a, test_set.diameter_a)
        if "template" in judges and template_reference is not None:
            template_picks[micrograph.name] = pick_template(estimate, test_set.pixel_size_a, test_set.diameter_a,
                                                            template_reference, micrograph.ctf)
        if correlation_reference is not None:
            local = reference_correlation(estimate, test_set.pixel_size_a, test_set.diameter_a, correlation_reference,
                                          micrograph.ctf)
            correlations.append((float(local.max()), float(np.percentile(local, 99))))
        counts += [picker.count(estimate, test_set.pixel_size_a) for picker in counting_pickers]
    assert example is not None, "a test set holds at least one micrograph"
    metrics: dict[str, Any] = {"denoise_seconds_per_micrograph": float(np.median(seconds))}
    if pixel_records:
        metrics["pixel"] = {key: float(np.mean([record[key] for record in pixel_records]))
                            for key in pixel_records[0]}
    if correlations:
        metrics["reference_correlation"] = {"max": float(np.mean([high for high, _ in correlations])),
                                            "p99": float(np.mean([p99 for _, p99 in correlations]))}
    if counts:
        metrics["learned_picks_per_micrograph"] = float(np.mean(counts))
    matches = _score_picks(test_set, picks) if picks else None
    if matches is not None and "blob" in judges:
        metrics["blob"] = _picking_metrics(matches)
    template_matches = _score_picks(test_set, template_picks) if template_picks else None
    if template_matches is not None:
        metrics["template"] = _picking_metrics(template_matches)
    learned_results = learned_picks = learned_pickers = None
    if estimates:
        metrics["learned"], cross_validation = judge_with_learned_picker(
            estimates, [micrograph.truth for micrograph in test_set.micrographs], test_set.pixel_size_a,
            test_set.diameter_a, RADIUS_FRACTION * diameter_px, learned_settings or LearnedJudgeSettings())
        learned_results = cross_validation.results
        learned_picks = {micrograph.name: found
                         for micrograph, found in zip(test_set.micrographs, cross_validation.picks)}
        learned_pickers = cross_validation.pickers
    logger.info("%s / %s: %s (%.0f s)", test_set.label, name,
                ", ".join(f"{judge} AP {metrics[judge]['ap']:.3f}" for judge in ("learned", "blob", "template")
                          if judge in metrics and metrics[judge]["ap"] is not None) or "judged",
                time.perf_counter() - judging_started)
    return DenoiserOutcome(metrics, picks, matches, example, radial_power_spectrum(example, test_set.pixel_size_a),
                           template_matches=template_matches, learned_results=learned_results,
                           learned_picks=learned_picks, learned_pickers=learned_pickers)


def picks_above(picks: dict[str, ParticleCoordinates], threshold: float | None) -> dict[str, ParticleCoordinates]:
    """The picks scoring at least ``threshold`` (all picks when None), per micrograph."""
    return {name: found.scoring_at_least(threshold) for name, found in picks.items()}


def known_ctfs(test_set: TestSet) -> list[CtfParams] | None:
    """Each micrograph's CTF, in order, or None unless every one is known (simulated data)."""
    ctfs = [micrograph.ctf for micrograph in test_set.micrographs]
    known = [ctf for ctf in ctfs if ctf is not None]
    return known if len(known) == len(ctfs) else None


def _primary_picks(outcome: DenoiserOutcome) -> tuple[str, float | None, dict[str, ParticleCoordinates]]:
    """The picks the downstream judges use: the learned picker's (its first seed's, each
    micrograph picked by the fold's picker that did not see it) when the learned judge ran,
    else the blob picker's, at their pooled best-F1 threshold (all of them without one).
    Returns the picker's name, the threshold and the picks above it per micrograph."""
    matches: MatchResult | None
    if outcome.learned_picks is not None and outcome.learned_results is not None:
        picker, found, matches = "learned", outcome.learned_picks, pool_matches(outcome.learned_results[0])
    else:
        picker, found, matches = "blob", outcome.picks, outcome.matches
    threshold = matches.threshold if matches is not None else None
    return picker, threshold, picks_above(found, threshold)


def attach_reconstruction(test_set: TestSet, outcome: DenoiserOutcome, reference: np.ndarray,
                          *, aligned_to: str | None = None, true_map: np.ndarray | None = None,
                          max_particles: int = 5000) -> None:
    """Reconstruct from ``outcome``'s primary picks (:func:`_primary_picks`) at their best-F1
    threshold, boxed from the raw micrographs, averaged over the test set's point group, and
    store the result in ``outcome.reconstruction`` and ``outcome.metrics["reconstruction"]``.

    ``reference`` (D, D, D) at the test set's pixel size is the alignment reference (low-passed
    to 25 A) and ``aligned_to`` its name for the metrics; ``true_map`` (same grid) the density
    for the FSC against the truth (simulated data), None for none. With the micrographs' CTFs
    the particles are CTF-corrected; without them (real micrographs with no measurable CTF)
    they are reconstructed as they are, and ``ctf_corrected`` says so. With fewer than two
    usable picks the metrics say so and the map is None.
    """
    ctfs = known_ctfs(test_set)
    picker, threshold, kept = _primary_picks(outcome)
    try:
        result = reconstruct_from_picks(
            [micrograph.full_sum for micrograph in test_set.micrographs],
            [kept[micrograph.name] for micrograph in test_set.micrographs],
            ctfs, reference, test_set.pixel_size_a, test_set.diameter_a,
            ReconstructionSettings(symmetry=test_set.symmetry, max_particles=max_particles), true_map=true_map)
    except (InputError, SettingError) as error:
        outcome.metrics["reconstruction"] = {"error": str(error), "n_particles": 0, "picker": picker}
        return
    outcome.reconstruction = result
    summary = result.to_dict()
    outcome.metrics["reconstruction"] = {
        "picker": picker,
        "aligned_to": aligned_to,
        "threshold": threshold,
        "n_particles": result.n_particles,
        "ctf_corrected": ctfs is not None,
        "symmetry": test_set.symmetry or "C1",
        "resolution_half_maps_a": summary["half_map_resolution_a"],
        "resolution_vs_truth_a": summary["truth_resolution_a"],
        "mean_pose_score": result.mean_pose_score,
        "seconds": result.timings_s["total"],
        "fsc_half_maps": summary["fsc_half_maps"],
        "fsc_truth": summary["fsc_truth"],
    }


def attach_classes(test_set: TestSet, outcome: DenoiserOutcome, settings: ClassJudgeSettings) -> None:
    """Classify ``outcome``'s picks at their best-F1 threshold in 2D, boxed from the raw
    micrographs (phase-flipped where the CTFs are known), and match the class averages against
    projections of the test set's ``template`` density (:func:`~cryoscore.classify.match.judge_classes`).
    The picks are the learned picker's (its first seed's, each micrograph picked unseen) when
    the learned judge ran, else the blob picker's; ``picker`` in the metrics says which.
    Stores the averages in ``outcome.extra["class_averages"]`` and, in ``outcome.metrics["classes"]``,
    the judgement plus ``counts``, gold-standard ``resolution_a`` per class, and ``true_fraction``:
    the share of the classified picks within half a diameter of a true particle (what the
    classes should find particle-like). Fewer picks than classes: the metrics say so."""
    if test_set.template is None:
        raise ValueError(f"{test_set.label}: the class judge needs the test set's template density")
    started = time.perf_counter()
    picker, _, kept = _primary_picks(outcome)
    picks = [kept[micrograph.name] for micrograph in test_set.micrographs]
    stack = extract_picked_particles([micrograph.full_sum for micrograph in test_set.micrographs], picks,
                                     known_ctfs(test_set), test_set.pixel_size_a, test_set.diameter_a, settings.box_px)
    if len(stack.images) < settings.classes:
        outcome.metrics["classes"] = {"error": f"{len(stack.images)} picks cannot fill {settings.classes} classes",
                                      "n_particles": len(stack.images), "picker": picker}
        return
    chosen = np.sort(np.random.default_rng(0).choice(len(stack.images), min(settings.max_particles, len(stack.images)),
                                                     replace=False))
    chosen_ctfs = None if stack.ctfs is None else [stack.ctfs[index] for index in chosen]
    result = classify_2d(stack.images[chosen], stack.pixel_size_a, test_set.diameter_a,
                         Classification2DSettings(classes=settings.classes, iterations=settings.iterations,
                                                  half_iterations=settings.half_iterations), ctfs=chosen_ctfs)
    projections = template_projections(test_set.template, stack.images.shape[-1], stack.pixel_size_a)
    diameter_px = test_set.diameter_a / test_set.pixel_size_a
    is_true = []
    for index in chosen:
        micrograph = test_set.micrographs[stack.micrograph_index[index]]
        pick = picks[stack.micrograph_index[index]]
        x, y = pick.x_px[stack.pick_index[index]], pick.y_px[stack.pick_index[index]]
        distances = np.hypot(micrograph.truth.x_px - x, micrograph.truth.y_px - y)
        is_true.append(distances.size > 0 and distances.min() <= RADIUS_FRACTION * diameter_px)
    outcome.extra["class_averages"] = result.averages
    outcome.metrics["classes"] = {
        **judge_classes(result, test_set.template, projections, test_set.diameter_a, chosen_ctfs),
        "n_particles": len(chosen),
        "picker": picker,
        "counts": result.counts.tolist(),
        "resolution_a": [None if not np.isfinite(value) else float(value) for value in result.resolution_a],
        "true_fraction": float(np.mean(is_true)),
        "seconds": time.perf_counter() - started,
    }
