"""cryoscore bench: config files, the report pieces, and a tiny benchmark end to end."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cryoscore.bench.config import DENOISERS, BenchConfig, SimulatedSpecimen, load_bench_config
from cryoscore.bench.plots import line_chart_svg, radial_power_spectrum
from cryoscore.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_a_config_file_reads_with_paths_relative_to_it(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(
        'denoisers = ["raw", "lowpass"]\n'
        "[training]\nsteps = 5\n"
        '[[simulated]]\nspecimen = "small"\ndoses = [10.0, 20.0]\n'
        '[[real]]\nname = "r"\nmicrographs = "mics"\ncoordinates = "coords"\npixel_size_a = 2.0\ndiameter_a = 100.0\n'
    )
    config = load_bench_config(path)
    assert config.denoisers == ("raw", "lowpass") and config.training.steps == 5
    assert config.simulated == (SimulatedSpecimen("small", doses=(10.0, 20.0)),)
    assert config.real[0].micrographs == tmp_path / "mics" and config.real[0].diameter_a == 100.0
    assert json.dumps(config.to_dict())  # JSON-ready


def test_a_config_read_through_two_spellings_of_its_path_has_the_same_absolute_paths(tmp_path, monkeypatch):
    """What ``cryoscore bench --resume`` compares: the config with absolute paths, the same whether
    its file was named from its own folder or from elsewhere; built-in names stay names."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "bench.toml").write_text(
        '[[simulated]]\nspecimen = "maps/particle.mrc"\ndecoy = "apoferritin"\n'
        '[[real]]\nname = "r"\nmicrographs = "../data/mics"\ncoordinates = "../data/coords"\npixel_size_a = 2.0\n'
        'diameter_a = 100.0\nreference = "small"\ntemplate = "shell:100:60"\n')
    monkeypatch.chdir(tmp_path)
    here = load_bench_config(Path("configs/bench.toml"))
    from_here = here.with_absolute_paths()
    monkeypatch.chdir(tmp_path / "configs")
    inside = load_bench_config(Path("bench.toml"))
    absolute = inside.with_absolute_paths()
    assert here.to_dict() != inside.to_dict()  # the paths as read name the config's folder differently
    assert from_here.to_dict() == absolute.to_dict()
    assert absolute.real[0].micrographs == tmp_path / "data" / "mics"
    assert absolute.simulated[0].specimen == str(tmp_path / "configs" / "maps" / "particle.mrc")
    assert (absolute.simulated[0].decoy, absolute.real[0].reference, absolute.real[0].template) == (
        "apoferritin", "small", "shell:100:60")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[[simulated]]\nspecimen = 'small'\ncolour = 'red'\n", "unknown key(s) in [[simulated]] #1: colour"),
        ("denoisers = ['raw', 'bm3d']\n[[simulated]]\nspecimen = 'small'\n", "unknown denoiser or judge: bm3d"),
        ("denoisers = ['lowpass']\n[[simulated]]\nspecimen = 'small'\n", "must include raw"),
        ("[training]\nsteps = 5\n", "at least one [[simulated]] or [[real]]"),
        ("[[simulated]\n", "not valid TOML"),
        ("[simulation]\nempty_micrographs = 0\n[[simulated]]\nspecimen = 'small'\n", "empty micrographs must be >= 1"),
        ("[simulation]\ncontrast_scale = 0\n[[simulated]]\nspecimen = 'small'\n", "contrast_scale must lie in (0, 1]"),
        ("[[simulated]]\nspecimen = 'apoferritin'\ntemplate = 'apoferritin'\n", "is the guidance reference"),
        ("[[real]]\nname = 'r'\nmicrographs = 'm'\ncoordinates = 'c'\npixel_size_a = 2.0\ndiameter_a = 100.0\n"
         "decoy = 'elongated'\n", "a decoy needs a reference"),
        ("[training]\ndevice = 'gpu'\n[[simulated]]\nspecimen = 'small'\n", "[training] device must be cpu or cuda"),
        ("[learned]\ndevice = 'tpu'\n[[simulated]]\nspecimen = 'small'\n", "[learned] device must be cpu or cuda"),
        ("[[simulated]]\nspecimen = 'small'\nseed_index = -1\n", "seed_index must be >= 0"),
    ],
)
def test_a_bad_config_file_is_one_clear_error(tmp_path, text, needle):
    path = tmp_path / "bench.toml"
    path.write_text(text)
    with pytest.raises(InputError) as error:
        load_bench_config(path)
    assert needle in str(error.value) and str(path) in str(error.value)


