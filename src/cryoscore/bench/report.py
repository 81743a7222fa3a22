"""The benchmark's reports for people: ``report.html`` (self-contained) and ``summary.md``.

Both are written from the metrics document (``metrics.json``'s content) plus the
in-memory outcomes, which hold what JSON does not: example images and curves.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from cryoscore.bench.judges import JudgedDataset
from cryoscore.bench.plots import line_chart_svg, png_data_uri, scale_bar_nm
from cryoscore.io.atomic import atomic_path


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def with_interval(value: float | None, interval: list[float] | None, spec: str = ".3f") -> str:
    """``0.512 [0.470, 0.551]``: a value and its confidence interval, each formatted with ``spec``
    (``"+.3f"`` for a difference); ``-`` when unknown."""
    if value is None:
        return "-"
    bounds = "" if interval is None else f" [{format(interval[0], spec)}, {format(interval[1], spec)}]"
    return format(value, spec) + bounds


def _table_rows(dataset: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(denoiser, cells) rows of one dataset's summary table, cells as in :data:`TABLE_COLUMNS`."""
    rows = []
    against_raw = dataset.get("learned_ap_minus_raw", {})
    for name, metrics in dataset["denoisers"].items():
        learned = metrics.get("learned", {})
        minus_raw = against_raw.get(name, {})
        blob = metrics.get("blob", {})
        template = metrics.get("template", {})
        pixel = metrics.get("pixel", {})
        reconstruction = metrics.get("reconstruction", {})
        classes = metrics.get("classes", {})
        rows.append((name, [
            with_interval(learned.get("ap"), learned.get("ap_ci")),
            with_interval(minus_raw.get("ap"), minus_raw.get("ci"), "+.3f"),
            with_interval(learned.get("f1"), learned.get("f1_ci")),
            _number(blob.get("ap"), ".3f"), _number(blob.get("f1"), ".3f"), _number(template.get("ap"), ".3f"),
            _number(pixel.get("psnr_db"), ".2f"), _number(pixel.get("background_power"), ".3g"),
            _number(reconstruction.get("resolution_half_maps_a"), ".1f"),
            _number(reconstruction.get("resolution_vs_truth_a"), ".1f"),
            _number(classes.get("particle_like_fraction"), ".2f"), _number(classes.get("true_fraction"), ".2f"),
            _number(metrics.get("denoise_seconds_per_micrograph"), ".2f"),
        ]))
    return rows


TABLE_COLUMNS = ("learned AP [95% CI]", "minus raw, paired", "learned F1 [95% CI]", "blob AP", "blob F1", "template AP",
                 "PSNR (dB)", "bg power", "FSC 0.143 (A)", "vs truth 0.5 (A)", "2D particle-like", "2D true picks", "s / mic")


EXPECTATIONS_NOTE = ("What the methods are expected to show, tested on this run's numbers: one that does not hold "
                     "is a finding about the denoisers, not a failure of the run.")


def report_title(document: dict[str, Any]) -> str:
    """``"cryoscore demo"`` for the demo's report, ``"cryoscore bench"`` otherwise (from the command line)."""
    command = document.get("command_line") or []
    return "cryoscore demo" if len(command) > 1 and command[1] == "demo" else "cryoscore bench"


def _check_detail(key: str, value: Any) -> str:
    """One ``key value`` item of a check's line; the learned judge's pairs as ``a > b +0.012 [-0.010, 0.031]``."""
    if key == "pairs":
        return "; ".join(f"{pair['pair']} " + ", ".join(
            with_interval(difference, interval) for difference, interval in
            zip(pair["differences"], pair.get("ci", [None] * len(pair["differences"])))) for pair in value)
    if key == "ci":
        return "CI " + ", ".join("-" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]" for ci in value)
    if key == "ratios":
        return "ratios " + ", ".join(f"{ratio:.3f}" for ratio in value)
    if key == "differences":
        return "differences " + ", ".join(_number(difference, "+.3f") for difference in value)
    return f"{key} {_number(value, '.3f') if isinstance(value, float) else value}"


def _checks_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for name, check in summary["checks"].items():
        verdict = "holds" if check["holds"] else "does not hold"
        details = ", ".join(_check_detail(key, value) for key, value in check.items() if key != "holds")
        lines.append(f"{name}: {verdict} ({details})")
    return lines


def _resumed(document: dict[str, Any]) -> str:
    """What a resumed run's time leaves out: `` (resumed: N steps kept from an earlier run, ...)`` or nothing."""
    kept = len(document.get("resumed_steps", ()))
    other = ", made by other cryoscore source" if document.get("resumed_from_other_source") else ""
    return f" (resumed: {kept} steps kept from an earlier run{other}, their time not counted)" if kept else ""


