"""How well does ``cryoscore ctf`` recover the defocus? (issue 15)

    python benchmarks/bench_ctf.py -o benchmarks/ctf.json [--micrographs 3] [--size 1024]

Simulated micrographs with 200 or 400 A of vitreous ice (its phase contrast gives the Thon
rings), apoferritin particles, 1.0, 1.5 and 2.0 A/px, 20 and 40 e/A^2, mean defocus 0.8-3.0
um with up to 0.3 um of astigmatism: every estimate against the simulator's true CTF (errors
of defocus U and V in nm, of the astigmatism angle where U - V > 50 nm), the fit resolution,
the figure of merit and the seconds per micrograph. Then the ten real EMPIAR-10146
micrographs in ../shared/data (no true defocus: what the estimate says about them).
Writes the JSON and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_learned_picker import run_record

from cryoscore.io.layout import DatasetLayout
from cryoscore.io.mrc import read_mrc
from cryoscore.preprocess.ctf import RELIABLE_FIGURE_OF_MERIT, CtfSearch, estimate_ctf
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "apoferritin-empiar10146" / "micrographs"
CONDITIONS = [(pixel, dose, ice) for pixel in (1.0, 1.5, 2.0) for dose in (20.0, 40.0) for ice in (200.0, 400.0)]


def judge_condition(work: Path, pixel_a: float, dose: float, ice_a: float, micrographs: int, size: int,
                    seed: int) -> dict:
    directory = work / f"{pixel_a:g}A-{dose:g}e-{ice_a:g}ice"
    if not (directory / "manifest.json").is_file():
        write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=micrographs, size_px=size,
                                       pixel_size_a=pixel_a, dose_e_per_a2=dose, defocus_range_um=(0.8, 3.0),
                                       max_astigmatism_um=0.3, background=BackgroundParams(vitreous_ice_a=ice_a),
                                       seed=seed), directory, progress=False)
    layout = DatasetLayout(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    rows = []
    for entry in manifest["micrographs"]:
        image, _ = read_mrc(layout.micrograph(entry["name"]))
        started = time.perf_counter()
        estimate = estimate_ctf(image, pixel_a, CtfSearch())
        seconds = time.perf_counter() - started
        truth = entry["ctf"]
        astigmatism_nm = (truth["defocus_u_um"] - truth["defocus_v_um"]) * 1e3
        angle_error = None
        if astigmatism_nm > 50:
            difference = (estimate.params.astigmatism_angle_deg - truth["astigmatism_angle_deg"]) % 180
            angle_error = min(difference, 180 - difference)
        rows.append({"name": entry["name"], "true_defocus_u_um": truth["defocus_u_um"],
                     "true_defocus_v_um": truth["defocus_v_um"], "true_angle_deg": truth["astigmatism_angle_deg"],
                     "defocus_u_um": estimate.params.defocus_u_um, "defocus_v_um": estimate.params.defocus_v_um,
                     "angle_deg": estimate.params.astigmatism_angle_deg,
                     "error_u_nm": (estimate.params.defocus_u_um - truth["defocus_u_um"]) * 1e3,
                     "error_v_nm": (estimate.params.defocus_v_um - truth["defocus_v_um"]) * 1e3,
                     "angle_error_deg": angle_error, "fit_resolution_a": estimate.fit_resolution_a,
                     "figure_of_merit": estimate.figure_of_merit, "seconds": seconds})
    errors = np.abs([[row["error_u_nm"], row["error_v_nm"]] for row in rows])
    angles = [row["angle_error_deg"] for row in rows if row["angle_error_deg"] is not None]
    return {"pixel_size_a": pixel_a, "dose_e_per_a2": dose, "vitreous_ice_a": ice_a, "micrographs": rows,
            "mean_abs_error_nm": float(errors.mean()), "max_abs_error_nm": float(errors.max()),
            "max_angle_error_deg": max(angles) if angles else None,
            "mean_fit_resolution_a": float(np.mean([row["fit_resolution_a"] for row in rows])),
            "mean_seconds": float(np.mean([row["seconds"] for row in rows]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("ctf-bench-data"), help="simulated data (kept)")
    parser.add_argument("--micrographs", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    started = time.perf_counter()
    conditions = [judge_condition(args.work, pixel, dose, ice, args.micrographs, args.size, seed=100 + index)
                  for index, (pixel, dose, ice) in enumerate(CONDITIONS)]
    real = []
    for path in sorted(REAL_DIR.glob("*.mrc")):
        image, pixel_a = read_mrc(path)
        estimate = estimate_ctf(image, pixel_a, CtfSearch())
        real.append({"name": path.name, "defocus_u_um": estimate.params.defocus_u_um,
                     "defocus_v_um": estimate.params.defocus_v_um, "fit_resolution_a": estimate.fit_resolution_a,
                     "figure_of_merit": estimate.figure_of_merit,
                     "reliable": estimate.figure_of_merit >= RELIABLE_FIGURE_OF_MERIT})
    document = {**run_record(), "seconds": time.perf_counter() - started,
                "conditions": conditions, "real": real}
    args.output.write_text(json.dumps(document, indent=1))
    lines = ["| A/px | e/A^2 | ice (A) | mean abs error U, V (nm) | max (nm) | max angle error (deg) | "
             "fit resolution (A) | s / micrograph |", "|---|---|---|---|---|---|---|---|"]
    for condition in conditions:
        angle = condition["max_angle_error_deg"]
        lines.append(f"| {condition['pixel_size_a']:g} | {condition['dose_e_per_a2']:g} | "
                     f"{condition['vitreous_ice_a']:g} | {condition['mean_abs_error_nm']:.1f} | "
                     f"{condition['max_abs_error_nm']:.1f} | {'-' if angle is None else f'{angle:.1f}'} | "
                     f"{condition['mean_fit_resolution_a']:.1f} | {condition['mean_seconds']:.1f} |")
    reliable = sum(row["reliable"] for row in real)
    lines.append("")
    lines.append(f"Real EMPIAR-10146: Thon rings found on {reliable} of {len(real)} micrographs "
                 f"(figures of merit {min(r['figure_of_merit'] for r in real):.3f} to "
                 f"{max(r['figure_of_merit'] for r in real):.3f}).")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