def test_a_template_density_keeps_generated_names_and_reads_paths_relative_to_the_file(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(
        '[[simulated]]\nspecimen = "apoferritin"\ntemplate = "shell:120:80"\n'
        '[[simulated]]\nspecimen = "random-compact:7"\ntemplate = "maps/other.mrc"\n'
        '[[real]]\nname = "r"\nmicrographs = "m"\ncoordinates = "c"\npixel_size_a = 2.0\ndiameter_a = 100.0\n'
        'reference = "apoferritin"\ntemplate = "shell:120:80"\ndecoy = "maps/decoy.mrc"\n')
    config = load_bench_config(path)
    assert [specimen.template for specimen in config.simulated] == ["shell:120:80", str(tmp_path / "maps/other.mrc")]
    assert config.simulated[1].specimen == "random-compact:7" and config.real[0].template == "shell:120:80"
    assert config.real[0].decoy == str(tmp_path / "maps/decoy.mrc")


def test_a_specimen_given_its_seed_index_simulates_what_it_would_in_its_place(tmp_path):
    """The default benchmark can be split over processes: the second specimen alone, given seed index 1,
    gets the micrographs it gets as the second of two, and not those of the first place."""
    from cryoscore.bench.config import SimulationSettings
    from cryoscore.bench.datasets import simulate_specimen

    path = tmp_path / "split.toml"
    path.write_text('[[simulated]]\nspecimen = "small"\ndoses = [40.0]\nseed_index = 1\n')
    settings = SimulationSettings(size_px=96, train_micrographs=1, test_micrographs=1, empty_micrographs=1)
    alone = replace(load_bench_config(path), simulation=settings)
    elongated, small = SimulatedSpecimen("elongated", doses=(40.0,)), SimulatedSpecimen("small", doses=(40.0,))
    written = {}
    for label, specimens, place in (("alone", alone.simulated, 0), ("second", (elongated, small), 1),
                                    ("first", (small, elongated), 0)):
        config = replace(alone, simulated=specimens)
        _, test_dirs, _ = simulate_specimen(config, place, tmp_path / label)
        written[label] = (test_dirs[0] / "micrographs" / "mic_0000.mrc").read_bytes()
    assert written["alone"] == written["second"] and written["alone"] != written["first"]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.toml")),
                         ids=lambda path: path.name)
def test_every_benchmark_config_in_the_repository_reads(path):
    """The configs RESULTS.md runs read as they are (a wrong key would fail only when someone reruns them)."""
    config = load_bench_config(path)
    assert "raw" in config.denoisers and (config.simulated or config.real)


def test_config_needs_a_dataset_and_raw():
    with pytest.raises(ValueError, match="at least one"):
        BenchConfig()


def test_radial_power_spectrum_finds_a_single_frequency():
    rows, cols = np.mgrid[0:128, 0:128]
    image = np.cos(2 * np.pi * cols / 8.0)  # 1/8 cycles per pixel = 1/16 per A at 2 A/px
    frequencies, power = radial_power_spectrum(image, pixel_size_a=2.0)
    assert frequencies[np.nanargmax(power)] == pytest.approx(1 / 16, abs=0.5 / 128 / 2.0 * 2)
    assert frequencies.max() < 0.25  # Nyquist at 2 A/px


def test_radial_power_spectrum_of_a_flat_spectrum_is_flat_down_to_the_first_bin():
    # an image whose every coefficient but the zero frequency has power exactly 1 (random phases)
    spectrum = np.fft.fft2(np.random.default_rng(0).normal(size=(128, 128)))
    spectrum = np.sqrt(spectrum.size) * spectrum / np.abs(spectrum)
    spectrum[0, 0] = 0
    image = np.fft.ifft2(spectrum).real
    _, power = radial_power_spectrum(image, pixel_size_a=1.0, n_bins=32)
    np.testing.assert_allclose(power, 1.0, rtol=1e-9)  # the zero frequency does not pull the first bin down


def test_line_chart_is_valid_svg_and_skips_bad_points():
    svg = line_chart_svg([("a", [0, 1, 2], [0.0, np.nan, 1.0]), ("b <c>", [0, 1], [1.0, 2.0])],
                         title="t", x_label="x", y_label="y")
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "b &lt;c&gt;" in svg
    assert svg.count("<polyline") == 2


