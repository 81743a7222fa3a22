"""``cryoscore bench``: simulate or read datasets, train the denoisers, judge them, report.

For each simulated specimen: write training and test datasets per dose and a
particle-free dataset, train each learned denoiser once on the pooled training halves
(and a guided model with a decoy density), then judge every denoiser on every test set
and run the bias controls. Real datasets train their learned denoisers on single-image
pairs (recorrupted, :mod:`cryoscore.pairs.single`), having no frames. Everything lands in
``OUTDIR/metrics.json``, ``OUTDIR/report.html`` and ``OUTDIR/summary.md``; the summary's
checks are :mod:`cryoscore.bench.checks`.
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cryoscore import __version__
from cryoscore.bench.checks import judge_of, learned_minus_raw, summarise
from cryoscore.bench.config import BenchConfig, ClassJudgeSettings, LearnedJudgeSettings, json_ready, work_dir_name
from cryoscore.bench.datasets import (
    TestSet,
    real_micrograph_paths,
    real_test_set,
    simulate_specimen,
    simulated_test_set,
)
from cryoscore.bench.denoisers import DenoiseFunction, call_or_record, denoise_functions, train_models
from cryoscore.bench.judges import (
    DenoiserOutcome,
    JudgedDataset,
    attach_classes,
    attach_reconstruction,
    judge_denoiser,
    picks_above,
    reference_volume,
)
from cryoscore.bench.report import write_reports
from cryoscore.bench.resume import NO_STORE, StepStore, source_digest
from cryoscore.io.layout import write_json
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.pairs.single import pairs_from_single_micrographs
from cryoscore.simulate.volume import load_specimen

logger = logging.getLogger(__name__)

DECOY_AP_MARGIN = 0.01
"""A decoy-guided model beating ``score``'s AP by more than this is reported as bias."""


CORRELATION_MARGIN = 0.02
"""Guided's 99th-percentile reference correlation on particle-free micrographs may exceed score's by this much."""


