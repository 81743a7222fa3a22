"""2D classification from files: micrographs and their picks in, class averages and a
RELION particle STAR out (``cryoscore classify2d``)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import starfile

from cryoscore.classify.match import judge_classes, template_projections
from cryoscore.classify.twod import Classification2D, Classification2DSettings, classify_2d
from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.io.coords import stamp_star_version
from cryoscore.io.layout import write_json
from cryoscore.io.mrc import write_mrc
from cryoscore.io.png import write_panels_png
from cryoscore.reconstruct.extract import extract_picked_particles, read_picked_micrographs


def classify_micrographs(
    paths: Sequence[Path],
    picks_dir: Path,
    diameter_a: float,
    output_dir: Path,
    settings: Classification2DSettings = Classification2DSettings(),
    *,
    ctf_star: Path | None = None,
    pixel_size_a: float | None = None,
    threshold: float | None = None,
    box_px: int = 64,
    max_particles: int = 5000,
    template: str | None = None,
    progress: Callable[[int, np.ndarray], None] | None = None,
) -> tuple[Classification2D, dict | None]:
    """Box the picks from the micrographs, classify them (phase-flipped with the CTFs of
    ``ctf_star`` when given, which replace any per-particle defocus of the picks, as in
    :func:`~cryoscore.reconstruct.extract.read_picked_micrographs`) and write into ``output_dir``:

    - ``class_averages.mrcs``: the K averages (box pixel size in the header);
    - ``classes.png``: the averages, each titled with its number, particle count and gold-standard
      FRC resolution;
    - ``particles.star``: RELION particles (rlnMicrographName, rlnCoordinateX/Y, rlnClassNumber
      from 1, rlnAnglePsi, rlnOriginXAngst/YAngst, rlnMaxValueProbDistribution = the correlation);
    - ``classify2d.json``: settings, counts, resolutions, timings, and with a ``template``
      density (a specimen as :func:`~cryoscore.simulate.volume.load_specimen` takes it) each
      class's match against its projections (:func:`~cryoscore.classify.match.judge_classes`,
      also in the gallery's titles).

    At most ``max_particles`` picks, drawn at random with ``settings.seed``. Returns the
    classification and the template judgement (None without a template).
    """
    started = time.perf_counter()
    if diameter_a <= 0:
        raise InputError("--diameter", f"must be > 0 A, got {diameter_a}")
    data = read_picked_micrographs(paths, picks_dir, ctf_star=ctf_star, pixel_size_a=pixel_size_a,
                                   threshold=threshold)
    picks = data.picks
    stack = extract_picked_particles(data.paths, picks, data.ctfs, data.pixel_size_a, diameter_a, box_px)
    rng = np.random.default_rng(settings.seed)
    chosen = np.sort(rng.choice(len(stack.images), size=min(max_particles, len(stack.images)), replace=False))
    projections = None if template is None else template_projections(template, stack.images.shape[-1], stack.pixel_size_a)
    chosen_ctfs = None if stack.ctfs is None else [stack.ctfs[index] for index in chosen]
    try:
        result = classify_2d(stack.images[chosen], stack.pixel_size_a, diameter_a, settings, ctfs=chosen_ctfs,
                             progress=progress)
    except ValueError as error:
        raise InputError(picks_dir, f"{error} ({len(stack.images)} of {stack.n_picks} picks lie on the micrographs)") from None
    judgement = (None if template is None or projections is None
                 else judge_classes(result, template, projections, diameter_a, chosen_ctfs))
    output_dir.mkdir(parents=True, exist_ok=True)
    write_mrc(output_dir / "class_averages.mrcs", result.averages, result.pixel_size_a)
    order = np.argsort(-result.counts)
    zoom = max(1, 128 // result.averages.shape[-1])  # small boxes shown at least 128 px wide, pixels repeated
    write_panels_png(output_dir / "classes.png",
                     [(f"{index + 1}: {result.counts[index]}, {result.resolution_a[index]:.0f} A"
                       + ("" if judgement is None else f", m {judgement['template_match'][index]:.2f}"),
                       np.kron(result.averages[index], np.ones((zoom, zoom)))) for index in order], columns=8,
                     caption="class averages, largest first: number, particles, gold-standard FRC 0.143"
                             + ("" if judgement is None else ", template match") + f"; {result.pixel_size_a:.2f} A/px")
    micrograph_index, pick_index = stack.micrograph_index[chosen], stack.pick_index[chosen]
    particles = pd.DataFrame({
        "rlnMicrographName": [str(paths[index]) for index in micrograph_index],
        "rlnCoordinateX": [picks[m].x_px[p] for m, p in zip(micrograph_index, pick_index)],
        "rlnCoordinateY": [picks[m].y_px[p] for m, p in zip(micrograph_index, pick_index)],
        "rlnClassNumber": result.classes + 1,
        "rlnAnglePsi": result.angles_deg,
        "rlnOriginXAngst": -result.shifts_yx_px[:, 1] * result.pixel_size_a,
        "rlnOriginYAngst": -result.shifts_yx_px[:, 0] * result.pixel_size_a,
        "rlnMaxValueProbDistribution": result.scores,
    })
    with atomic_path(output_dir / "particles.star") as tmp:
        starfile.write({"particles": particles}, tmp)
        stamp_star_version(tmp)
    write_json(output_dir / "classify2d.json", {
        "settings": dataclasses.asdict(settings), "diameter_a": diameter_a, "box_px": int(result.averages.shape[-1]),
        "pixel_size_a": result.pixel_size_a, "ctf": str(ctf_star) if ctf_star is not None else None,
        "picks": str(picks_dir), "threshold": threshold, "n_picks": stack.n_picks, "n_particles": len(chosen),
        "counts": result.counts.tolist(),
        "resolution_a": [None if not np.isfinite(value) else float(value) for value in result.resolution_a],
        "template": judgement, "seconds": time.perf_counter() - started})
    return result, judgement
