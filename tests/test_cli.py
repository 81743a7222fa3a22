"""The command line: help with examples, the simulate contract, demo, and one-line errors."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from cryoscore.cli import main

TINY = ["--size", "128", "--pixel-size", "4", "--particles", "3", "--micrographs", "1", "--frames", "4"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """``cryoscore ARGS`` in this process: its exit code and what it wrote to stderr."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    return code, capsys.readouterr().err


def test_bench_shows_its_progress_without_verbose(tmp_path, monkeypatch, caplog):
    """A benchmark runs for hours: the progress its stages log at INFO reaches the user without -v."""
    import cryoscore.bench.report
    import cryoscore.bench.run

    def run_bench(config, output_dir, command_line, resume):
        assert resume is False
        logging.getLogger("cryoscore.bench.judges").info("apoferritin 20 e/A^2 / raw: learned AP 0.646 (786 s)")
        logging.getLogger("cryoscore.infer").info("not the benchmark's progress")
        return {}

    monkeypatch.setattr(cryoscore.bench.run, "run_bench", run_bench)
    monkeypatch.setattr(cryoscore.bench.report, "headline_markdown", lambda document: "")
    try:
        assert main(["bench", "--quick", "-o", str(tmp_path / "bench")]) == 0
    finally:
        logging.getLogger("cryoscore.bench").setLevel(logging.NOTSET)
    assert caplog.messages == ["apoferritin 20 e/A^2 / raw: learned AP 0.646 (786 s)"]


def test_python_m_cryoscore_cli_is_the_cryoscore_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cryoscore.cli", "simulate", "-o", str(tmp_path / "sim"), *TINY,
                             "--frames", "1"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("cryoscore simulate: error:")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [[], ["simulate"], ["demo"], ["pick"], ["score"], ["reconstruct"], ["bench"]])
def test_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_simulate_writes_the_contracted_layout(tmp_path):
    out = tmp_path / "sim"
    assert main(["simulate", "-o", str(out), *TINY, "--seed", "3"]) == 0
    names = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert "reference.mrc" in names and "manifest.json" in names
    for word in ("even", "odd", "clean", "background"):
        assert any(word in name and name.endswith(".mrc") for name in names), word
    full_sums = [name for name in names if name.startswith("micrographs/")]
    assert full_sums and not any(w in s for s in full_sums for w in ("even", "odd", "clean", "background"))
    assert not any(".part" in name for name in names)


def test_simulate_with_a_counting_camera_and_a_shell_specimen(tmp_path):
    out = tmp_path / "sim"
    assert main(["simulate", "-o", str(out), *TINY, "--detector", "counting", "--specimen", "shell:60:30"]) == 0
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["detector"]["double_count_fraction"] == 0.1 and config["specimen"] == "shell:60:30"


def test_simulate_from_an_atomic_model(tmp_path, shared_data):
    out = tmp_path / "sim"
    model = shared_data("models", "7a4m_apoferritin_chainA.pdb")
    assert main(["simulate", "-o", str(out), *TINY, "--specimen", str(model)]) == 0
    assert (out / "reference.mrc").exists() and (out / "micrographs" / "mic_0000.mrc").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--specimen", "no-such-specimen"], "unknown specimen"),
        (["--particles", "500"], "--particles"),
        (["--frames", "1"], "--frames"),
        (["--size", "16"], "--size"),
    ],
)
def test_bad_simulate_options_give_one_line_and_exit_2(tmp_path, capsys, args, needle):
    code, stderr = run_cli(capsys, "simulate", "-o", str(tmp_path / "sim"), *TINY, *args)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in stderr


def test_a_corrupt_map_as_specimen_gives_one_line_and_exit_2(tmp_path, capsys):
    bad_map = tmp_path / "map.mrc"
    bad_map.write_text("this is not an MRC file\n" * 100)
    code, stderr = run_cli(capsys, "simulate", "-o", str(tmp_path / "sim"), *TINY, "--specimen", str(bad_map))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad_map) in lines[0] and "not an MRC file" in lines[0]
    assert not (tmp_path / "sim" / "manifest.json").exists()


