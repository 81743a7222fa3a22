"""The summary of a benchmark run: mean AP per denoiser by the primary judge, and the checks.

Each check compares denoisers on the judged datasets (:class:`~cryoscore.bench.judges.JudgedDataset`)
by the primary judge's AP (the learned picker's where it judged every denoiser, else the blob
picker's): the method's expectations (AP order, guided above n2n at the lowest dose, guided's
reconstruction and background, the particle-free and decoy controls) and two against the raw
micrographs (no harm where raw is easy, the shipped model at least raw's). With the learned judge
an ordering holds only when the paired bootstrap interval of each AP difference lies above 0. A
check that needs a denoiser or a judge that failed does not hold, and lists the failures.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cryoscore.bench.crossval import paired_difference
from cryoscore.bench.judges import DenoiserOutcome, JudgedDataset


def summarise(datasets: list[JudgedDataset], denoisers: Sequence[str]) -> dict[str, Any]:
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
    denoiser's AP at least raw's minus :data:`NO_HARM_MARGIN`), ``default_not_below_raw`` (on every
    dataset, the shipped model's AP at least raw's) and ``flattened_not_below_raw`` (the same for
    its flattened output). Each holds on the measured AP differences; the
    learned judge's paired intervals are reported beside them."""
    judged = [record for record in datasets if "raw" in record.outcomes]
    checks: dict[str, Any] = {}
    easy = [record for record in judged if (record.outcomes["raw"].metrics[judge]["ap"] or 0.0) > EASY_RAW_AP]
    others = [name for name in dict.fromkeys(name for record in easy for name in record.outcomes) if name != "raw"
              and all(name in record.outcomes for record in easy)]
    if others:
        checks["no_harm_where_raw_is_easy"] = _unless_failed(_not_below_raw(easy, judge, others, NO_HARM_MARGIN),
                                                             _failures(easy, names=None))
    for name in ("default", "flattened"):
        with_name = [record for record in judged if name in record.outcomes]
        if with_name:
            checks[f"{name}_not_below_raw"] = _unless_failed(_not_below_raw(with_name, judge, [name], 0.0),
                                                             _failures(judged, (name,)))
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
    return judge_of([outcome for record in datasets for outcome in record.outcomes.values()])


def judge_of(outcomes: Sequence[DenoiserOutcome]) -> str:
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


def learned_minus_raw(record: JudgedDataset) -> dict[str, dict[str, Any]]:
    """Each denoiser's learned-picker AP minus raw's on ``record``, paired over micrographs and seeds:
    ``{name: {"ap": difference, "ci": [low, high]}}`` (the interval of the learned judge's coverage);
    empty without raw or where the learned judge did not judge every denoiser."""
    if "raw" not in record.outcomes or judge_of(list(record.outcomes.values())) != "learned":
        return {}
    against = {}
    for name in record.outcomes:
        if name != "raw":
            differences, intervals = _ap_differences([record], "learned", name, "raw")
            against[name] = {"ap": differences[0], "ci": intervals[0]}
    return against


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