def test_bench_runs_end_to_end_on_a_tiny_config(tmp_path, caplog):
    """Simulate, train, judge (pixels, blob picker, reconstruction), run the bias controls and
    write metrics.json, report.html and summary.md, on a config small enough for seconds; each
    step is logged as it ends (the progress ``cryoscore bench`` shows)."""
    from cryoscore.bench.config import LearnedJudgeSettings, SimulationSettings, TrainingSettings
    from cryoscore.bench.run import run_bench

    config = BenchConfig(
        simulated=(SimulatedSpecimen("apoferritin", doses=(30.0,), decoy="elongated", template="shell:120:80"),),
        denoisers=DENOISERS,
        judges=("learned", "pixel", "blob", "template", "reconstruction"),
        training=TrainingSettings(steps=4, batch_size=2, crop_px=64),
        simulation=SimulationSettings(size_px=192, train_micrographs=1, test_micrographs=3, empty_micrographs=1),
        learned=LearnedJudgeSettings(folds=3, seeds=(0, 1, 2), steps=3, batch_size=2, crop_px=32, label_budgets=(1,),
                                     bootstrap=50),
    )
    with caplog.at_level(logging.INFO, logger="cryoscore.bench"):
        run_bench(config, tmp_path)
    document = json.loads((tmp_path / "metrics.json").read_text())
    names = ("raw", "lowpass", "n2n", "score", "guided", "guided-decoy", "default", "adapted")
    progress = caplog.messages
    assert progress[0].startswith("apoferritin: simulated 1 training and 1 test sets in ")
    assert {f"trained {name} on 1 micrographs" for name in ("n2n", "score", "guided", "guided-decoy")} <= {
        message.partition(" in ")[0] for message in progress}
    for name in names:  # one line per denoiser judged, with its APs and time
        assert any(re.fullmatch(rf"apoferritin 30 e/A\^2 / {name}: learned AP [01]\.\d{{3}}, .* \(\d+ s\)", message)
                   for message in progress), name
    for name in names:
        ap = document["summary"]["denoisers"][name]["ap"]
        assert 0.0 <= ap <= 1.0
    assert document["denoisers_left_out"] == ([] if shutil.which("topaz") else ["topaz"])
    dataset = document["datasets"]["apoferritin 30 e/A^2"]
    assert dataset["n_particles"] > 0 and dataset["template_density"] == "shell:120:80"
    assert document["summary"]["judge"] == "learned"
    for name in names:
        metrics = dataset["denoisers"][name]
        assert metrics["blob"]["n_truth"] == dataset["n_particles"]
        learned = metrics["learned"]  # 3 micrographs, 3 folds of 1, each picker trained on the other 2
        assert learned["folds"] == 3 and learned["train_micrographs_per_fold"] == [2, 2, 2]
        assert learned["seeds"] == [0, 1, 2] and len(learned["ap_per_seed"]) == 3
        assert learned["ap_ci"][0] <= learned["ap_ci"][1] and 0 <= learned["ap_ci"][0] and learned["ap_ci"][1] <= 1
        assert learned["ap"] == pytest.approx(np.mean(learned["ap_per_seed"]))
        assert learned["label_budget"]["1"]["train_micrographs_per_fold"] == [1, 1, 1]
        assert np.isfinite(metrics["pixel"]["psnr_db"]) and 0 <= metrics["template"]["ap"] <= 1
        reconstruction = metrics["reconstruction"]
        if reconstruction["n_particles"]:
            # A map from a few dozen particles of 40 px is no better than Nyquist (6 A) allows.
            assert reconstruction["resolution_half_maps_a"] is None or reconstruction["resolution_half_maps_a"] >= 6.0
    # raw is the input itself: nothing to compute.
    assert dataset["denoisers"]["raw"]["denoise_seconds_per_micrograph"] < 0.1
    assert set(dataset["particle_free"]) >= set(names)
    for name in names:  # Pearson correlations with reference projections, on particle-free micrographs
        correlation = dataset["particle_free"][name]["reference_correlation"]
        assert -1.0 <= correlation["p99"] <= correlation["max"] <= 1.0
        assert dataset["particle_free"][name]["learned_picks_per_micrograph"] >= 0  # the learned judge's pickers
    assert dataset["particle_free"]["picker"] == "learned" and dataset["decoy"]["judge"] == "learned"
    assert set(document["summary"]["checks"]) >= {"particle_free_control", "decoy_control", "ap_order"}
    for pair in document["summary"]["checks"]["ap_order"]["pairs"]:  # holds only if every interval is above 0
        assert pair["holds"] == (pair["mean"] >= 0 and all(ci[0] > 0 for ci in pair["ci"]))
    trained = {record["name"]: record for record in document["training"]}
    adaptation = trained["adapted"]  # the shipped model, fine-tuned as denoise --adapt does it
    assert adaptation["kept"] == (adaptation["held_out_loss"]["adapted"] < adaptation["held_out_loss"]["default"])
    report = (tmp_path / "report.html").read_text()
    assert "at full resolution" in report
    assert report.startswith("<!DOCTYPE html>") and "<svg" in report and "data:image/png;base64," in report
    assert "http://" not in report.replace("http://www.w3.org/2000/svg", "") and "https://" not in report
    summary = (tmp_path / "summary.md").read_text()
    assert "apoferritin 30 e/A^2" in summary and "Mean learned-picker AP" in summary
    assert "learned AP [95% CI]" in summary and "learned AP [95% CI]" in report
    assert "Learned-picker AP against annotated training micrographs per fold, raw: 1: " in summary
    assert "Particle-free micrographs" in report and "Decoy reference" in report
    assert "Template judge density: shell:120:80 (independent of the guidance reference)" in summary


