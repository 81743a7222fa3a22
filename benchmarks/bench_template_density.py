"""The template judge on the real EMPIAR-10146 set: the guidance reference against an independent density.

    python benchmarks/bench_template_density.py

Judges raw, low-passed (20 A) and default-model micrographs with the template picker twice:
correlating with the built-in apoferritin (what guided models learn) and with ``shell:120:80``
(a featureless hollow sphere of its diameters, the bench's independent template). Prints AP.
"""
import dataclasses, json, time
from pathlib import Path
from cryoscore.bench.config import RealDataset
from cryoscore.bench.datasets import real_micrograph_paths, real_test_set
from cryoscore.bench.run import judge_all
from cryoscore.filters import lowpass_filter
from cryoscore.infer.denoise import denoise_image, load_denoiser
data = Path(__file__).resolve().parents[2] / "shared" / "data" / "apoferritin-empiar10146"
dataset = RealDataset("real", data / "micrographs", data / "coordinates", 1.85, 120.0, reference="apoferritin")
test_set = real_test_set(dataset, real_micrograph_paths(dataset))
default = load_denoiser()
functions = {"raw": lambda image: image, "lowpass": lambda image: lowpass_filter(image, 1.85, 20.0),
             "default": lambda image: denoise_image(default, image, pixel_size_a=1.85)}
for template in ("apoferritin", "shell:120:80"):
    started = time.perf_counter()
    outcomes = judge_all(dataclasses.replace(test_set, template=template), functions, ("template",))
    print(template, json.dumps({name: round(outcome.metrics["template"]["ap"], 3) for name, outcome in outcomes.items()}),
          f"{time.perf_counter() - started:.0f} s", flush=True)
