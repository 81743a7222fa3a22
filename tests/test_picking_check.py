"""``--adapt-check``: an adapted model is kept only if the learned judge picks better on its outputs."""

from __future__ import annotations

import pytest
import torch

from cryoscore.bench import picking_check
from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.picking_check import PickingCheck, check_adaptation_by_picking
from cryoscore.cli import main
from cryoscore.errors import InputError
from cryoscore.infer.adapt import Micrograph
from cryoscore.infer.denoise import TrainedDenoiser, load_denoiser
from cryoscore.io.coords import write_coordinates
from cryoscore.io.mrc import write_mrc
from cryoscore.nn.checkpoint import save_model
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves
from cryoscore.simulate.procedural import builtin_specimen

PIXEL_A = 4.0
DIAMETER_A = 120.0  # the built-in apoferritin
# Three 256 x 256 px micrographs of 14 apoferritins each, plainly visible at 30 e/A^2.
CONFIG = SimulationConfig(size_px=256, pixel_size_a=PIXEL_A, particles_per_micrograph=14, n_micrographs=3,
                          dose_e_per_a2=30.0, seed=11)
QUICK_JUDGE = LearnedJudgeSettings(folds=3, seeds=(0,), steps=60, batch_size=8)


@pytest.fixture(scope="module")
def annotated():
    """The micrographs (noisy full sums) and their true centres by name."""
    specimen = builtin_specimen("apoferritin", PIXEL_A)
    truths = [render_truth(CONFIG, specimen, index) for index in range(CONFIG.n_micrographs)]
    micrographs = [Micrograph(f"m{index}", sum(sample_halves(truth)).numpy(), PIXEL_A, f"m{index}.mrc")
                   for index, truth in enumerate(truths)]
    return micrographs, {f"m{index}": truth.coordinates() for index, truth in enumerate(truths)}


def _wrecked() -> TrainedDenoiser:
    """The default model with every weight drowned in noise ten times its own spread: outputs without particles."""
    model = load_denoiser()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.model.parameters():
            tensor.add_(10 * (tensor.std() if tensor.numel() > 1 else 1.0) * torch.randn(tensor.shape,
                                                                                          generator=generator))
    return model


def _save_as_adapted(path, denoiser: TrainedDenoiser) -> None:
    """Write ``denoiser`` as ``--adapt`` leaves a model its loss check kept."""
    save_model(path, denoiser.model, extra={**denoiser.metadata, "adaptation": {"kept": True, "initial_loss": 1.0,
                                                                                  "adapted_loss": 0.9}})


def _same_weights(first: TrainedDenoiser, second: TrainedDenoiser) -> bool:
    return all(torch.equal(tensor, second.model.state_dict()[key]) for key, tensor in first.model.state_dict().items())


def test_an_adapted_model_that_picks_worse_is_replaced_by_the_initial_one(tmp_path, annotated):
    micrographs, coordinates = annotated
    default, path = load_denoiser(), tmp_path / "adapted.pt"
    _save_as_adapted(path, _wrecked())
    verdict = check_adaptation_by_picking(default, path, micrographs, PickingCheck(coordinates, DIAMETER_A,
                                                                                   QUICK_JUDGE))
    assert verdict is not None and not verdict.kept
    assert verdict.initial_ap > 0.8 and verdict.adapted_ap < verdict.initial_ap - 0.3
    assert verdict.micrographs == ("m0", "m1", "m2")
    written = load_denoiser(path)
    assert _same_weights(written, default)
    record = written.metadata["adaptation"]
    assert record["kept"] is False and record["picking_check"]["kept"] is False
    assert record["picking_check"]["initial_ap"] == pytest.approx(verdict.initial_ap)
    assert record["initial_loss"] == 1.0  # the loss check's record is kept beside the picking check's