def _versions() -> dict[str, str]:
    return {"cryoscore": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def judge_all(test_set: TestSet, functions: dict[str, DenoiseFunction], judges: Sequence[str],
              learned: LearnedJudgeSettings | None = None,
              classes: ClassJudgeSettings | None = None,
              failures: dict[str, str] | None = None, store: StepStore = NO_STORE) -> dict[str, DenoiserOutcome]:
    """Every denoiser of ``functions`` judged on ``test_set`` by ``judges`` (names from
    :data:`~cryoscore.bench.config.JUDGES`; ``learned`` and ``classes`` set those judges); the
    template and class judges only with the test set's own ``template`` density. With a
    ``failures`` dict, a denoiser that raises while it is judged is left out of the outcomes and
    its error stored there under its name (:func:`~cryoscore.bench.denoisers.call_or_record`; the
    others are still judged); without one the error propagates. Each denoiser judged is a step of
    ``store`` (``judged/LABEL/NAME``): one kept there is loaded, not judged again.

    Reconstruction: on simulated data (a ``true_map``) aligned to the reference, which is the
    true map, with the CTFs; on real data aligned to the ``template`` where there is one (a
    density independent of the guidance reference, so the maps do not favour the guided
    denoiser) or else the reference, with no truth to compare to, CTF-corrected only where the
    micrographs' CTFs are known."""
    reference = reference_volume(test_set) if test_set.reference is not None else None
    simulated = test_set.true_map is not None
    template_used = "template" in judges or ("reconstruction" in judges and not simulated)
    template = (load_specimen(test_set.template, test_set.pixel_size_a).volume_v
                if test_set.template is not None and template_used else None)
    outcomes = {}
    for name, function in functions.items():
        outcome = store.load_or_run(f"judged/{test_set.label}/{name}", functools.partial(
            call_or_record, failures, name, "", judge_denoiser, test_set, name, function, tuple(judges),
            template_reference=template if "template" in judges else None, learned_settings=learned))
        if outcome is not None:
            outcomes[name] = outcome
    alignment, aligned_to = ((reference, test_set.reference) if simulated or template is None
                             else (template, test_set.template))
    if "reconstruction" in judges and alignment is not None:
        for outcome in outcomes.values():
            attach_reconstruction(test_set, outcome, alignment, aligned_to=aligned_to,
                                  true_map=reference if simulated else None)
    if "classes" in judges and test_set.template is not None:
        for outcome in outcomes.values():
            attach_classes(test_set, outcome, classes or ClassJudgeSettings())
    return outcomes


def _particle_free_control(
    empty_set: TestSet, functions: dict, outcomes: dict[str, DenoiserOutcome], store: StepStore = NO_STORE
) -> dict[str, Any]:
    """After each denoiser, on particle-free micrographs: the picks per micrograph a user would get,
    and the local correlation with projections of the reference (the guided model's).

    Picks are counted with the blob picker at the threshold that denoiser's best F1 chose on the
    particle test set of the same dose, and, where the learned judge ran, with every seed's
    fold pickers trained on that denoiser's outputs, each at its own best-F1 threshold (the mean count)
    (``learned_picks_per_micrograph``). The count that decides is the primary judge's
    (``picker``): the learned one when every denoiser has it.

    Passes when guided makes no more picks than score and its 99th-percentile reference
    correlation is no higher than score's by more than :data:`CORRELATION_MARGIN`. A denoiser
    that raises here gets ``{"error": ...}``; when it is guided or score the control fails. Each
    denoiser's counts are a step of ``store`` (``particle-free/LABEL/NAME``)."""
    reference = reference_volume(empty_set)
    control: dict[str, Any] = {}
    for name, function in functions.items():
        errors: dict[str, str] = {}
        entry = store.load_or_run(f"particle-free/{empty_set.label}/{name}", functools.partial(
            _particle_free_counts, empty_set, name, function, outcomes.get(name), reference, errors))
        control[name] = entry if entry is not None else {"error": errors[name]}
    failed = [f"{name}: {control[name]['error']}" for name in ("guided", "score") if "error" in control.get(name, {})]
    if failed:
        control["failed"] = failed
        control["pass"] = False
    elif "guided" in control and "score" in control:
        guided, score = control["guided"], control["score"]
        count = ("learned_picks_per_micrograph" if all("learned_picks_per_micrograph" in entry
                                                       for entry in control.values() if "error" not in entry)
                 else "picks_per_micrograph")
        control["picker"] = "learned" if count.startswith("learned") else "blob"
        control["pass"] = bool(
            guided[count] <= score[count]
            and guided["reference_correlation"]["p99"] <= score["reference_correlation"]["p99"] + CORRELATION_MARGIN)
    return control


def _particle_free_counts(empty_set: TestSet, name: str, function: DenoiseFunction, outcome: DenoiserOutcome | None,
                          reference: np.ndarray, errors: dict[str, str]) -> dict[str, Any] | None:
    """One denoiser's entry of :func:`_particle_free_control`, or None with its error in ``errors``."""
    matches = outcome.matches if outcome is not None else None
    threshold = matches.threshold if matches is not None else None
    judged = call_or_record(errors, name, "", judge_denoiser, empty_set, name, function, ("blob",),
                            correlation_reference=reference,
                            counting_pickers=(outcome.learned_pickers or ()) if outcome is not None else ())
    if judged is None:
        return None
    kept = picks_above(judged.picks, threshold if threshold is not None else 0.0)
    entry = {"threshold": threshold,
             "picks_per_micrograph": float(np.mean([len(found) for found in kept.values()])),
             "reference_correlation": judged.metrics["reference_correlation"]}
    if "learned_picks_per_micrograph" in judged.metrics:
        entry["learned_picks_per_micrograph"] = judged.metrics["learned_picks_per_micrograph"]
    return entry


def _decoy_control(outcomes: dict[str, DenoiserOutcome]) -> dict[str, Any] | None:
    """AP of the decoy-guided model against score's and guided's on the same test set, by the primary
    judge (the learned picker when all three have it, else the blob picker)."""
    names = [name for name in ("score", "guided", "guided-decoy") if name in outcomes]
    if "guided-decoy" not in names or "score" not in names:
        return None
    judge = judge_of([outcomes[name] for name in names])
    ap = {name: outcomes[name].metrics[judge]["ap"] for name in names}
    gain = ap["guided-decoy"] - ap["score"]
    return {"judge": judge, "ap": ap, "decoy_gain_over_score": gain, "pass": gain <= DECOY_AP_MARGIN}


def _simulated_results(config: BenchConfig, work_dir: Path, store: StepStore) -> tuple[list[JudgedDataset], list[dict]]:
    datasets: list[JudgedDataset] = []
    training: list[dict] = []
    for index, specimen in enumerate(config.simulated):
        specimen_dir = work_dir / work_dir_name(specimen.specimen)
        train_dirs, test_dirs, empty_dir = simulate_specimen(config, index, specimen_dir)
        logger.info("%s: simulated %d training and %d test sets in %s", specimen.specimen, len(train_dirs),
                    len(test_dirs), specimen_dir)
        pairs = [pair for directory in train_dirs for pair in pairs_from_dataset(directory)]
        reference = str(train_dirs[0] / "reference.mrc")
        training_failures: dict[str, str] = {}
        models = train_models(pairs, config.denoisers, config.training, specimen_dir / "models", reference=reference,
                              decoy=specimen.decoy, defocus_range_um=config.simulation.defocus_range_um,
                              failures=training_failures, store=store)
        training.extend({"dataset": specimen.specimen, **model.record} for model in models.values())
        training.extend({"dataset": specimen.specimen, "name": name, "error": error}
                        for name, error in training_failures.items())
        for test_dir, dose in zip(test_dirs, specimen.doses):
            test_set = replace(simulated_test_set(test_dir, f"{specimen.specimen} {dose:g} e/A^2"),
                               template=specimen.template)
            functions = denoise_functions(config.denoisers, models, test_set.pixel_size_a, config.lowpass_a)
            failures = dict(training_failures)
            outcomes = judge_all(test_set, functions, config.judges, config.learned, config.classes, failures, store)
            particle_free = None
            if dose == min(specimen.doses):
                empty_set = simulated_test_set(empty_dir, f"{specimen.specimen} particle-free")
                particle_free = _particle_free_control(
                    empty_set, {name: function for name, function in functions.items() if name in outcomes}, outcomes,
                    store)
            datasets.append(JudgedDataset(test_set.label, "simulated", test_set, outcomes, dose_e_per_a2=dose,
                                          particle_free=particle_free, decoy=_decoy_control(outcomes),
                                          failed=failures))
    return datasets, training


def _real_results(config: BenchConfig, work_dir: Path, store: StepStore) -> tuple[list[JudgedDataset], list[dict]]:
    datasets: list[JudgedDataset] = []
    training: list[dict] = []
    for dataset in config.real:
        paths = real_micrograph_paths(dataset)
        pairs = pairs_from_single_micrographs(paths, pixel_size_a=dataset.pixel_size_a, seed=config.training.seed)
        methods = [method for method in config.denoisers if method != "guided" or dataset.reference is not None]
        failures: dict[str, str] = {}
        models = train_models(pairs, methods, config.training, work_dir / work_dir_name(dataset.name) / "models",
                              reference=dataset.reference, decoy=dataset.decoy,
                              defocus_range_um=config.simulation.defocus_range_um, failures=failures, store=store)
        training.extend({"dataset": dataset.name, **model.record} for model in models.values())
        training.extend({"dataset": dataset.name, "name": name, "error": error} for name, error in failures.items())
        test_set = real_test_set(dataset, paths)
        functions = denoise_functions(config.denoisers, models, test_set.pixel_size_a, config.lowpass_a)
        outcomes = judge_all(test_set, functions, config.judges, config.learned, config.classes, failures, store)
        datasets.append(JudgedDataset(dataset.name, "real", test_set, outcomes, decoy=_decoy_control(outcomes),
                                      failed=failures))
    return datasets, training


def metrics_document(config: dict[str, Any], denoisers: Sequence[str], datasets: list[JudgedDataset], training: list[dict],
                     seconds: float, command_line: Sequence[str],
                     resumed_steps: Sequence[str] = (), resumed_from_other_source: bool = False) -> dict[str, Any]:
    """Every number of the run as one JSON-ready dict (the content of metrics.json).

    ``config`` records what was run (a benchmark's ``BenchConfig.to_dict()``), ``denoisers``
    the names the summary's checks compare, ``datasets`` one record per judged test set,
    ``seconds`` this run's time and ``resumed_steps`` the steps an earlier run had
    finished (:mod:`cryoscore.bench.resume`; their time is not in ``seconds``),
    ``resumed_from_other_source`` whether other cryoscore source code made them.
    """
    return json_ready({
        "cryoscore_bench": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(command_line),
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "config": config,
        "seconds": seconds,
        "resumed_steps": list(resumed_steps),
        "resumed_from_other_source": resumed_from_other_source,
        "training": training,
        "datasets": {
            record.label: {
                "kind": record.kind,
                "pixel_size_a": record.test_set.pixel_size_a,
                "diameter_a": record.test_set.diameter_a,
                "n_micrographs": len(record.test_set.micrographs),
                "n_particles": int(sum(len(micrograph.truth) for micrograph in record.test_set.micrographs)),
                "template_density": record.test_set.template,
                "denoisers": {name: outcome.metrics for name, outcome in record.outcomes.items()},
                "learned_ap_minus_raw": learned_minus_raw(record),
                "failed": record.failed,
                **{key: value for key, value in (("dose_e_per_a2", record.dose_e_per_a2),
                                                 ("particle_free", record.particle_free), ("decoy", record.decoy))
                   if value is not None},
            }
            for record in datasets
        },
        "denoisers_left_out": [name for name in denoisers
                               if not any(name in record.outcomes for record in datasets)],
        "summary": summarise(datasets, denoisers),
    })


def run_bench(config: BenchConfig, output_dir: Path, *, command_line: Sequence[str] = ("cryoscore", "bench"),
              resume: bool = False) -> dict:
    """Run the benchmark ``config`` into ``output_dir``; returns the metrics document.

    Writes ``metrics.json``, ``report.html`` and ``summary.md`` (atomically) and keeps the
    datasets, models and finished steps under ``output_dir/work``; with ``resume``, the
    steps an earlier (interrupted) run of the same ``config`` kept there are loaded, not run again
    (:mod:`cryoscore.bench.resume`; InputError if they were made with another config or version).
    The list of denoisers may differ: each step is one denoiser's, so a run that adds denoisers
    to a finished one resumes from its steps and judges only the new ones.
    """
    started = time.perf_counter()
    work_dir = output_dir / "work"
    versions = _versions()
    what_steps_depend_on = config.with_absolute_paths().to_dict()  # whichever way its path is spelled
    del what_steps_depend_on["learned"]["workers"]  # the numbers are the same for any number of workers
    del what_steps_depend_on["denoisers"]  # each step is one denoiser's: a run with more resumes from one with fewer
    store = StepStore(work_dir / "steps", {"config": what_steps_depend_on, "cryoscore": versions["cryoscore"],
                                          "torch": versions["torch"]}, resume=resume, source=source_digest())
    simulated, simulated_training = _simulated_results(config, work_dir, store)
    real, real_training = _real_results(config, work_dir, store)
    datasets = simulated + real
    document = metrics_document(config.to_dict(), config.denoisers, datasets, simulated_training + real_training,
                                time.perf_counter() - started, command_line, store.resumed,
                                store.source_changed)
    write_json(output_dir / "metrics.json", document)
    write_reports(output_dir, document, datasets)
    return document