FAKE_TOPAZ = """#!{python}
# Stands in for Topaz-Denoise's command line: topaz denoise --device D -o OUTDIR MIC.mrc
import sys, pathlib, mrcfile, numpy as np
from scipy import ndimage
args = sys.argv[1:]
if args == ["denoise", "--help"]:
    sys.exit({broken})
assert args[0] == "denoise" and args[1:3] == ["--device", "-1"] and args[3] == "-o", args
if {fail}:
    sys.exit("ERROR: CUDA out of memory")
source = pathlib.Path(args[5])
with mrcfile.open(source) as mrc:
    data = ndimage.gaussian_filter(mrc.data.astype(np.float32), 2.0)
with mrcfile.new(pathlib.Path(args[4]) / source.name) as mrc:
    mrc.set_data(data)
"""


def _install_fake_topaz(directory, monkeypatch, *, fail=False, broken=False):
    directory.mkdir()
    script = directory / "topaz"
    script.write_text(FAKE_TOPAZ.format(python=sys.executable, fail=fail,
                                        broken='"RuntimeError: operator torchvision::nms does not exist"' if broken else 0))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


def test_topaz_joins_the_benchmark_only_when_installed(tmp_path, monkeypatch):
    from scipy import ndimage

    from cryoscore.bench.denoisers import denoise_functions

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "topaz" not in denoise_functions(["raw", "topaz"], {}, 1.5, 20.0)
    _install_fake_topaz(tmp_path / "bin", monkeypatch)
    functions = denoise_functions(["raw", "topaz"], {}, 1.5, 20.0)
    image = np.random.default_rng(0).normal(size=(64, 80)).astype(np.float32)
    np.testing.assert_allclose(functions["topaz"](image), ndimage.gaussian_filter(image, 2.0), atol=1e-6)


def test_denoisers_are_judged_in_the_order_the_config_lists_them_with_the_decoy_after_guided(tmp_path, monkeypatch):
    from cryoscore.bench.denoisers import TrainedModel, denoise_functions

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    models = {name: TrainedModel(name, None, {}) for name in ("default", "guided", "guided-decoy", "n2n")}
    functions = denoise_functions(["n2n", "raw", "guided", "topaz", "default", "lowpass"], models, 1.5, 20.0)
    assert list(functions) == ["n2n", "raw", "guided", "guided-decoy", "default", "lowpass"]
    alone = {name: TrainedModel(name, None, {}) for name in ("n2n", "guided-decoy")}
    assert list(denoise_functions(["raw", "guided-decoy", "n2n"], alone, 1.5, 20.0)) == ["raw", "guided-decoy", "n2n"]


def test_guided_decoy_listed_alone_trains_the_decoy_model_only_and_guided_brings_it_once(monkeypatch, tmp_path):
    """``guided-decoy`` in a benchmark's denoisers without ``guided`` trains the model guided by the
    decoy and not the one guided by the reference (the bias control's row, without judging guided
    again); listed beside ``guided`` it is trained once; without a decoy there is nothing to train."""
    from cryoscore.bench import denoisers
    from cryoscore.bench.config import TrainingSettings

    trained: list[tuple[str, str, str]] = []

    def record_training(name, pairs, config, model_path, device, failures):
        trained.append((name, config.method, config.guidance.reference))

    monkeypatch.setattr(denoisers, "_train", record_training)
    settings = TrainingSettings(steps=2, batch_size=2, crop_px=32)
    for methods, decoy in ((["raw", "guided-decoy"], "elongated"), (["guided", "guided-decoy"], "elongated"),
                           (["guided-decoy", "guided"], "elongated"), (["guided-decoy"], None)):
        denoisers.train_models([], methods, settings, tmp_path / "models", reference="apoferritin", decoy=decoy)
    assert trained == [("guided-decoy", "guided", "elongated"),
                       ("guided", "guided", "apoferritin"), ("guided-decoy", "guided", "elongated"),
                       ("guided-decoy", "guided", "elongated"), ("guided", "guided", "apoferritin")]


def test_a_topaz_that_cannot_start_is_left_out_before_the_benchmark_runs(tmp_path, monkeypatch, caplog):
    from cryoscore.bench.denoisers import denoise_functions

    _install_fake_topaz(tmp_path / "bin", monkeypatch, broken=True)
    assert "topaz" not in denoise_functions(["raw", "topaz"], {}, 1.5, 20.0)
    assert "torchvision::nms does not exist" in caplog.text and "left out" in caplog.text


def test_a_failing_topaz_is_one_clear_error(tmp_path, monkeypatch):
    from cryoscore.bench.denoisers import topaz_denoise

    _install_fake_topaz(tmp_path / "bin", monkeypatch, fail=True)
    with pytest.raises(RuntimeError, match="topaz denoise failed .*CUDA out of memory"):
        topaz_denoise(np.zeros((32, 32), dtype=np.float32), str(tmp_path / "bin" / "topaz"))


