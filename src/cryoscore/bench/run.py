"""``cryoscore bench``: simulate or read datasets, train the denoisers, judge them, report.

For each simulated specimen: write training and test datasets per dose and a
particle-free dataset, train each learned denoiser once on the pooled training halves
(and a guided model with a decoy density), then judge every denoiser on every test set
and run the bias controls. Real datasets train their learned denoisers on single-image
pairs (recorrupted, :mod:`cryoscore.pairs.single`), having no frames. Everything lands in
``OUTDIR/metrics.json``, ``OUTDIR/report.html`` and ``OUTDIR/summary.md``.
"""

from __future__ import annotations

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
from cryoscore.bench.config import BenchConfig, ClassJudgeSettings, LearnedJudgeSettings, json_ready, work_dir_name
from cryoscore.bench.crossval import paired_difference
from cryoscore.bench.datasets import (
    TestSet,
    real_micrograph_paths,
    real_test_set,
    simulate_specimen,
    simulated_test_set,
)
from cryoscore.bench.denoisers import DenoiseFunction, denoise_functions, failure_message, train_models
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
              failures: dict[str, str] | None = None) -> dict[str, DenoiserOutcome]:
    """Every denoiser of ``functions`` judged on ``test_set`` by ``judges`` (names from
    :data:`~cryoscore.bench.config.JUDGES`; ``learned`` and ``classes`` set those judges); the
    template and class judges only with the test set's own ``template`` density. With a
    ``failures`` dict, a denoiser that raises while it is judged is left out of the outcomes and
    its :func:`~cryoscore.bench.denoisers.failure_message` stored there under its name (the
    others are still judged); without one the error propagates.

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
        try:
            outcomes[name] = judge_denoiser(test_set, name, function, tuple(judges),
                                            template_reference=template if "template" in judges else None,
                                            learned_settings=learned)
        except Exception as error:
            if failures is None:
                raise
            failures[name] = failure_message(error)
            logger.error("%s on %s: %s; left out of the benchmark", name, test_set.label, failures[name])
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
    empty_set: TestSet, functions: dict, outcomes: dict[str, DenoiserOutcome]
) -> dict[str, Any]:
    """After each denoiser, on particle-free micrographs: the picks per micrograph a user would get,
    and the local correlation with projections of the reference (the guided model's).

    Picks are counted with the blob picker at the threshold that denoiser's best F1 chose on the
    particle test set of the same dose, and, where the learned judge ran, with each fold's
    learned picker trained on that denoiser's outputs at its own best-F1 threshold
    (``learned_picks_per_micrograph``). The count that decides is the primary judge's
    (``picker``): the learned one when every denoiser has it.

    Passes when guided makes no more picks than score and its 99th-percentile reference
    correlation is no higher than score's by more than :data:`CORRELATION_MARGIN`. A denoiser
    that raises here gets ``{"error": ...}``; when it is guided or score the control fails."""
    reference = reference_volume(empty_set)
    control: dict[str, Any] = {}
    for name, function in functions.items():
        outcome = outcomes.get(name)
        matches = outcome.matches if outcome is not None else None
        threshold = matches.threshold if matches is not None else None
        try:
            judged = judge_denoiser(empty_set, name, function, ("blob",), correlation_reference=reference,
                                    counting_pickers=(outcome.learned_pickers or ()) if outcome is not None else ())
        except Exception as error:
            control[name] = {"error": failure_message(error)}
            logger.error("%s on %s: %s", name, empty_set.label, control[name]["error"])
            continue
        kept = picks_above(judged.picks, threshold if threshold is not None else 0.0)
        control[name] = {"threshold": threshold,
                         "picks_per_micrograph": float(np.mean([len(found) for found in kept.values()])),
                         "reference_correlation": judged.metrics["reference_correlation"]}
        if "learned_picks_per_micrograph" in judged.metrics:
            control[name]["learned_picks_per_micrograph"] = judged.metrics["learned_picks_per_micrograph"]
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


def _decoy_control(outcomes: dict[str, DenoiserOutcome]) -> dict[str, Any] | None:
    """AP of the decoy-guided model against score's and guided's on the same test set, by the primary
    judge (the learned picker when all three have it, else the blob picker)."""
    names = [name for name in ("score", "guided", "guided-decoy") if name in outcomes]
    if "guided-decoy" not in names or "score" not in names:
        return None
    judge = _judge_of([outcomes[name] for name in names])
    ap = {name: outcomes[name].metrics[judge]["ap"] for name in names}
    gain = ap["guided-decoy"] - ap["score"]
    return {"judge": judge, "ap": ap, "decoy_gain_over_score": gain, "pass": gain <= DECOY_AP_MARGIN}


def _seed_index(config: BenchConfig, place: int) -> int:
    """The index that seeds the datasets of ``config``'s simulated specimen number ``place`` (from 0)."""
    given = config.simulated[place].seed_index
    return place if given is None else given


def _simulated_results(config: BenchConfig, work_dir: Path) -> tuple[list[JudgedDataset], list[dict]]:
    datasets: list[JudgedDataset] = []
    training: list[dict] = []
    for index, specimen in enumerate(config.simulated):
        specimen_dir = work_dir / work_dir_name(specimen.specimen)
        train_dirs, test_dirs, empty_dir = simulate_specimen(config, specimen, _seed_index(config, index), specimen_dir)
        pairs = [pair for directory in train_dirs for pair in pairs_from_dataset(directory)]
        reference = str(train_dirs[0] / "reference.mrc")
        training_failures: dict[str, str] = {}
        models = train_models(pairs, config.denoisers, config.training, specimen_dir / "models", reference=reference,
                              decoy=specimen.decoy, defocus_range_um=config.simulation.defocus_range_um,
                              failures=training_failures)
        training.extend({"dataset": specimen.specimen, **model.record} for model in models.values())
        training.extend({"dataset": specimen.specimen, "name": name, "error": error}
                        for name, error in training_failures.items())
        for test_dir, dose in zip(test_dirs, specimen.doses):
            test_set = replace(simulated_test_set(test_dir, f"{specimen.specimen} {dose:g} e/A^2"),
                               template=specimen.template)
            functions = denoise_functions(config.denoisers, models, test_set.pixel_size_a, config.lowpass_a)
            failures = dict(training_failures)
            outcomes = judge_all(test_set, functions, config.judges, config.learned, config.classes, failures)
            particle_free = None
            if dose == min(specimen.doses):
                empty_set = simulated_test_set(empty_dir, f"{specimen.specimen} particle-free")
                particle_free = _particle_free_control(
                    empty_set, {name: function for name, function in functions.items() if name in outcomes}, outcomes)
            datasets.append(JudgedDataset(test_set.label, "simulated", test_set, outcomes, dose_e_per_a2=dose,
                                          particle_free=particle_free, decoy=_decoy_control(outcomes),
                                          failed=failures))
    return datasets, training


def _real_results(config: BenchConfig, work_dir: Path) -> tuple[list[JudgedDataset], list[dict]]:
    datasets: list[JudgedDataset] = []
    training: list[dict] = []
    for dataset in config.real:
        paths = real_micrograph_paths(dataset)
        pairs = pairs_from_single_micrographs(paths, pixel_size_a=dataset.pixel_size_a, seed=config.training.seed)
        methods = [method for method in config.denoisers if method != "guided" or dataset.reference is not None]
        failures: dict[str, str] = {}
        models = train_models(pairs, methods, config.training, work_dir / work_dir_name(dataset.name) / "models",
                              reference=dataset.reference, decoy=dataset.decoy,
                              defocus_range_um=config.simulation.defocus_range_um, failures=failures)
        training.extend({"dataset": dataset.name, **model.record} for model in models.values())
        training.extend({"dataset": dataset.name, "name": name, "error": error} for name, error in failures.items())
        test_set = real_test_set(dataset, paths)
        functions = denoise_functions(config.denoisers, models, test_set.pixel_size_a, config.lowpass_a)
        outcomes = judge_all(test_set, functions, config.judges, config.learned, config.classes, failures)
        datasets.append(JudgedDataset(dataset.name, "real", test_set, outcomes, decoy=_decoy_control(outcomes),
                                      failed=failures))
    return datasets, training


def _summary(datasets: list[JudgedDataset], denoisers: Sequence[str]) -> dict[str, Any]:
    """Per denoiser: mean AP over the datasets by the primary judge (``summary.denoisers.NAME.ap``,
    :func:`primary_judge`) and the checks.

    With the learned judge, an ordering check holds only when the paired bootstrap interval
    of each AP difference (:func:`~cryoscore.bench.crossval.paired_difference`) lies above 0
    on every dataset; without it, on the blob picker's AP as measured."""
    judge = primary_judge(datasets)
    summary: dict[str, Any] = {"judge": judge, "denoisers": {}}
    names = [name for name in dict.fromkeys(name for record in datasets for name in record.outcomes)]
    for name in names:
        entry: dict[str, Any] = {}
        for key, source in (("ap", judge), ("blob_ap", "blob")):
            aps = [record.outcomes[name].metrics[source]["ap"] for record in datasets
                   if name in record.outcomes and source in record.outcomes[name].metrics]
            aps = [ap for ap in aps if ap is not None]
            entry[key] = float(np.mean(aps)) if aps else None
            entry.setdefault("n_datasets", len(aps))
        summary["denoisers"][name] = entry
    simulated = [record for record in datasets if record.kind == "simulated"]
    every_failure = _failures(datasets, names=None)
    checks: dict[str, Any] = {"every_denoiser_ran": {"failed": every_failure, "holds": not every_failure}}
    order = [name for name in ("guided", "score", "n2n", "lowpass", "raw") if name in denoisers]
    mean_ap = {name: summary["denoisers"][name]["ap"] for name in order if name in summary["denoisers"]}
    if len(order) > 1 and len(mean_ap) == len(order) and None not in mean_ap.values():  # an order needs two
        complete = _complete(datasets, order)
        pairs = [_ap_gap(complete, judge, first, second) for first, second in zip(order, order[1:])] if complete else []
        checks["ap_order"] = _unless_failed({"expected": " > ".join(order), "judge": judge, "pairs": pairs,
                                             "holds": bool(pairs) and all(pair["holds"] for pair in pairs)},
                                            _failures(datasets, order))
    if simulated and {"guided", "n2n"} <= set(denoisers):
        lowest = min(record.dose_e_per_a2 for record in simulated if record.dose_e_per_a2 is not None)
        at_lowest = [record for record in simulated if record.dose_e_per_a2 == lowest]
        complete = _complete(at_lowest, ("guided", "n2n"))
        gap = _ap_gap(complete, judge, "guided", "n2n", minimum=0.05) if complete else {"holds": False}
        checks["guided_minus_n2n_ap_at_lowest_dose"] = _unless_failed(
            {"dose_e_per_a2": lowest, "judge": judge, **gap}, _failures(at_lowest, ("guided", "n2n")))
    reconstructions = {name: [(record.label, record.outcomes[name].metrics.get("reconstruction"))
                              for record in simulated if name in record.outcomes]
                       for name in ("guided", "n2n") if name in denoisers}
    judged = [(dataset, name, result) for name, results in reconstructions.items() for dataset, result in results
              if result is not None]
    if len(reconstructions) == 2 and judged:
        failed = [f"{dataset}, {name}: {result.get('error', 'no half-map resolution')}" for dataset, name, result
                  in judged if result.get("resolution_half_maps_a") is None] + _failures(simulated, ("guided", "n2n"))
        if failed:  # a judge that failed fails its check, visibly
            checks["reconstruction_guided_vs_n2n"] = {"failed": failed, "holds": False}
        else:
            mean = {name: float(np.mean([result["resolution_half_maps_a"] for _, judged_name, result in judged
                                         if judged_name == name])) for name in reconstructions}
            checks["reconstruction_guided_vs_n2n"] = {"guided_half_map_a": mean["guided"],
                                                      "n2n_half_map_a": mean["n2n"],
                                                      "holds": mean["guided"] <= mean["n2n"]}
    background = _background_ratios(simulated, "guided", "n2n")
    if background:
        checks["guided_background_vs_n2n"] = _unless_failed(
            {"ratios": background, "bound": BACKGROUND_RATIO_BOUND, "holds": max(background) <= BACKGROUND_RATIO_BOUND},
            _failures(simulated, ("guided", "n2n")))
    controls = [record.particle_free["pass"] for record in simulated
                if record.particle_free is not None and "pass" in record.particle_free]
    if controls:
        checks["particle_free_control"] = {"passed": sum(controls), "of": len(controls), "holds": all(controls)}
    decoys = [record.decoy["pass"] for record in datasets if record.decoy]
    if decoys:
        checks["decoy_control"] = {"passed": sum(decoys), "of": len(decoys), "holds": all(decoys)}
    checks.update(_raw_checks(datasets, judge))
    summary["checks"] = checks
    return summary


EASY_RAW_AP = 0.95
"""A dataset whose raw micrographs the primary judge picks with an AP above this is an easy one."""

NO_HARM_MARGIN = 0.01
"""On an easy dataset no denoiser may lose more than this much AP against raw (issue 12's no-harm check)."""


def _raw_checks(datasets: list[JudgedDataset], judge: str) -> dict[str, Any]:
    """The checks against the raw micrographs, each only where the denoisers it needs were judged:
    ``no_harm_where_raw_is_easy`` (on every dataset where raw's AP is above :data:`EASY_RAW_AP`, every
    denoiser's AP at least raw's minus :data:`NO_HARM_MARGIN`) and ``default_not_below_raw`` (on every
    dataset, the shipped model's AP at least raw's). Each holds on the measured AP differences; the
    learned judge's paired intervals are reported beside them."""
    judged = [record for record in datasets if "raw" in record.outcomes]
    checks: dict[str, Any] = {}
    easy = [record for record in judged if (record.outcomes["raw"].metrics[judge]["ap"] or 0.0) > EASY_RAW_AP]
    others = [name for name in dict.fromkeys(name for record in easy for name in record.outcomes) if name != "raw"
              and all(name in record.outcomes for record in easy)]
    if others:
        checks["no_harm_where_raw_is_easy"] = _unless_failed(_not_below_raw(easy, judge, others, NO_HARM_MARGIN),
                                                             _failures(easy, names=None))
    with_default = [record for record in judged if "default" in record.outcomes]
    if with_default:
        checks["default_not_below_raw"] = _unless_failed(_not_below_raw(with_default, judge, ["default"], 0.0),
                                                         _failures(judged, ("default",)))
    return checks


def _failures(datasets: list[JudgedDataset], names: Sequence[str] | None) -> list[str]:
    """``"DATASET: NAME: error"`` for each denoiser of ``names`` (None: any) that failed on one of ``datasets``."""
    return [f"{record.label}: {name}: {error}" for record in datasets for name, error in record.failed.items()
            if names is None or name in names]


def _complete(datasets: list[JudgedDataset], names: Sequence[str]) -> list[JudgedDataset]:
    """The ``datasets`` on which every one of ``names`` was judged."""
    return [record for record in datasets if all(name in record.outcomes for name in names)]


def _unless_failed(check: dict[str, Any], failed: list[str]) -> dict[str, Any]:
    """``check`` as it is, or, when a denoiser it compares failed (``failed``, from :func:`_failures`), with
    those failures and ``holds`` False: a check that could not see all its denoisers does not hold."""
    return {**check, "failed": failed, "holds": False} if failed else check


def _not_below_raw(datasets: list[JudgedDataset], judge: str, names: list[str], margin: float) -> dict[str, Any]:
    """Whether each of ``names`` has an AP at least raw's minus ``margin`` on every one of ``datasets``."""
    pairs = []
    for name in names:
        differences, intervals = _ap_differences(datasets, judge, name, "raw")
        pair: dict[str, Any] = {"pair": f"{name} - raw", "differences": differences}
        if judge == "learned":
            pair["ci"] = intervals
        pair["holds"] = bool(min(differences) >= -margin)
        pairs.append(pair)
    return {"datasets": ", ".join(record.label for record in datasets), "margin": margin, "pairs": pairs,
            "holds": all(pair["holds"] for pair in pairs)}


BACKGROUND_RATIO_BOUND = 0.25
"""The guided method's background check: on every simulated dataset, guided's output keeps at most
this fraction of n2n's low-frequency power in particle-free areas (issue 12's bound)."""


def _background_ratios(simulated: list[JudgedDataset], first: str, second: str) -> list[float]:
    """Per simulated dataset judged by pixels, ``first``'s background power over ``second``'s
    (:class:`~cryoscore.metrics.pixel.PixelMetrics`); empty when either was not judged."""
    ratios = []
    for record in simulated:
        outcomes = record.outcomes
        if first in outcomes and second in outcomes and "pixel" in outcomes[first].metrics \
                and "pixel" in outcomes[second].metrics:
            ratios.append(outcomes[first].metrics["pixel"]["background_power"]
                          / outcomes[second].metrics["pixel"]["background_power"])
    return ratios


def primary_judge(datasets: list[JudgedDataset]) -> str:
    """``"learned"`` when every denoiser of every dataset was judged by the learned picker, else ``"blob"``."""
    return _judge_of([outcome for record in datasets for outcome in record.outcomes.values()])


def _judge_of(outcomes: Sequence[DenoiserOutcome]) -> str:
    """``"learned"`` when every one of ``outcomes`` (at least one) was judged by the learned picker, else ``"blob"``."""
    return "learned" if outcomes and all("learned" in outcome.metrics for outcome in outcomes) else "blob"


def _ap_differences(datasets: list[JudgedDataset], judge: str, first: str,
                    second: str) -> tuple[list[float], list[list[float] | None]]:
    """``first``'s AP minus ``second``'s on each dataset, and with the learned judge each difference's
    paired bootstrap interval over micrographs and seeds (else no intervals)."""
    differences: list[float] = []
    intervals: list[list[float] | None] = []
    for record in datasets:
        outcomes = record.outcomes
        if judge == "learned":
            first_results, second_results = outcomes[first].learned_results, outcomes[second].learned_results
            assert first_results is not None and second_results is not None, "primary_judge saw the learned judge run"
            paired = paired_difference(first_results, second_results, "ap",
                                       n_boot=outcomes[first].metrics["learned"]["bootstrap"],
                                       confidence=outcomes[first].metrics["learned"]["confidence"])
            differences.append(paired["difference"])
            intervals.append(paired["ci"])
        else:
            differences.append(outcomes[first].metrics[judge]["ap"] - outcomes[second].metrics[judge]["ap"])
    return differences, intervals


def _ap_gap(datasets: list[JudgedDataset], judge: str, first: str, second: str, minimum: float = 0.0) -> dict[str, Any]:
    """``first``'s AP minus ``second``'s on each dataset, and whether it is above ``minimum`` on average and,
    with the learned judge, above 0 with 95 % confidence (paired bootstrap) on every dataset."""
    differences, intervals = _ap_differences(datasets, judge, first, second)
    mean = float(np.mean(differences))
    holds = mean >= minimum and (judge != "learned" or all(ci is not None and ci[0] > 0 for ci in intervals))
    gap: dict[str, Any] = {"pair": f"{first} > {second}", "mean": mean, "differences": differences}
    if judge == "learned":
        gap["ci"] = intervals
    gap["holds"] = bool(holds)
    return gap


def metrics_document(config: dict[str, Any], denoisers: Sequence[str], datasets: list[JudgedDataset], training: list[dict],
                     seconds: float, command_line: Sequence[str]) -> dict[str, Any]:
    """Every number of the run as one JSON-ready dict (the content of metrics.json).

    ``config`` records what was run (a benchmark's ``BenchConfig.to_dict()``), ``denoisers``
    the names the summary's checks compare, ``datasets`` one record per judged test set.
    """
    return json_ready({
        "cryoscore_bench": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(command_line),
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "config": config,
        "seconds": seconds,
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
                "failed": record.failed,
                **{key: value for key, value in (("dose_e_per_a2", record.dose_e_per_a2),
                                                 ("particle_free", record.particle_free), ("decoy", record.decoy))
                   if value is not None},
            }
            for record in datasets
        },
        "denoisers_left_out": [name for name in denoisers
                               if not any(name in record.outcomes for record in datasets)],
        "summary": _summary(datasets, denoisers),
    })


def run_bench(config: BenchConfig, output_dir: Path, *, command_line: Sequence[str] = ("cryoscore", "bench")) -> dict:
    """Run the benchmark ``config`` into ``output_dir``; returns the metrics document.

    Writes ``metrics.json``, ``report.html`` and ``summary.md`` (atomically) and keeps the
    datasets and models under ``output_dir/work``.
    """
    started = time.perf_counter()
    work_dir = output_dir / "work"
    simulated, simulated_training = _simulated_results(config, work_dir)
    real, real_training = _real_results(config, work_dir)
    datasets = simulated + real
    document = metrics_document(config.to_dict(), config.denoisers, datasets, simulated_training + real_training,
                                time.perf_counter() - started, command_line)
    write_json(output_dir / "metrics.json", document)
    write_reports(output_dir, document, datasets)
    return document
