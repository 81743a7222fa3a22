"""The template judge on the real EMPIAR-10146 set: the guidance reference against an independent density.

    python benchmarks/bench_template_density.py

Judges raw, low-passed (20 A) and default-model micrographs with the template picker twice:
correlating with the built-in apoferritin (what guided models learn) and with ``shell:120:80``
(a featureless hollow sphere of its diameters, the bench's independent template). Prints AP.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from cryoscore.bench.config import INDEPENDENT_APOFERRITIN, RealDataset
from cryoscore.bench.datasets import real_micrograph_paths, real_test_set
from cryoscore.bench.run import judge_all
from cryoscore.filters import lowpass_filter
from cryoscore.infer.denoise import denoise_image, load_denoiser

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "apoferritin-empiar10146"
PIXEL_SIZE_A = 1.85


def main() -> None:
    dataset = RealDataset("real", DATA / "micrographs", DATA / "coordinates", PIXEL_SIZE_A, 120.0,
                          reference="apoferritin")
    test_set = real_test_set(dataset, real_micrograph_paths(dataset))
    default = load_denoiser()
    functions = {"raw": lambda image: image,
                 "lowpass": lambda image: lowpass_filter(image, PIXEL_SIZE_A, 20.0),
                 "default": lambda image: denoise_image(default, image, pixel_size_a=PIXEL_SIZE_A)}
    for template in ("apoferritin", INDEPENDENT_APOFERRITIN):
        started = time.perf_counter()
        outcomes = judge_all(dataclasses.replace(test_set, template=template), functions, ("template",))
        print(template, json.dumps({name: round(outcome.metrics["template"]["ap"], 3) for name, outcome in outcomes.items()}),
              f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