def headline_markdown(document: dict[str, Any]) -> str:
    """The head of the Markdown summary: the command, the mean AP per denoiser and the checks."""
    summary = document["summary"]
    lines = [f"# {report_title(document)}", "",
             f"Command: `{' '.join(document['command_line'])}`; {document['created']}; "
             f"{document['seconds']:.0f} s{_resumed(document)}; cryoscore {document['versions']['cryoscore']}, "
             f"torch {document['versions']['torch']}, {document['machine']['torch_threads']} torch threads.", "",
             f"## Mean {summary.get('judge', 'blob')}-picker AP over datasets", "", "| denoiser | AP | datasets |",
             "|---|---|---|"]
    lines += [f"| {name} | {_number(entry['ap'], '.3f')} | {entry['n_datasets']} |"
              for name, entry in summary["denoisers"].items()]
    if summary.get("judge") == "learned":
        lines += ["", "Learned picker: trained on each denoiser's output k-fold over the test micrographs (each "
                  "judged once unseen, per seed); AP pooled over micrographs, mean over seeds, 95 % intervals by "
                  "bootstrap over micrographs and seeds; ordering checks hold only when the paired interval of the "
                  "AP difference is above 0."]
    if document.get("denoisers_left_out"):
        lines += ["", "Left out (not installed or not applicable): " + ", ".join(document["denoisers_left_out"]) + "."]
    lines += ["", "## Expectations", "", EXPECTATIONS_NOTE, ""] + [f"- {line}" for line in _checks_lines(summary)]
    return "\n".join(lines) + "\n"


def _label_budget_lines(dataset: dict[str, Any]) -> list[str]:
    """One sentence per denoiser: the learned picker's AP against the number of training micrographs per fold."""
    lines = []
    for name, metrics in dataset["denoisers"].items():
        learned = metrics.get("learned")
        if not learned or "label_budget" not in learned:
            continue
        points = [(int(budget), entry) for budget, entry in learned["label_budget"].items()]
        points.append((max(learned["train_micrographs_per_fold"]), learned))
        lines.append(f"Learned-picker AP against annotated training micrographs per fold, {name}: " + ", ".join(
            f"{budget}: {with_interval(entry['ap'], entry['ap_ci'])}" for budget, entry in sorted(points)))
    return lines


def _control_lines(dataset: dict[str, Any]) -> list[str]:
    """One sentence per bias control of a dataset (particle-free micrographs, decoy reference), and the
    learned picker's label-budget curves."""
    lines = _label_budget_lines(dataset)
    if dataset.get("failed"):
        lines.append("Failed, so not judged here: " + "; ".join(f"{name} ({error})" for name, error in dataset["failed"].items())
                     + ".")
    if any("template" in metrics for metrics in dataset["denoisers"].values()):
        lines.append(f"Template judge density: {dataset.get('template_density')} (independent of the guidance reference).")
    if dataset.get("particle_free"):
        control = dataset["particle_free"]
        entries = {name: entry for name, entry in control.items() if isinstance(entry, dict) and "error" not in entry}
        learned = all("learned_picks_per_micrograph" in entry for entry in entries.values())
        lines += ["Particle-free micrographs, blob picks per micrograph at each denoiser's best-F1 threshold: "
                  + ", ".join(f"{name} {entry['picks_per_micrograph']:.1f}" for name, entry in entries.items())
                  + ("; learned picks (each fold's picker at its best-F1 threshold): "
                     + ", ".join(f"{name} {entry['learned_picks_per_micrograph']:.1f}" for name, entry in entries.items())
                     if learned else "")
                  + "; 99th-percentile local correlation with reference projections: "
                  + ", ".join(f"{name} {entry['reference_correlation']['p99']:.3f}" for name, entry in entries.items())
                  + (f" ({'pass' if control['pass'] else 'FAIL'}: guided <= score, {control['picker']} picks)"
                     if "picker" in control else "")
                  + ("; FAILED: " + "; ".join(control["failed"]) if control.get("failed") else "")]
    if dataset.get("decoy"):
        decoy = dataset["decoy"]
        lines += [f"Decoy reference: {decoy['judge']} AP " + ", ".join(f"{name} {ap:.3f}" for name, ap in decoy["ap"].items())
                  + (" (pass: the decoy does not beat score)" if decoy["pass"]
                     else " (FAIL: guiding with the wrong map beats score, so part of the gain is bias)")]
    return lines


