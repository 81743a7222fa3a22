"""Keep an adapted model only if it picks better (``cryoscore denoise --adapt --adapt-check DIR``).

``--adapt`` keeps a fine-tuned model when it lowers the held-out Noise2Noise loss, a squared error.
On the real EMPIAR-10146 set the adapted model lowers that loss at every wavelength while the
learned picker's AP falls (benchmarks/RESULTS.md, section 6): no check on the loss can tell. With a
few annotated micrographs among the inputs this check asks what a user denoises for: the
benchmark's learned judge (:func:`cryoscore.bench.crossval.cross_validate`: k-fold over the
annotated micrographs, each picked by a picker trained on the others) picks on the initial model's
outputs and on the adapted model's, and the adapted model stays only if its pooled average
precision is higher. Otherwise the model file is rewritten with the initial model, as when the
loss check refuses it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import cross_validate, pooled
from cryoscore.errors import InputError
from cryoscore.infer.adapt import Micrograph
from cryoscore.infer.denoise import TrainedDenoiser, denoise_image, load_denoiser
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.nn.checkpoint import save_model

MATCH_RADIUS_DIAMETERS = 0.5
"""A pick matches an annotated particle within half a diameter (the benchmarks' radius)."""

CHECK_JUDGE = LearnedJudgeSettings(folds=5, seeds=(0,))
"""The check's learned judge: up to 5 folds, one picker seed, the picker's default 800 steps."""


@dataclass(frozen=True)
class PickingCheck:
    """The annotated micrographs to judge on and how: ``coordinates`` by micrograph name (the
    file's stem; at least two of the adapted micrographs must have them), the particle diameter
    (A), and the learned judge (its folds are capped at the number of annotated micrographs)."""

    coordinates: dict[str, ParticleCoordinates]
    diameter_a: float
    judge: LearnedJudgeSettings = field(default_factory=lambda: CHECK_JUDGE)


@dataclass(frozen=True)
class PickingVerdict:
    """The learned judge's pooled AP on the initial and the adapted model's outputs of ``micrographs``
    (names), and the check's wall time (s). The adapted model is kept only when its AP is higher."""

    initial_ap: float
    adapted_ap: float
    micrographs: tuple[str, ...]
    seconds: float

    @property
    def kept(self) -> bool:
        return self.adapted_ap > self.initial_ap

    def record(self) -> dict[str, Any]:
        """JSON-ready, for the model file's ``adaptation`` record."""
        return {"initial_ap": self.initial_ap, "adapted_ap": self.adapted_ap, "micrographs": list(self.micrographs),
                "kept": self.kept, "seconds": self.seconds}


def _pooled_ap(denoiser: TrainedDenoiser, micrographs: Sequence[Micrograph], check: PickingCheck,
               judge: LearnedJudgeSettings) -> float:
    """The learned judge's AP (pooled over micrographs, mean over the judge's seeds) on ``denoiser``'s outputs."""
    pixel_size_a = micrographs[0].pixel_size_a
    outputs = [denoise_image(denoiser, micrograph.image, pixel_size_a=pixel_size_a) for micrograph in micrographs]
    truths = [check.coordinates[micrograph.name] for micrograph in micrographs]
    run = cross_validate(outputs, truths, pixel_size_a, check.diameter_a,
                         MATCH_RADIUS_DIAMETERS * check.diameter_a / pixel_size_a, judge)
    values = [pooled(row, "ap") for row in run.results]
    return sum(value or 0.0 for value in values) / len(values)


def check_adaptation_by_picking(initial: TrainedDenoiser, model_path: str | os.PathLike,
                                micrographs: Sequence[Micrograph], check: PickingCheck) -> PickingVerdict | None:
    """Judge the adapted model at ``model_path`` against ``initial`` by picking, and rewrite the file with
    ``initial`` unless the adapted model picks better; returns the verdict, or None when the file already
    holds the initial model (the loss check refused the adaptation; nothing to judge).

    Raises InputError when fewer than two of ``micrographs`` are annotated or their pixel sizes differ.
    """
    started = time.perf_counter()
    annotated = [micrograph for micrograph in micrographs if micrograph.name in check.coordinates]
    if len(annotated) < 2:
        raise InputError("--adapt-check", f"needs annotated particles for at least 2 of the micrographs being "
                         f"adapted to (NAME.star beside NAME.mrc's stem), found {len(annotated)}")
    if len({micrograph.pixel_size_a for micrograph in annotated}) > 1:
        raise InputError("--adapt-check", "the annotated micrographs must share one pixel size")
    model_path = Path(model_path)
    adapted = load_denoiser(model_path)
    if not adapted.metadata["adaptation"]["kept"]:
        return None
    judge = replace(check.judge, folds=min(check.judge.folds, len(annotated)))
    initial_ap, adapted_ap = (_pooled_ap(model, annotated, check, judge) for model in (initial, adapted))
    verdict = PickingVerdict(initial_ap, adapted_ap, tuple(micrograph.name for micrograph in annotated),
                             time.perf_counter() - started)
    kept_model = adapted if verdict.kept else initial
    adaptation = {**adapted.metadata["adaptation"], "kept": verdict.kept, "picking_check": verdict.record()}
    save_model(model_path, kept_model.model, extra={**kept_model.metadata, "adaptation": adaptation})
    return verdict
