"""Issue 14, reliability and the first run: bad inputs and outputs end in one clear line and exit
code 2, one bad micrograph never stops a batch, progress shows where there is no terminal."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from cryoscore.cli import main
from cryoscore.io.mrc import read_mrc, write_mrc

PIXEL_A = 3.0


@pytest.fixture(scope="module")
def bad_micrographs(tmp_path_factory) -> dict[str, Path]:
    """A good 128 x 128 noise micrograph and three that no denoiser can use."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    images = {
        "good": rng.normal(size=(128, 128)),
        "row": rng.normal(size=(1, 300)),  # 1 x N
        "blank": np.ones((128, 128)),  # constant: no noise to measure
        "upsampled": np.kron(rng.normal(size=(32, 32)), np.ones((4, 4))),  # 2 x 2 blocks constant, binned too
    }
    paths = {}
    for name, image in images.items():
        paths[name] = root / f"{name}.mrc"
        write_mrc(paths[name], image.astype(np.float32), PIXEL_A)
    return paths


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- output paths


@pytest.fixture()
def a_file(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("precious\n")
    return path


def _output_commands(good: Path, output: Path) -> dict[str, list[str]]:
    return {
        "denoise": ["denoise", str(good), "-o", str(output), "--lowpass", "20"],
        "pick": ["pick", str(good), "-o", str(output), "--diameter", "60"],
        "simulate": ["simulate", "-o", str(output), "--size", "64", "--micrographs", "1", "--particles", "1",
                     "--frames", "2", "--pixel-size", "4"],
        "demo": ["demo", "-o", str(output)],
        "bench": ["bench", "--quick", "-o", str(output)],
        "reconstruct": ["reconstruct", str(good.parent), "-o", str(output)],
    }


@pytest.mark.parametrize("below", [False, True], ids=["-o afile", "-o afile/sub"])
@pytest.mark.parametrize("command", ["denoise", "pick", "simulate", "demo", "bench", "reconstruct"])
def test_an_output_path_that_cannot_be_a_directory_is_refused_before_any_work(
        bad_micrographs, a_file, command, below, capsys):
    output = a_file / "sub" if below else a_file
    before = sorted(os.listdir(a_file.parent))
    assert main(_output_commands(bad_micrographs["good"], output)[command]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(output) in lines[0], lines
    assert ("not a directory" in lines[0]) and "Traceback" not in lines[0]
    assert sorted(os.listdir(a_file.parent)) == before and a_file.read_text() == "precious\n"


def test_train_and_score_refuse_an_output_file_below_a_file(bad_micrographs, a_file, capsys):
    assert main(["train", "--micrographs", str(bad_micrographs["good"].parent), "--method", "n2n",
                 "-o", str(a_file / "model.pt"), "--steps", "1"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    picks = a_file.parent / "picks"
    assert main(["pick", str(bad_micrographs["good"]), "-o", str(picks), "--diameter", "60"]) == 0
    capsys.readouterr()
    assert main(["score", str(picks), str(picks), "--pixel-size", "3", "--diameter", "60",
                 "--json", str(a_file / "s.json")]) == 2
    assert "is not a directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad micrographs in a batch


@pytest.mark.parametrize("options", [[], ["--bin", "2"]], ids=["plain", "bin 2"])
def test_bad_micrographs_are_reported_and_the_batch_goes_on(bad_micrographs, tmp_path, options, capsys):
    inputs = [str(bad_micrographs[name]) for name in ("row", "good", "blank", "upsampled")]
    assert main(["denoise", *inputs, "-o", str(tmp_path), "--threads", "1", *options]) == 2
    captured = capsys.readouterr()
    failures = [line for line in captured.err.splitlines() if "failed:" in line]
    assert len(failures) == 3 and "Traceback" not in captured.err
    binned = " after --bin 2" if options else ""
    rows = "0 x 150" if options else "1 x 300"
    assert f"{bad_micrographs['row']}: the image is {rows} pixels{binned}; need at least 2 x 2" in failures[0]
    assert f"{bad_micrographs['blank']}: every pixel is 1{binned}: a blank image" in failures[1]
    assert f"{bad_micrographs['upsampled']}: no pixel-to-pixel noise" in failures[2]
    assert "denoised 1, skipped 0 (already done), failed 3" in captured.out
    assert sorted(os.listdir(tmp_path)) == ["denoise.json", "good.mrc"]  # the good output and the run record
    entries = json.loads((tmp_path / "denoise.json").read_text())["micrographs"]
    assert [entry["status"] for entry in entries] == ["failed", "ok", "failed", "failed"]


@pytest.mark.slow
def test_bad_micrographs_on_two_workers_are_reported_too(bad_micrographs, tmp_path, capsys):
    inputs = [str(bad_micrographs[name]) for name in ("row", "good", "blank")]
    assert main(["denoise", *inputs, "-o", str(tmp_path), "--workers", "2", "--bin", "2"]) == 2
    captured = capsys.readouterr()
    assert "denoised 1, skipped 0 (already done), failed 2" in captured.out
    assert "Traceback" not in captured.err and sorted(os.listdir(tmp_path)) == ["denoise.json", "good.mrc"]


def test_pick_goes_on_after_a_bad_micrograph_and_exits_2(bad_micrographs, tmp_path, capsys):
    missing = tmp_path / "missing.mrc"
    inputs = [str(bad_micrographs["row"]), str(bad_micrographs["good"]), str(missing)]
    assert main(["pick", *inputs, "-o", str(tmp_path / "picks"), "--diameter", "120", "--threads", "1"]) == 2
    captured = capsys.readouterr()
    failures = [line for line in captured.err.splitlines() if "failed:" in line]
    assert len(failures) == 2 and "Traceback" not in captured.err
    assert f"{bad_micrographs['row']}: the image is 1 x 300 pixels" in failures[0] and "40 x 40" in failures[0]
    assert f"{missing}: cannot open the file" in failures[1]
    assert "picked 1, skipped 0 (already done), failed 2" in captured.out
    assert sorted(os.listdir(tmp_path / "picks")) == ["good.star", "pick.json"]
    entries = json.loads((tmp_path / "picks" / "pick.json").read_text())["micrographs"]
    assert [entry.get("status", "ok") for entry in entries] == ["failed", "ok", "failed"]
    assert entries[1]["pixel_size_a"] == PIXEL_A and "cannot open" in entries[2]["error"]


def test_peak_finding_on_a_map_too_small_for_a_peak_finds_none():
    from cryoscore.pick.peaks import find_peaks

    for shape in [(0, 10), (1, 300), (2, 2)]:
        assert len(find_peaks(np.ones(shape), 1, shape, 1.0)) == 0


def test_a_worker_that_died_is_a_failed_micrograph_in_pick_json(bad_micrographs, tmp_path, monkeypatch, capsys):
    """The cluster reports a dead worker's job as failed, without details (jobs._run_on_cluster)."""
    from cryoscore import jobs as job_runner

    def dead_workers(function, jobs, *args, **kwargs):
        for number, job in enumerate(jobs):
            yield number, job_runner.JobRecord(job.source.name, "failed", 0.0,
                                          f"{job.source}: the worker died (out of memory?)")

    monkeypatch.setattr(job_runner, "_run_on_cluster", dead_workers)
    assert main(["pick", str(bad_micrographs["good"]), "-o", str(tmp_path), "--diameter", "60", "--workers", "2"]) == 2
    assert "the worker died" in capsys.readouterr().err
    (entry,) = json.loads((tmp_path / "pick.json").read_text())["micrographs"]
    assert entry["status"] == "failed" and "the worker died" in entry["error"]


# ----------------------------------------------------------------------------- pick, then score


def test_score_reads_the_pixel_size_pick_writes_for_real_micrographs(apoferritin_dir, tmp_path, capsys):
    micrographs = sorted((apoferritin_dir / "micrographs").glob("*.mrc"))[:2]
    picks = tmp_path / "picks"
    assert main(["pick", *map(str, micrographs), "-o", str(picks), "--diameter", "120", "--threads", "1"]) == 0
    capsys.readouterr()
    coordinates = tmp_path / "truth"
    coordinates.mkdir()
    for micrograph in micrographs:  # a truth folder that is not a dataset's coordinates/: no manifest
        name = f"{micrograph.stem}.star"
        (coordinates / name).write_bytes((apoferritin_dir / "coordinates" / name).read_bytes())
    assert main(["score", str(picks), str(coordinates), "--json", str(tmp_path / "score.json")]) == 0
    assert "pooled" in capsys.readouterr().out
    score = json.loads((tmp_path / "score.json").read_text())
    header_a = read_mrc(micrographs[0])[1]
    assert set(score["micrographs"]) == {path.stem for path in micrographs}
    assert all(entry["pixel_size_a"] == pytest.approx(header_a) for entry in score["micrographs"].values())
    assert all(entry["diameter_a"] == 120.0 for entry in score["micrographs"].values())


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_writes_read_the_umask_without_changing_it(tmp_path, monkeypatch):
    """Changing the umask, even briefly, races with threads creating files (read-ahead, Dask)."""
    from cryoscore.io import atomic

    umask = os.umask(0o027)
    os.umask(umask)

    def no_umask_changes(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(atomic.os, "umask", no_umask_changes)
    monkeypatch.setattr(atomic, "_umask_from_proc", lambda: 0o027)
    with atomic.atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("a")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    monkeypatch.undo()
    assert atomic._umask_from_proc() in (umask, None)  # Linux >= 4.7 reports it; elsewhere None


# ----------------------------------------------------------------------------- options and values


def test_tiles_smaller_than_the_halo_are_refused_before_any_work(bad_micrographs, tmp_path, capsys):
    from cryoscore.infer.batch import minimum_tile_px
    from cryoscore.infer.denoise import load_denoiser

    net = load_denoiser().model.net
    halo, smallest = net.receptive_field_px, minimum_tile_px(net.receptive_field_px, net.required_multiple)
    assert main(["denoise", str(bad_micrographs["good"]), "-o", str(tmp_path / "out"), "--tile", "10"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"cryoscore denoise: error: --tile: 10 px tiles each need {halo} px")
    assert f"--tile {smallest} or more" in lines[0] and not (tmp_path / "out").exists()
    assert main(["denoise", str(bad_micrographs["good"]), "-o", str(tmp_path / "out"), "--tile", str(smallest)]) == 0


def test_a_pickled_model_file_is_not_a_cryoscore_model_and_no_unsafe_advice_is_given(bad_micrographs, tmp_path,
                                                                                     capsys):
    import argparse

    import torch

    model = tmp_path / "model.pt"
    torch.save({"format": "cryoscore-model", "config": argparse.Namespace(depth=3)}, model)
    assert main(["denoise", str(bad_micrographs["good"]), "-o", str(tmp_path / "out"), "--model", str(model)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"{model}: not a cryoscore model file" in lines[0], lines
    assert "weights_only" not in lines[0] and "trust" not in lines[0]


def test_huge_values_are_refused_in_a_batch_and_written_with_finite_header_statistics(bad_micrographs, tmp_path,
                                                                                      capsys):
    import warnings

    import mrcfile

    image = np.random.default_rng(1).normal(size=(64, 96)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning
        write_mrc(tmp_path / "huge.mrc", image * np.float32(1e37), PIXEL_A)
        with mrcfile.open(tmp_path / "huge.mrc") as mrc:
            rms, mean = float(mrc.header.rms), float(mrc.header.dmean)
        assert rms == pytest.approx(float(np.std(image.astype(np.float64))) * 1e37, rel=1e-5)
        assert mean == pytest.approx(float(np.mean(image.astype(np.float64))) * 1e37, rel=1e-4)
        huge = str(tmp_path / "huge.mrc")
        assert main(["denoise", huge, str(bad_micrographs["good"]), "-o", str(tmp_path / "out")]) == 2
        assert main(["pick", huge, str(bad_micrographs["good"]), "-o", str(tmp_path / "picks"),
                     "--diameter", "60"]) == 2
    failures = [line for line in capsys.readouterr().err.splitlines() if "failed:" in line]
    assert len(failures) == 2
    reach = f"{float(np.abs(image).max()) * 1e37:.3g}"
    assert all(f"{huge}: pixel values reach {reach}, more than 1e+30" in line for line in failures), failures


def test_simulate_scales_the_default_particle_count_with_the_area(tmp_path):
    from cryoscore.io.coords import read_coordinates
    from cryoscore.simulate.dataset import default_particle_count

    assert [default_particle_count(size) for size in (64, 512, 1024, 4096)] == [1, 10, 40, 640]
    assert main(["simulate", "-o", str(tmp_path / "sim"), "--size", "512", "--micrographs", "1", "--frames", "2"]) == 0
    assert len(read_coordinates(tmp_path / "sim" / "coordinates" / "mic_0000.star")) == 10


# ----------------------------------------------------------------------------- progress without a terminal


def test_train_prints_progress_lines_when_stderr_is_not_a_terminal(bad_micrographs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CRYOSCORE_PROGRESS_INTERVAL_S", "0")  # a line after every step
    assert main(["train", "--micrographs", str(tmp_path / "in"), "--method", "n2n", "-o", str(tmp_path / "m.pt"),
                 "--steps", "3", "--crop", "32", "--batch-size", "2"]) == 2  # no .mrc files yet
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.mrc").write_bytes(bad_micrographs["good"].read_bytes())
    capsys.readouterr()
    assert main(["train", "--micrographs", str(tmp_path / "in"), "--method", "n2n", "-o", str(tmp_path / "m.pt"),
                 "--steps", "3", "--crop", "32", "--batch-size", "2"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train n2n:")]
    assert [line.split(",")[0] for line in lines] == ["train n2n: 1/3 step (33%)", "train n2n: 2/3 step (67%)",
                                                      "train n2n: 3/3 step (100%)"]
    assert all("loss=" in line and " left" in line and ("step/s" in line or "s/step" in line) for line in lines)


def test_denoise_and_pick_print_micrographs_done_when_stderr_is_not_a_terminal(bad_micrographs, tmp_path,
                                                                               monkeypatch, capsys):
    monkeypatch.setenv("CRYOSCORE_PROGRESS_INTERVAL_S", "0")
    inputs = [str(bad_micrographs["good"]), str(bad_micrographs["blank"])]
    assert main(["denoise", *inputs, "-o", str(tmp_path / "d"), "--lowpass", "20"]) == 0
    assert main(["pick", *inputs, "-o", str(tmp_path / "p"), "--diameter", "60"]) == 0
    err = capsys.readouterr().err
    assert "denoise: 1/2 mic (50%)" in err and "denoise: 2/2 mic (100%)" in err
    assert "pick: 1/2 mic (50%)" in err and "pick: 2/2 mic (100%)" in err and "\r" not in err


def test_progress_lines_come_at_the_interval_and_end_with_the_total():
    import io

    from cryoscore.progress import LogProgress

    out = io.StringIO()
    assert list(LogProgress(range(5), total=5, desc="x", unit="it", interval_s=3600, file=out)) == list(range(5))
    assert out.getvalue() == ""  # a quick loop says nothing
    bar = LogProgress(range(2, 4), total=4, desc="x", unit="it", interval_s=0, file=out, initial=2)
    for _ in bar:
        bar.set_postfix(loss="0.5")
    assert [line.split(", ")[0] for line in out.getvalue().splitlines()] == ["x: 3/4 it (75%)", "x: 4/4 it (100%)"]
    assert "loss=0.5" in out.getvalue()


def test_demo_says_what_stage_it_is_in(tmp_path, monkeypatch, capsys):
    from cryoscore import demo

    def quick_demo(output_dir, *, seed=0, stage=None):
        stage("simulating")
        return "done"

    monkeypatch.setattr(demo, "run_demo", quick_demo)
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    assert "cryoscore demo: simulating ..." in capsys.readouterr().err


# ----------------------------------------------------------------------------- bench config paths


def test_bench_config_paths_are_relative_to_the_file_and_work_dirs_stay_inside(tmp_path):
    from cryoscore.bench.config import load_bench_config, work_dir_name
    from cryoscore.errors import InputError

    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "bench.toml"
    path.write_text(
        '[[simulated]]\nspecimen = "maps/ribosome.mrc"\ndecoy = "apoferritin"\n'
        '[[simulated]]\nspecimen = "/data/models/3j5p.pdb"\ndecoy = "../decoy.pdb"\n'
        '[[real]]\nname = "r"\nmicrographs = "mics"\ncoordinates = "coords"\npixel_size_a = 2.0\n'
        'diameter_a = 100.0\nreference = "ref.mrc"\n'
    )
    config = load_bench_config(path)
    assert [(s.specimen, s.decoy) for s in config.simulated] == [
        (str(folder / "maps" / "ribosome.mrc"), "apoferritin"), ("/data/models/3j5p.pdb", str(folder / "../decoy.pdb"))]
    assert config.real[0].reference == str(folder / "ref.mrc")
    assert [work_dir_name(s.specimen) for s in config.simulated] == ["ribosome", "3j5p"]
    for label in ("..", "/", "../../etc", "/tmp/../..", "a b/c?.mrc", ".hidden"):
        name = work_dir_name(label)
        assert name and "/" not in name and name not in (".", "..") and not name.startswith("."), (label, name)
    for name in ("../escape", "/abs", "a/b", ""):
        path.write_text(f'[[real]]\nname = "{name}"\nmicrographs = "m"\ncoordinates = "c"\n'
                        "pixel_size_a = 2.0\ndiameter_a = 100.0\n")
        with pytest.raises(InputError, match="plain directory name"):
            load_bench_config(path)
    path.write_text('[[simulated]]\nspecimen = "a/x.mrc"\n[[simulated]]\nspecimen = "b/x.pdb"\n')
    with pytest.raises(InputError, match="share the work directory 'x'"):
        load_bench_config(path)


# ----------------------------------------------------------------------------- report figures


def _document(command: str) -> dict:
    return {"command_line": ["cryoscore", command, "-o", "x"], "created": "now", "seconds": 1.0,
            "versions": {"cryoscore": "0", "torch": "0"}, "machine": {"torch_threads": 1},
            "summary": {"denoisers": {"raw": {"ap": 0.5, "n_datasets": 1}},
                        "checks": {"ap_order": {"holds": False, "expected": "guided > raw"}}}}


def test_the_report_is_titled_by_its_command_and_expectations_do_not_read_as_failures():
    from cryoscore.bench.report import headline_markdown

    demo, bench = headline_markdown(_document("demo")), headline_markdown(_document("bench"))
    assert demo.startswith("# cryoscore demo\n") and bench.startswith("# cryoscore bench\n")
    assert "## Expectations" in demo and "not a failure of the run" in demo
    assert "- ap_order: does not hold (expected guided > raw)" in demo and "DOES NOT HOLD" not in demo


def test_line_charts_keep_the_legend_off_the_curves_and_label_what_they_show():
    import re

    from cryoscore.bench.plots import line_chart_svg

    svg = line_chart_svg([("raw (AP 0.500)", [0, 0.1, 0.2], [1.0, 0.5, 0.1]), ("lowpass", [0, 0.1, 0.2], [1, 0.5, 0.1])],
                         title="t", x_label="x", y_label="y", hlines=((0.143, "0.143"),),
                         x_tick_note=lambda f: f"({1 / f:.3g} A)" if f else "")
    plot = re.search(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)
    plot_right = float(plot.group(1)) + float(plot.group(2))
    legend = re.findall(r'<text x="([\d.]+)" y="[\d.]+" fill="#[0-9a-f]+">(raw \(AP 0.500\)|lowpass)</text>', svg)
    assert len(legend) == 2 and all(float(x) > plot_right for x, _ in legend)  # legend right of the plot
    assert 'stroke-width="4"' in svg and 'stroke-dasharray="6 3"' not in svg.split("<polyline")[1]  # raw: wide
    assert ">0.143</text>" in svg and "(10 A)" in svg and "(5 A)" in svg
    last_tick = max(float(x) for x in re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="middle">0.2</text>', svg))
    assert last_tick + 12 <= float(re.search(r'width="(\d+)"', svg).group(1))  # the last tick label is not cut
    log = line_chart_svg([("a", [1, 2, 3], [1e6, 1e2, 1e-10])], title="t", x_label="x", y_label="y", log_y=True,
                         y_range=(1.0, 1e6))
    assert log.split("<polyline points=\"")[1].split('"')[0].count(",") == 2  # the point below the floor is left out


def test_panels_have_a_scale_bar_and_the_overview_says_what_the_circles_are(tmp_path):
    import base64
    import io

    from PIL import Image

    from cryoscore.bench.plots import png_data_uri, scale_bar_nm
    from cryoscore.io.png import write_panels_png

    assert scale_bar_nm(256 * 3.0) == 10 and scale_bar_nm(4096 * 1.0) == 100
    image = np.zeros((256, 256))
    image[0, 0] = 1.0
    picture = Image.open(io.BytesIO(base64.b64decode(png_data_uri(image, bar_px=100).split(",")[1])))
    bottom = np.asarray(picture)[int(0.9 * picture.height):, : picture.width // 2]
    assert (bottom == 255).sum() >= 100 * 0.5  # a white bar on the dark image
    write_panels_png(tmp_path / "a.png", [("x", image)])
    write_panels_png(tmp_path / "b.png", [("x", image)], caption="circles: the true particle positions")
    with Image.open(tmp_path / "a.png") as plain, Image.open(tmp_path / "b.png") as captioned:
        assert captioned.height > plain.height and (np.asarray(captioned)[plain.height:] < 128).any()