def test_the_template_judge_correlates_with_the_test_sets_own_template_only(tmp_path):
    """Apoferritin is found by correlating with a featureless shell of its size, a density that is
    not the guidance reference; with no template the judge does not run."""
    from cryoscore.bench.datasets import simulated_test_set
    from cryoscore.bench.run import judge_all
    from cryoscore.simulate.dataset import SimulationConfig, write_dataset

    write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=2, size_px=384, pixel_size_a=4.0,
                                   particles_per_micrograph=30, dose_e_per_a2=60.0, n_frames=4, seed=5),
                  tmp_path / "sim", progress=False)
    test_set = simulated_test_set(tmp_path / "sim", "apoferritin")
    assert test_set.template is None
    raw = {"raw": lambda image: image}
    assert "template" not in judge_all(test_set, raw, ("blob", "template"))["raw"].metrics
    with_shell = judge_all(replace(test_set, template="shell:120:80"), raw, ("blob", "template"))["raw"].metrics
    assert with_shell["template"]["ap"] > 0.8
    sphere = judge_all(replace(test_set, template="shell:40"), raw, ("template",))["raw"].metrics
    assert sphere["template"]["ap"] < with_shell["template"]["ap"]  # a 4 nm ball is the wrong template


def test_a_real_dataset_gets_the_reconstruction_judge_with_or_without_a_ctf_star(tmp_path):
    """Simulated micrographs stand in for real ones: only their files, coordinates and a CTF STAR."""
    from cryoscore.bench.config import RealDataset
    from cryoscore.bench.datasets import real_micrograph_paths, real_test_set
    from cryoscore.bench.run import judge_all
    from cryoscore.io.ctf_star import MicrographCtf, write_ctf_star
    from cryoscore.simulate.ctf import CtfParams
    from cryoscore.simulate.dataset import SimulationConfig, write_dataset

    write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=2, size_px=384, pixel_size_a=4.0,
                                   particles_per_micrograph=40, dose_e_per_a2=40.0, n_frames=4, seed=3),
                  tmp_path / "sim", progress=False)
    manifest = json.loads((tmp_path / "sim" / "manifest.json").read_text())
    write_ctf_star(tmp_path / "ctf.star", [MicrographCtf(f"{entry['name']}.mrc", CtfParams(**entry["ctf"]))
                                           for entry in manifest["micrographs"][:1]], 4.0)
    dataset = RealDataset("r", tmp_path / "sim" / "micrographs", tmp_path / "sim" / "coordinates", 4.0,
                          manifest["particle_diameter_a"], reference="apoferritin", ctf=tmp_path / "ctf.star")
    with pytest.raises(InputError, match="no CTF for micrograph"):
        real_test_set(dataset, real_micrograph_paths(dataset))
    write_ctf_star(tmp_path / "ctf.star", [MicrographCtf(f"{entry['name']}.mrc", CtfParams(**entry["ctf"]))
                                           for entry in manifest["micrographs"]], 4.0)
    test_set = real_test_set(dataset, real_micrograph_paths(dataset))
    outcome = judge_all(test_set, {"raw": lambda image: image}, ("blob", "reconstruction"))["raw"]
    judged = outcome.metrics["reconstruction"]
    assert judged["n_particles"] > 20 and judged["resolution_half_maps_a"] < 40
    assert judged["ctf_corrected"] and judged["picker"] == "blob" and judged["resolution_vs_truth_a"] is None
    # Without CTFs, as the real EMPIAR-10146 micrographs: aligned to the independent template,
    # averaged over the point group, not CTF-corrected.
    uncorrected_set = real_test_set(replace(dataset, ctf=None, template="shell:120:80", symmetry="O"),
                                    real_micrograph_paths(dataset))
    uncorrected = judge_all(uncorrected_set, {"raw": lambda image: image}, ("blob", "reconstruction"))["raw"]
    judged = uncorrected.metrics["reconstruction"]
    assert not judged["ctf_corrected"] and judged["symmetry"] == "O" and judged["resolution_vs_truth_a"] is None
    assert judged["n_particles"] == outcome.metrics["reconstruction"]["n_particles"]
    assert judged["resolution_half_maps_a"] < 60
    with pytest.raises(ValueError, match="symmetry must be Cn, Dn or O"):
        replace(dataset, symmetry="I")