def markdown_summary(document: dict[str, Any]) -> str:
    """A terminal-friendly Markdown summary: :func:`headline_markdown`, then one table per dataset
    with its bias controls."""
    lines = [headline_markdown(document).rstrip("\n")]
    for label, dataset in document["datasets"].items():
        lines += ["", f"## {label}", "",
                  f"{dataset['kind']}, {dataset['n_micrographs']} micrographs, {dataset['n_particles']} particles, "
                  f"{dataset['pixel_size_a']:g} A/px, diameter {dataset['diameter_a']:g} A.", "",
                  "| denoiser | " + " | ".join(TABLE_COLUMNS) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in _table_rows(dataset)]
        lines += [line for control in _control_lines(dataset) for line in ("", control)]
    return "\n".join(lines) + "\n"


def _dataset_section(label: str, dataset: dict[str, Any], record: JudgedDataset) -> str:
    outcomes = record.outcomes
    test_set = record.test_set
    parts = [f"<h2>{html.escape(label)}</h2>",
             f"<p>{dataset['kind']}, {dataset['n_micrographs']} micrographs, {dataset['n_particles']} particles, "
             f"{dataset['pixel_size_a']:g} &Aring;/px, particle diameter {dataset['diameter_a']:g} &Aring;.</p>",
             "<table><tr><th>denoiser</th>" + "".join(f"<th>{html.escape(column)}</th>" for column in TABLE_COLUMNS)
             + "</tr>"]
    parts += ["<tr><td>" + html.escape(name) + "</td>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
              for name, cells in _table_rows(dataset)]
    parts.append("</table>")
    parts += [f"<p>{html.escape(line)}</p>" for line in _control_lines(dataset)]
    parts.append(_panels_html(test_set, outcomes))
    parts.append(_classes_html(dataset, outcomes))
    parts.append('<div class="charts">' + "".join(_charts(dataset, outcomes)) + "</div>")
    return "".join(parts)


PANEL_CROP_PX = 384
"""Edge of the full-resolution crops in the report's panels, micrograph pixels (one per screen pixel)."""