def test_simulate_refuses_a_non_empty_output_directory(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    code, stderr = run_cli(capsys, "simulate", "-o", str(tmp_path), *TINY)
    assert code == 2 and "not empty" in stderr
    assert (tmp_path / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_demo_denoises_picks_scores_reconstructs_and_reports(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert summary[1].startswith("report: ") and len(summary) == 5
    with Image.open(tmp_path / "demo" / "overview.png") as picture:
        assert picture.format == "PNG" and picture.width > 3 * 300
    assert (tmp_path / "demo" / "dataset" / "manifest.json").exists()
    assert sorted(path.name for path in (tmp_path / "demo" / "denoised").iterdir()) == ["mic_0000.mrc", "mic_0001.mrc"]
    assert (tmp_path / "demo" / "report.html").read_text().startswith("<!DOCTYPE html>")
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    aps = {name: metrics["summary"]["denoisers"][name]["ap"] for name in ("raw", "lowpass", "denoised")}
    assert re.findall(r"(\w+) ([0-9.]+)", summary[2].split(":", 1)[1]) == [(name, f"{ap:.3f}")
                                                                          for name, ap in aps.items()]
    assert min(aps.values()) > 0.5  # apoferritin at 30 e/A^2 is there to be found by every variant
    correlations = {name: float(value) for name, value in re.findall(r"(\w+) ([0-9.]+)", summary[4].split(":", 1)[1])}
    assert correlations["denoised"] > correlations["raw"] + 0.3  # the shipped default model removes most of the shot noise


def test_train_from_a_dataset_and_from_single_micrographs(tmp_path, capsys):
    data = tmp_path / "sim"
    assert main(["simulate", "-o", str(data), "--size", "128", "--pixel-size", "4", "--particles", "3",
                 "--micrographs", "2", "--frames", "4"]) == 0
    assert main(["train", str(data), "--method", "score", "-o", str(tmp_path / "score.pt"),
                 "--steps", "3", "--crop", "64", "--batch-size", "2"]) == 0
    assert "trained score on 2 micrographs" in capsys.readouterr().out
    assert main(["train", "--micrographs", str(data / "micrographs"), "--method", "n2n",
                 "-o", str(tmp_path / "single.pt"), "--steps", "2", "--crop", "32", "--batch-size", "2"]) == 0
    recorded = json.loads((tmp_path / "single.json").read_text())["extra"]
    assert recorded["single_image_pairs"] is True and recorded["training_pixel_size_a"] == 4.0  # the own grid


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--method", "score", "-o", "m.pt"], "exactly one of"),
        (["--even", "e/", "--method", "score", "-o", "m.pt"], "--even and --odd go together"),
        (["nowhere/", "--method", "score", "-o", "m.model"], "must end in .pt"),
        (["nowhere/", "--method", "score", "-o", "m.pt"], "not a dataset directory"),
        (["nowhere/", "--method", "guided", "-o", "m.pt"], "needs --reference"),
        (["nowhere/", "--method", "diffusion", "-o", "m.pt"], "invalid choice"),
        # a setting out of range names the flag that set it, not the library's field
        (["nowhere/", "--method", "guided", "--reference", "apoferritin", "--lambda", "-1", "-o", "m.pt"],
         "--guidance-strength: must be >= 0"),
        (["nowhere/", "--method", "score", "--crop", "100", "-o", "m.pt"], "--crop: must be a positive multiple of"),
        pytest.param(["nowhere/", "--method", "score", "--device", "cuda", "-o", "m.pt"], "CUDA is not available",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ],
)
def test_bad_train_options_give_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    code, stderr = run_cli(capsys, "train", *args)
    assert code == 2
    assert needle in stderr.strip().splitlines()[-1] and "Traceback" not in stderr


def test_pick_then_score_on_a_simulated_dataset(tmp_path, capsys):
    data = tmp_path / "sim"
    assert main(["simulate", "-o", str(data), "--size", "384", "--pixel-size", "3", "--particles", "12",
                 "--micrographs", "2", "--frames", "4", "--dose", "60", "--seed", "4"]) == 0
    micrographs = sorted(str(path) for path in (data / "micrographs").glob("*.mrc"))
    assert main(["pick", *micrographs, "-o", str(tmp_path / "picks"), "--diameter", "120"]) == 0
    assert sorted(path.name for path in (tmp_path / "picks").iterdir()) == ["mic_0000.star", "mic_0001.star",
                                                                             "pick.json"]
    record = json.loads((tmp_path / "picks" / "pick.json").read_text())
    assert record["command_line"] == ["cryoscore", "pick", *micrographs, "-o", str(tmp_path / "picks"),
                                      "--diameter", "120"]
    assert [entry["status"] for entry in record["micrographs"]] == ["ok", "ok"] and record["torch_version"]
    capsys.readouterr()
    # Scale from pick.json; the true coordinates of the dataset are the truth.
    assert main(["score", str(tmp_path / "picks"), str(data / "coordinates"), "--json", str(tmp_path / "s.json")]) == 0
    table = capsys.readouterr().out
    assert "pooled" in table and "AP" in table
    pooled = json.loads((tmp_path / "s.json").read_text())["pooled"]
    assert pooled["n_truth"] == 24 and pooled["ap"] > 0.5  # apoferritin at a high dose is easy to pick

    # Reconstruct from the picks above the best-F1 threshold, and from the true coordinates.
    threshold = str(pooled["threshold"])
    assert main(["reconstruct", str(data), "--picks", str(tmp_path / "picks"), "--threshold", threshold,
                 "-o", str(tmp_path / "recon")]) == 0
    assert "half maps" in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "recon").iterdir()) == ["half1.mrc", "half2.mrc", "map.mrc",
                                                                             "reconstruction.json"]
    picked = json.loads((tmp_path / "recon" / "reconstruction.json").read_text())
    assert picked["inputs"]["settings"]["box_px"] == 64 and picked["inputs"]["command_line"][:2] == ["cryoscore",
                                                                                                  "reconstruct"]
    assert picked["inputs"]["threshold"] == pooled["threshold"]
    assert picked["n_picks"] == pooled["n_selected"] and picked["box_px"] == 60  # 1.5 x 120 A at 3 A/px
    assert main(["reconstruct", str(data), "-o", str(tmp_path / "recon-truth")]) == 0
    truth = json.loads((tmp_path / "recon-truth" / "reconstruction.json").read_text())
    assert truth["n_particles"] == 24 and truth["inputs"]["picks"] == "truth" and truth["inputs"]["dataset"] == str(data)
    # 24 particles at 60 e/A^2 and 3 A/px resolve better than the 25 A the reference is trusted to.
    assert truth["half_map_resolution_a"] < 25.0

    # The same micrographs as files without their manifest, as real data come: the reference,
    # diameter and symmetry are given, and without --ctf the particles are not CTF-corrected.
    assert main(["reconstruct", *micrographs, "--picks", str(data / "coordinates"), "--diameter", "120",
                 "--reference", "apoferritin", "--symmetry", "O", "-o", str(tmp_path / "recon-files")]) == 0
    files = json.loads((tmp_path / "recon-files" / "reconstruction.json").read_text())
    assert files["inputs"]["ctf"] == "none" and files["inputs"]["settings"]["symmetry"] == "O"
    assert files["inputs"]["micrographs"] == micrographs
    assert files["n_particles"] == 24 and files["truth_resolution_a"] is None
    assert files["pixel_size_a"] == truth["pixel_size_a"] and 0 < files["half_map_resolution_a"] < 60.0
    code, stderr = run_cli(capsys, "reconstruct", str(data), "--diameter", "120", "-o", str(tmp_path / "recon-wrong"))
    assert code == 2 and "--diameter is for micrographs" in stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["pick", "a.mrc", "-o", "p", "--diameter", "100", "--picker", "template"], "needs a reference"),
        (["pick", "missing.mrc", "-o", "p", "--diameter", "100"], "missing.mrc"),
        (["score", "nowhere", "."], "not a directory"),
        (["reconstruct", "nowhere", "-o", "r"], "not a dataset directory (no manifest.json): micrographs need --picks"),
        (["reconstruct", "a.mrc", "--picks", ".", "-o", "r"], "micrographs need --diameter, --reference"),
        (["reconstruct", "a.mrc", "-o", "r", "--symmetry", "I"], "--symmetry: must be Cn, Dn or O"),
        (["reconstruct", "a.mrc", "--picks", ".", "--diameter", "100", "--reference", "apoferritin", "-o", "r"],
         "a.mrc: micrograph not found"),
        (["reconstruct", ".", "--picks", "nowhere", "-o", "r"], "picks directory not found"),
        (["reconstruct", "nowhere", "-o", "r", "--box", "15"], "--box: the processing box must be an even number"),
        (["reconstruct", "nowhere", "-o", "r", "--max-particles", "1"], "--max-particles: two half maps need"),
        (["bench", "--quick", "cfg.toml", "-o", "b"], "not both"),
        (["bench", "missing.toml", "-o", "b"], "no such benchmark config file"),
        pytest.param(["bench", "--quick", "-o", "b", "--device", "cuda"], "CUDA is not available",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ],
)
def test_bad_pick_score_reconstruct_bench_options_give_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args,
                                                                         needle):
    monkeypatch.chdir(tmp_path)
    code, stderr = run_cli(capsys, *args)
    assert code == 2
    assert needle in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
