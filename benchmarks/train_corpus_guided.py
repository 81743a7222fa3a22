"""Experiment (issue 12, tried and not kept): the default model fine-tuned on its own corpus with
guidance by EACH corpus dataset's own map, so that a reference-free model learns what guidance
teaches (keep particles, drop ice) from every specimen of the corpus.

    OMP_NUM_THREADS=1 python benchmarks/train_corpus_guided.py OUT.pt --corpus CORPUS \\
        [--steps 600] [--strength 3] [--resolution 25]

CORPUS is ``scripts/make_default_corpus.py``'s output (``cNNN/`` datasets, each with the
``reference.mrc`` of its specimen and its defocus range and B-factor in the manifest). Each
step is the default model's own score loss on corpus pairs plus ``strength`` times the guided
loss (``cryoscore.objectives``) on synthetic crops of one corpus dataset drawn at random, with
that dataset's map, defocus range and B-factor. The command line has no multi-reference
guidance, so this script runs ``cryoscore train CORPUS/c* --method score --init default ...``
with ``cryoscore.train.build_objective`` replaced by one that builds this objective.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

import cryoscore.train
from cryoscore.cli import main as cryoscore_main
from cryoscore.errors import InputError
from cryoscore.objectives import StepDraws, weighted_denoising_error
from cryoscore.pairs.guidance import GuidanceExamples
from cryoscore.pairs.halves import HalfPair
from cryoscore.settings import GuidanceConfig, NoiseLevels

logger = logging.getLogger("train_corpus_guided")


class PerDatasetGuidance:
    """Score matching plus ``strength`` times the guided loss of one dataset's examples per step."""

    def __init__(self, examples: Sequence[GuidanceExamples], strength: float, levels: NoiseLevels):
        self.examples, self.strength, self.levels = list(examples), strength, levels

    def __call__(self, denoiser, sources: torch.Tensor, targets: torch.Tensor, draws: StepDraws) -> torch.Tensor:
        loss = weighted_denoising_error(denoiser, sources, targets, self.levels, draws.torch)
        examples = self.examples[int(draws.numpy.integers(len(self.examples)))]
        crop_px = sources.shape[-1]
        inputs, clean = (torch.from_numpy(crops) for crops in examples.sample(sources.shape[0], crop_px, draws.numpy,
                                                                              draws.step))
        guided = weighted_denoising_error(denoiser, inputs, clean, self.levels, draws.torch, examples.loss_band(crop_px))
        return loss + self.strength * guided

    def summary(self) -> dict[str, Any]:
        return {"per_dataset_references": [examples.summary() for examples in self.examples],
                "strength": self.strength}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--strength", type=float, default=3.0)
    parser.add_argument("--resolution", type=float, default=GuidanceConfig.resolution_a,
                        help="the guided loss counts wavelengths longer than this, A")
    parser.add_argument("--learning-rate", default="2e-4")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    datasets = sorted(path for path in args.corpus.glob("c[0-9][0-9][0-9]") if path.is_dir())

    def build(method: str, levels: NoiseLevels, guidance: GuidanceConfig | None, normalised: Sequence[HalfPair],
              pixel_size_a: float, seed: int) -> PerDatasetGuidance:
        assert len(normalised) == len(datasets), "one micrograph per corpus dataset"
        examples = []
        for index, (dataset, pair) in enumerate(zip(datasets, normalised)):
            config = json.loads((dataset / "manifest.json").read_text())["config"]
            per_dataset = GuidanceConfig(reference=str(dataset / "reference.mrc"), strength=args.strength,
                                         resolution_a=args.resolution,
                                         defocus_range_um=tuple(config["defocus_range_um"]),
                                         bfactor_a2=config["bfactor_a2"])
            try:
                examples.append(GuidanceExamples(per_dataset, [pair], pair.pixel_size_a, seed + index))
            except InputError as error:
                logger.warning("%s: no guidance (%s)", dataset.name, error)
        return PerDatasetGuidance(examples, args.strength, levels)

    cryoscore.train.build_objective = build  # type: ignore[assignment]
    return cryoscore_main(["train", *map(str, datasets), "--method", "score", "--init", "default",
                           "--learning-rate", args.learning_rate, "--steps", str(args.steps), "--batch-size", "8",
                           "--crop", "160", "--seed", "1", "-o", args.output])


if __name__ == "__main__":
    sys.exit(main())
