"""How well does ``cryoscore align`` recover a movie's drift? (issue 15)

    python benchmarks/bench_align.py -o benchmarks/align.json [--movies 2] [--size 1024]

Simulated movies (8 apoferritins per 512 x 512 px, 300 A of vitreous ice, 24 frames) at 1.0 and 1.5 A/px, 20 and
40 e/A^2 over the movie, with 10 or 30 A of smooth random stage drift: the per-frame shifts
``align_frames`` measures against the simulator's (both relative to their mean over frames),
as the RMS and the largest error in pixels, the path length of the drift, the seconds per
movie and the trajectory's refinement rounds. Writes the JSON, prints a Markdown table (the
worse movie of each condition) and every movie's RMS error.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_learned_picker import run_record

from cryoscore.io.layout import DatasetLayout
from cryoscore.io.movie import open_movie
from cryoscore.preprocess.align import align_frames
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset

CONDITIONS = [(pixel, dose, drift) for pixel in (1.0, 1.5) for dose in (20.0, 40.0) for drift in (10.0, 30.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("align-bench-data"), help="simulated movies (kept)")
    parser.add_argument("--movies", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    started = time.perf_counter()
    conditions = []
    for index, (pixel_a, dose, drift_a) in enumerate(CONDITIONS):
        directory = args.work / f"{pixel_a:g}A-{dose:g}e-{drift_a:g}drift"
        if not (directory / "manifest.json").is_file():
            write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=args.movies, size_px=args.size,
                                           pixel_size_a=pixel_a, particles_per_micrograph=round(8 * (args.size / 512) ** 2),
                                           dose_e_per_a2=dose, n_frames=24,
                                           drift_a=drift_a,
                                           write_frames=True, background=BackgroundParams(vitreous_ice_a=300.0),
                                           seed=200 + index), directory, progress=False)
        layout = DatasetLayout(directory)
        movies = []
        for entry in json.loads(layout.manifest.read_text())["micrographs"]:
            with open_movie(layout.frames(entry["name"])) as movie:
                frames = np.stack([movie.frame(frame) for frame in range(movie.n_frames)])
            movie_started = time.perf_counter()
            aligned = align_frames(frames, pixel_a)
            seconds = time.perf_counter() - movie_started
            truth = np.array(entry["frame_shifts_px"])
            truth -= truth.mean(axis=0)
            errors = np.linalg.norm(aligned.shifts_px - truth, axis=1)
            movies.append({"name": entry["name"], "rms_error_px": float(np.sqrt(np.mean(errors**2))),
                           "max_error_px": float(errors.max()),
                           "drift_path_px": float(np.linalg.norm(np.diff(truth, axis=0), axis=1).sum()),
                           "seconds": seconds, "rounds": aligned.rounds, "converged": aligned.converged,
                           "smoothing": aligned.smoothing})
        conditions.append({"pixel_size_a": pixel_a, "dose_e_per_a2": dose, "drift_a": drift_a, "movies": movies})
    document = {**run_record(), "seconds": time.perf_counter() - started,
                "size_px": args.size, "frames": 24, "conditions": conditions}
    args.output.write_text(json.dumps(document, indent=1))
    lines = ["| A/px | e/A^2 | drift (A) | drift path (px) | RMS error (px) | largest error (px) | s / movie |",
             "|---|---|---|---|---|---|---|"]
    for condition in conditions:
        movies = condition["movies"]
        lines.append(f"| {condition['pixel_size_a']:g} | {condition['dose_e_per_a2']:g} | {condition['drift_a']:g} | "
                     f"{np.mean([m['drift_path_px'] for m in movies]):.1f} | "
                     f"{max(m['rms_error_px'] for m in movies):.2f} | {max(m['max_error_px'] for m in movies):.2f} | "
                     f"{np.mean([m['seconds'] for m in movies]):.1f} |")
    rms = [movie["rms_error_px"] for condition in conditions for movie in condition["movies"]]
    lines += ["", f"{sum(value < 0.5 for value in rms)} of {len(rms)} movies within 0.5 px RMS; per movie (px): "
              + ", ".join(f"{value:.2f}" for value in rms)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