def test_the_class_judge_finds_the_particle_in_the_classes_of_good_picks_only(tmp_path):
    """2D classes of the raw micrographs' blob picks look like the template (a featureless shell
    of apoferritin's size); classes of picks made on a noise image (boxes at random places of the
    same raw micrographs) do not, and the judge knows how many of the picks were true."""
    from cryoscore.bench.config import ClassJudgeSettings, LearnedJudgeSettings
    from cryoscore.bench.datasets import simulated_test_set
    from cryoscore.bench.run import judge_all
    from cryoscore.simulate.dataset import SimulationConfig, write_dataset

    write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=2, size_px=384, pixel_size_a=4.0,
                                   particles_per_micrograph=30, dose_e_per_a2=60.0, n_frames=4, seed=5),
                  tmp_path / "sim", progress=False)
    test_set = replace(simulated_test_set(tmp_path / "sim", "apoferritin"), template="shell:120:80")
    rng = np.random.default_rng(0)
    functions = {"raw": lambda image: image,
                 "noise": lambda image: rng.normal(size=image.shape).astype(np.float32)}
    settings = ClassJudgeSettings(classes=2, iterations=4, half_iterations=2, max_particles=100, box_px=32)
    outcomes = judge_all(test_set, functions, ("blob", "classes"), classes=settings)
    good, bad = outcomes["raw"].metrics["classes"], outcomes["noise"].metrics["classes"]
    assert good["true_fraction"] > 0.8 and bad["true_fraction"] < 0.4
    assert good["particle_like_fraction"] > 0.8 and bad["particle_like_fraction"] < good["particle_like_fraction"] - 0.3
    assert good["template"] == "shell:120:80" and len(good["template_match"]) == 2 and good["picker"] == "blob"
    assert outcomes["raw"].extra["class_averages"].shape == (2, 32, 32)
    assert "classes" not in judge_all(replace(test_set, template=None), functions, ("blob", "classes"))["raw"].metrics
    # With the learned judge the classes are made of its picks, each micrograph picked by the fold's
    # picker that did not see it: here true and particle-like too. (At 60 picker steps the picker is
    # still learning, AP 0.84, and the classes sat at the 0.8 line, passing or not by thread count.)
    learned = LearnedJudgeSettings(folds=2, seeds=(0,), steps=120, batch_size=8, crop_px=32, label_budgets=(), bootstrap=20)
    outcome = judge_all(test_set, {"raw": functions["raw"]}, ("learned", "classes"), learned=learned,
                        classes=settings)["raw"]
    from_learned = outcome.metrics["classes"]
    assert from_learned["picker"] == "learned" and set(outcome.learned_picks) == {"mic_0000", "mic_0001"}
    assert from_learned["true_fraction"] > 0.8 and from_learned["particle_like_fraction"] > 0.8


def test_a_failed_reconstruction_judge_fails_its_check_instead_of_dropping_it():
    from types import SimpleNamespace

    from cryoscore.bench.checks import summarise
    from cryoscore.bench.judges import JudgedDataset

    def outcome(resolution_a):
        reconstruction = ({"error": "no particles to reconstruct", "n_particles": 0} if resolution_a is None
                          else {"resolution_half_maps_a": resolution_a})
        return SimpleNamespace(metrics={"blob": {"ap": 0.5}, "reconstruction": reconstruction})

    def datasets(guided_resolution_a):
        outcomes = {"raw": outcome(30.0), "n2n": outcome(20.0), "guided": outcome(guided_resolution_a)}
        return [JudgedDataset("sim-12e", "simulated", None, outcomes, dose_e_per_a2=12.0)]

    judged = summarise(datasets(18.0), ["raw", "n2n", "guided"])["checks"]["reconstruction_guided_vs_n2n"]
    assert judged["holds"] and judged["guided_half_map_a"] == 18.0
    failed = summarise(datasets(None), ["raw", "n2n", "guided"])["checks"]["reconstruction_guided_vs_n2n"]
    assert failed == {"failed": ["sim-12e, guided: no particles to reconstruct"], "holds": False}


def test_the_background_check_bounds_guided_by_a_quarter_of_n2ns_background_on_every_dataset():
    from types import SimpleNamespace

    from cryoscore.bench.checks import summarise
    from cryoscore.bench.judges import JudgedDataset

    def dataset(label, guided_power, n2n_power=100.0):
        outcomes = {name: SimpleNamespace(metrics={"blob": {"ap": 0.5}, "pixel": {"background_power": power}})
                    for name, power in (("raw", 120.0), ("n2n", n2n_power), ("guided", guided_power))}
        return JudgedDataset(label, "simulated", None, outcomes, dose_e_per_a2=12.0)

    check = summarise([dataset("a", 10.0), dataset("b", 20.0)], ["raw", "n2n", "guided"])["checks"]
    assert check["guided_background_vs_n2n"] == {"ratios": [0.1, 0.2], "bound": 0.25, "holds": True}
    check = summarise([dataset("a", 10.0), dataset("b", 30.0)], ["raw", "n2n", "guided"])["checks"]
    assert check["guided_background_vs_n2n"]["holds"] is False  # one dataset over the bound fails it