def _panels_html(test_set: Any, outcomes: dict[str, Any]) -> str:
    """The centre of the first micrograph at full resolution as each denoiser left it (and its
    noise-free truth), with a scale bar: a grid texture, a blotch or an erased particle shows."""
    first = test_set.micrographs[0]
    panels = [("raw", first.full_sum)] + [(name, outcome.example) for name, outcome in outcomes.items()
                                          if name != "raw"]
    if first.clean is not None:
        panels.append(("truth (clean particles)", first.clean))
    crop = tuple(slice(start, start + PANEL_CROP_PX)
                 for start in (max((size - PANEL_CROP_PX) // 2, 0) for size in first.full_sum.shape))
    height, width = first.full_sum[crop].shape
    bar_nm = scale_bar_nm(width * test_set.pixel_size_a)
    bar_px = bar_nm * 10 / test_set.pixel_size_a
    return (f'<p class="note">First micrograph, its centre {width} x {height} px at full resolution (one micrograph '
            f'pixel per screen pixel); scale bar {bar_nm} nm.</p><div class="panels">' + "".join(
                f'<figure><img src="{png_data_uri(image[crop], size_px=max(height, width), bar_px=bar_px)}" '
                f'alt="{html.escape(title)}"><figcaption>{html.escape(title)}</figcaption></figure>'
                for title, image in panels) + "</div>")


def _classes_html(dataset: dict[str, Any], outcomes: dict[str, Any]) -> str:
    """Each denoiser's 2D class averages (from its learned or blob picks, boxed from the raw micrographs), each
    titled with its particles and template match; empty without the class judge."""
    rows = []
    for name, outcome in outcomes.items():
        averages = outcome.extra.get("class_averages")
        if averages is None:
            continue
        judged = dataset["denoisers"][name]["classes"]
        zoom = max(1, 96 // averages.shape[-1])
        rows.append(f"<p>{html.escape(name)}: {judged['particle_like_fraction']:.0%} of "
                    f"{judged['n_particles']} picks in particle-like classes</p><div class=\"panels\">" + "".join(
                        f'<figure><img src="{png_data_uri(np.kron(average, np.ones((zoom, zoom))), size_px=128)}" '
                        f'alt="class {index + 1}"><figcaption>{count}, match {match:.2f}</figcaption></figure>'
                        for index, (average, count, match) in enumerate(
                            zip(averages, judged["counts"], judged["template_match"]))) + "</div>")
    if not rows:
        return ""
    pickers = sorted({dataset["denoisers"][name]["classes"]["picker"] for name, outcome in outcomes.items()
                      if outcome.extra.get("class_averages") is not None})
    return (f'<p class="note">2D classes of each denoiser\'s {" and ".join(pickers)} picks at their best-F1 threshold, '
            'boxed from the raw micrographs; under each average its particles and its match against the template '
            'density.</p>' + "".join(rows))


def _resolution_note(frequency_per_a: float) -> str:
    """``"(24 A)"`` under a spatial frequency tick; nothing at zero frequency."""
    return f"({1 / frequency_per_a:.3g} \u00c5)" if frequency_per_a > 0 else ""


def _charts(dataset: dict[str, Any], outcomes: dict[str, Any]) -> list[str]:
    """SVG charts of one dataset: blob-picker precision-recall (AP in the legend), half-map FSC with
    resolutions in Angstrom, and radial power spectra down to two decades below raw's noise floor."""
    charts = []
    aps = {name: metrics.get("blob", {}).get("ap") for name, metrics in dataset["denoisers"].items()}
    curves = [(f"{name} (AP {_number(aps.get(name), '.3f')})", outcome.matches.recall_curve,
               outcome.matches.precision_curve)
              for name, outcome in outcomes.items() if outcome.matches is not None]
    if curves:
        charts.append(line_chart_svg(curves, title="blob picker precision-recall", x_label="recall",
                                     y_label="precision", y_range=(0.0, 1.0)))
    fsc = [(name, outcome.reconstruction.fsc_half_maps.frequency_per_a, outcome.reconstruction.fsc_half_maps.correlation)
           for name, outcome in outcomes.items() if outcome.reconstruction is not None]
    if fsc:
        charts.append(line_chart_svg(fsc, title="half-map FSC (picks from each denoiser)",
                                     x_label="spatial frequency (1/\u00c5), resolution (\u00c5)", y_label="FSC",
                                     y_range=(-0.1, 1.0), hlines=((0.143, "0.143 (resolution threshold)"),),
                                     x_tick_note=_resolution_note))
    spectra = [(name, *outcome.spectrum) for name, outcome in outcomes.items()]
    raw_power = np.asarray(spectra[0][2], dtype=np.float64)
    raw_power = raw_power[np.isfinite(raw_power) & (raw_power > 0)]
    all_power = np.concatenate([np.asarray(power, dtype=np.float64) for _, _, power in spectra])
    all_power = all_power[np.isfinite(all_power) & (all_power > 0)]
    y_range = (float(raw_power.min()) / 100, float(all_power.max())) if raw_power.size and all_power.size else None
    charts.append(line_chart_svg(spectra, title="radial power spectrum (first micrograph)",
                                 x_label="spatial frequency (1/\u00c5), resolution (\u00c5)",
                                 y_label="power (log scale)", log_y=True, y_range=y_range,
                                 x_tick_note=_resolution_note))
    return charts


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.panels, .charts { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; } figcaption { font-size: 12px; text-align: center; }
pre { background: #f6f6f6; padding: 0.5em; }
.note { color: #555; font-size: 13px; }
"""


def html_report(document: dict[str, Any], records: list[JudgedDataset]) -> str:
    """The self-contained HTML report (inline SVG charts and PNG panels)."""
    by_label = {record.label: record for record in records}
    title = report_title(document)
    body = [f"<h1>{title}</h1><p>Command: <code>{html.escape(' '.join(document['command_line']))}</code>; "
            f"{document['created']}; {document['seconds']:.0f} s{html.escape(_resumed(document))}.</p>",
            "<h2>Summary</h2><table><tr><th>denoiser</th><th>mean blob AP</th><th>datasets</th></tr>"]
    body += [f"<tr><td>{html.escape(name)}</td><td>{_number(entry['ap'], '.3f')}</td><td>{entry['n_datasets']}</td></tr>"
             for name, entry in document["summary"]["denoisers"].items()]
    body.append(f"</table><h3>Expectations</h3><p class=\"note\">{html.escape(EXPECTATIONS_NOTE)}</p><pre>"
                + html.escape("\n".join(_checks_lines(document["summary"]))) + "</pre>")
    body += [_dataset_section(label, dataset, by_label[label]) for label, dataset in document["datasets"].items()]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def write_reports(output_dir: Path, document: dict[str, Any], records: list[JudgedDataset]) -> None:
    """Write ``report.html`` and ``summary.md`` into ``output_dir``, atomically."""
    for name, text in (("report.html", html_report(document, records)), ("summary.md", markdown_summary(document))):
        with atomic_path(output_dir / name) as tmp:
            tmp.write_text(text)