def test_an_adapted_model_that_picks_better_is_kept(tmp_path, annotated):
    micrographs, coordinates = annotated
    default, path = load_denoiser(), tmp_path / "adapted.pt"
    _save_as_adapted(path, default)
    verdict = check_adaptation_by_picking(_wrecked(), path, micrographs[:2],
                                          PickingCheck(coordinates, DIAMETER_A, QUICK_JUDGE))
    assert verdict is not None and verdict.kept and verdict.adapted_ap > verdict.initial_ap + 0.3
    written = load_denoiser(path)
    assert _same_weights(written, default)
    assert written.metadata["adaptation"]["kept"] is True and written.metadata["adaptation"]["picking_check"]["kept"]


def test_the_check_needs_two_annotated_micrographs_and_a_kept_adaptation(tmp_path, annotated):
    micrographs, coordinates = annotated
    default, path = load_denoiser(), tmp_path / "adapted.pt"
    _save_as_adapted(path, default)
    with pytest.raises(InputError, match="at least 2"):
        check_adaptation_by_picking(default, path, micrographs, PickingCheck({"m0": coordinates["m0"]}, DIAMETER_A))
    save_model(path, default.model, extra={**default.metadata, "adaptation": {"kept": False}})
    modified = path.stat().st_mtime_ns
    assert check_adaptation_by_picking(default, path, micrographs, PickingCheck(coordinates, DIAMETER_A)) is None
    assert path.stat().st_mtime_ns == modified


def test_denoise_adapt_check_refuses_missing_diameter_and_coordinates(tmp_path, annotated, capsys):
    micrographs, coordinates = annotated
    inputs, stars = tmp_path / "mics", tmp_path / "stars"
    inputs.mkdir(), stars.mkdir()
    for micrograph in micrographs:
        write_mrc(inputs / f"{micrograph.name}.mrc", micrograph.image, PIXEL_A)
    write_coordinates(stars / "m0.star", coordinates["m0"])
    out = tmp_path / "out"
    assert main(["denoise", str(inputs), "-o", str(out), "--adapt", "2", "--adapt-check", str(stars)]) == 2
    assert "needs the particle diameter" in capsys.readouterr().err
    assert main(["denoise", str(inputs), "-o", str(out), "--adapt", "2", "--adapt-check", str(stars),
                 "--diameter", "120"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["denoise", str(inputs), "-o", str(out), "--adapt-check", str(stars), "--diameter", "120"]) == 2
    assert "add --adapt" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was trained or written


def test_denoise_adapt_check_judges_the_adapted_model_by_picking(tmp_path, annotated, capsys, monkeypatch):
    """The whole command: adapt, the loss check, the picking check on the annotated micrographs, denoise."""
    monkeypatch.setattr(picking_check, "CHECK_JUDGE", QUICK_JUDGE)
    micrographs, coordinates = annotated
    inputs, stars = tmp_path / "mics", tmp_path / "stars"
    inputs.mkdir(), stars.mkdir()
    for micrograph in micrographs:
        write_mrc(inputs / f"{micrograph.name}.mrc", micrograph.image, PIXEL_A)
    for name in ("m0", "m1"):
        write_coordinates(stars / f"{name}.star", coordinates[name])
    out = tmp_path / "out"
    assert main(["denoise", str(inputs), "-o", str(out), "--adapt", "4", "--adapt-check", str(stars),
                 "--diameter", "120"]) == 0
    record = load_denoiser(out / "adapted.pt").metadata["adaptation"]
    err = capsys.readouterr().err
    assert sorted(path.name for path in out.glob("*.mrc")) == ["m0.mrc", "m1.mrc", "m2.mrc"]
    assert record["adapted_loss"] < record["initial_loss"]  # 1.0575 against 1.0666 (1 or 2 threads): judged by picking
    check = record["picking_check"]
    assert check["micrographs"] == ["m0", "m1"] and record["kept"] == check["kept"]
    assert check["kept"] == (check["adapted_ap"] > check["initial_ap"])
    assert f"learned-picker AP on 2 annotated micrographs {check['initial_ap']:.3f}" in err