def test_the_raw_checks_hold_a_denoiser_to_raw_on_easy_datasets_and_the_default_model_on_every_one():
    from types import SimpleNamespace

    from cryoscore.bench.checks import EASY_RAW_AP, NO_HARM_MARGIN, summarise
    from cryoscore.bench.judges import JudgedDataset

    def dataset(label, aps):
        outcomes = {name: SimpleNamespace(metrics={"blob": {"ap": ap}}) for name, ap in aps.items()}
        return JudgedDataset(label, "simulated", None, outcomes, dose_e_per_a2=12.0)

    hard = dataset("hard", {"raw": 0.50, "default": 0.52, "n2n": 0.30})
    easy = dataset("easy", {"raw": EASY_RAW_AP + 0.03, "default": EASY_RAW_AP + 0.03 - NO_HARM_MARGIN / 2,
                            "n2n": EASY_RAW_AP + 0.03 - 2 * NO_HARM_MARGIN})
    checks = summarise([hard, easy], ["raw", "default", "n2n"])["checks"]
    no_harm = checks["no_harm_where_raw_is_easy"]
    assert no_harm["datasets"] == "easy" and not no_harm["holds"]  # the hard dataset's n2n loss does not count
    assert [(pair["pair"], pair["holds"]) for pair in no_harm["pairs"]] == [("default - raw", True), ("n2n - raw", False)]
    assert no_harm["pairs"][1]["differences"] == pytest.approx([-2 * NO_HARM_MARGIN])
    default = checks["default_not_below_raw"]
    assert default["datasets"] == "hard, easy" and not default["holds"]  # below raw on the easy one, by any margin
    assert default["pairs"][0]["differences"] == pytest.approx([0.02, -NO_HARM_MARGIN / 2])
    assert "flattened_not_below_raw" not in checks  # not judged, no check
    checks = summarise([hard], ["raw", "default", "n2n"])["checks"]
    assert "no_harm_where_raw_is_easy" not in checks and checks["default_not_below_raw"]["holds"]
    assert "ap_order" not in summarise([hard], ["raw", "default"])["checks"]  # no order of raw alone
    flattened = dataset("hard", {"raw": 0.50, "default": 0.45, "flattened": 0.49})
    checks = summarise([flattened], ["raw", "default", "flattened"])["checks"]
    assert not checks["default_not_below_raw"]["holds"] and not checks["flattened_not_below_raw"]["holds"]
    assert checks["flattened_not_below_raw"]["pairs"][0]["differences"] == pytest.approx([-0.01])


def test_the_particle_free_control_counts_false_picks_with_each_denoisers_learned_pickers(tmp_path):
    """Where the learned judge ran, the control counts what each fold's picker (trained on that denoiser's
    outputs) keeps on particle-free micrographs, and guided must keep no more than score; where a
    denoiser has no learned pickers, the blob picks decide."""
    from types import SimpleNamespace

    from cryoscore.bench.datasets import simulated_test_set
    from cryoscore.bench.run import _particle_free_control
    from cryoscore.simulate.dataset import SimulationConfig, write_dataset

    write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=2, size_px=128, pixel_size_a=4.0,
                                   particles_per_micrograph=0, dose_e_per_a2=30.0, n_frames=2, seed=3),
                  tmp_path / "empty", progress=False)
    empty_set = simulated_test_set(tmp_path / "empty", "particle-free")

    class Counter:  # a picker at its threshold that keeps `picks` particles in any image
        def __init__(self, picks):
            self.picks, self.calls = picks, 0

        def count(self, image, pixel_size_a):
            assert image.shape == (128, 128) and pixel_size_a == 4.0
            self.calls += 1
            return self.picks

    functions = {"score": lambda image: image, "guided": lambda image: image}

    def control(guided_counts, score_counts):
        outcomes = {"guided": SimpleNamespace(matches=None, learned_pickers=[Counter(n) for n in guided_counts]),
                    "score": SimpleNamespace(matches=None, learned_pickers=[Counter(n) for n in score_counts])}
        return _particle_free_control(empty_set, functions, outcomes), outcomes

    passed, outcomes = control([2, 4], [3, 5])
    assert passed["picker"] == "learned" and passed["pass"]
    assert passed["guided"]["learned_picks_per_micrograph"] == 3.0 and passed["score"]["learned_picks_per_micrograph"] == 4.0
    assert all(counter.calls == 2 for counter in outcomes["guided"].learned_pickers)  # each picker on each micrograph
    failed, _ = control([6, 4], [3, 5])
    assert failed["picker"] == "learned" and not failed["pass"]
    # Identical outputs, so identical blob picks: without learned pickers for one of them, the blob count decides.
    blob, _ = control([6, 4], [])
    assert blob["picker"] == "blob" and blob["pass"] and "learned_picks_per_micrograph" not in blob["score"]


def test_a_denoiser_that_fails_is_recorded_and_the_others_are_still_trained_and_judged(tmp_path):
    """A benchmark keeps going past one broken denoiser: a model whose training raises is left out
    with its error, one that raises while judged likewise, and without a failures dict the error
    propagates as before."""
    from types import SimpleNamespace

    from cryoscore.bench.config import TrainingSettings
    from cryoscore.bench.datasets import simulated_test_set
    from cryoscore.bench.denoisers import train_models
    from cryoscore.bench.run import _particle_free_control, judge_all
    from cryoscore.pairs.halves import HalfPair
    from cryoscore.simulate.dataset import SimulationConfig, write_dataset

    rng = np.random.default_rng(0)
    pairs = [HalfPair("m", *rng.normal(size=(2, 96, 96)).astype(np.float32), pixel_size_a=4.0)]
    failures: dict[str, str] = {}
    models = train_models(pairs, ["raw", "n2n", "guided"], TrainingSettings(steps=2, batch_size=2, crop_px=32),
                          tmp_path / "models", reference=str(tmp_path / "missing.mrc"), failures=failures)
    assert set(models) == {"n2n"} and set(failures) == {"guided"}
    assert failures["guided"].startswith("training failed: InputError: ") and "missing.mrc" in failures["guided"]
    with pytest.raises(InputError, match="missing.mrc"):
        train_models(pairs, ["guided"], TrainingSettings(steps=2, batch_size=2, crop_px=32), tmp_path / "again",
                     reference=str(tmp_path / "missing.mrc"))

    write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=1, size_px=128, pixel_size_a=4.0,
                                   particles_per_micrograph=3, dose_e_per_a2=30.0, n_frames=2, seed=3),
                  tmp_path / "test", progress=False)
    test_set = simulated_test_set(tmp_path / "test", "apoferritin")

    def broken(image):
        raise RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")

    functions = {"raw": lambda image: image, "topaz": broken}
    judged = judge_all(test_set, functions, ("blob",), failures=failures)
    assert set(judged) == {"raw"} and failures["topaz"] == "RuntimeError: CUDA out of memory"
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        judge_all(test_set, functions, ("blob",))
    # A denoiser that fails on the particle-free micrographs fails the control that needs it.
    outcomes = {name: SimpleNamespace(matches=None, learned_pickers=None) for name in ("score", "guided")}
    control = _particle_free_control(test_set, {"score": lambda image: image, "guided": broken}, outcomes)
    assert control["guided"] == {"error": "RuntimeError: CUDA out of memory"} and control["pass"] is False
    assert control["failed"] == ["guided: RuntimeError: CUDA out of memory"] and "picks_per_micrograph" in control["score"]


def test_a_failed_denoiser_fails_every_check_that_compares_it_and_shows_in_the_summary(tmp_path):
    from types import SimpleNamespace

    from cryoscore.bench.checks import summarise
    from cryoscore.bench.judges import JudgedDataset
    from cryoscore.bench.report import markdown_summary

    def dataset(label, aps, failed):
        outcomes = {name: SimpleNamespace(metrics={"blob": {"ap": ap}}) for name, ap in aps.items()}
        return JudgedDataset(label, "simulated", None, outcomes, dose_e_per_a2=12.0, failed=failed)

    complete = dataset("a", {"raw": 0.5, "n2n": 0.6, "guided": 0.7, "default": 0.55}, {})
    checks = summarise([complete], ["raw", "n2n", "guided", "default"])["checks"]
    assert checks["every_denoiser_ran"] == {"failed": [], "holds": True} and checks["ap_order"]["holds"]
    assert checks["guided_minus_n2n_ap_at_lowest_dose"]["holds"] and checks["default_not_below_raw"]["holds"]
    # The same numbers on dataset a, and guided failed on b: what compares guided cannot hold.
    broken = dataset("b", {"raw": 0.5, "n2n": 0.6, "default": 0.55}, {"guided": "training failed: InputError: x"})
    checks = summarise([complete, broken], ["raw", "n2n", "guided", "default"])["checks"]
    assert checks["every_denoiser_ran"] == {"failed": ["b: guided: training failed: InputError: x"], "holds": False}
    for name in ("ap_order", "guided_minus_n2n_ap_at_lowest_dose"):
        assert checks[name]["holds"] is False and checks[name]["failed"] == ["b: guided: training failed: InputError: x"]
    assert checks["ap_order"]["pairs"][0]["differences"] == pytest.approx([0.1])  # measured where all of them ran
    assert checks["default_not_below_raw"]["holds"] and "failed" not in checks["default_not_below_raw"]
    document = {"command_line": ["cryoscore", "bench"], "created": "now", "seconds": 1.0,
                "versions": {"cryoscore": "0", "torch": "0"}, "machine": {"torch_threads": 1},
                "summary": summarise([complete, broken], ["raw", "n2n", "guided", "default"]),
                "datasets": {"b": {"kind": "simulated", "n_micrographs": 1, "n_particles": 3, "pixel_size_a": 4.0,
                                   "diameter_a": 120.0, "failed": broken.failed, "denoisers": {}}}}
    summary = markdown_summary(document)
    assert "every_denoiser_ran: does not hold (failed ['b: guided: training failed: InputError: x'])" in summary
    assert "Failed, so not judged here: guided (training failed: InputError: x)." in summary
