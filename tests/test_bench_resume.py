"""cryoscore bench --resume: an interrupted benchmark continues from the steps it finished."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from cryoscore.bench.config import (
    BenchConfig,
    LearnedJudgeSettings,
    SimulatedSpecimen,
    SimulationSettings,
    TrainingSettings,
)
from cryoscore.errors import InputError

TINY = BenchConfig(
    simulated=(SimulatedSpecimen("apoferritin", doses=(30.0,), decoy="elongated"),),
    denoisers=("raw", "lowpass", "n2n"),
    judges=("learned", "blob"),
    training=TrainingSettings(steps=3, batch_size=2, crop_px=64),
    simulation=SimulationSettings(size_px=160, train_micrographs=1, test_micrographs=2, empty_micrographs=1),
    learned=LearnedJudgeSettings(folds=2, seeds=(0,), steps=12, batch_size=2, crop_px=32, label_budgets=(),
                                 bootstrap=20),
)


def _numbers(document: dict) -> dict:
    """What a run measured, without the times and the record of how it ran."""
    datasets = json.loads(json.dumps(document["datasets"]))
    for dataset in datasets.values():
        for metrics in dataset["denoisers"].values():
            metrics.pop("denoise_seconds_per_micrograph")
            metrics["learned"].pop("seconds")
    return datasets


def _record_judging(monkeypatch, stop_at: str | None = None) -> list[str]:
    """The names of the denoisers the bench judges from now on, in order; judging ``stop_at`` raises
    KeyboardInterrupt instead, as a run stopped by its user or session (not a denoiser's failure)."""
    import cryoscore.bench.run
    from cryoscore.bench.judges import judge_denoiser

    judged: list[str] = []

    def recorded(test_set, name, *args, **kwargs):
        if name == stop_at:
            raise KeyboardInterrupt
        judged.append(name)
        return judge_denoiser(test_set, name, *args, **kwargs)

    monkeypatch.setattr(cryoscore.bench.run, "judge_denoiser", recorded)
    return judged


@pytest.fixture
def one_thread():
    """torch on one thread for the test, as worker processes train pickers (their numbers are one thread's)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_an_interrupted_benchmark_resumes_from_its_finished_steps_to_the_same_numbers(tmp_path, monkeypatch, caplog,
                                                                                     one_thread):
    """Killed while judging the third denoiser, a run continued with ``resume`` loads the model it
    trained and the two denoisers it judged (they are not run again) and ends with the numbers of
    a run that was never interrupted, here with its pickers trained in two worker processes."""
    import cryoscore.bench.denoisers
    import cryoscore.bench.run
    from cryoscore.bench.run import run_bench

    whole = run_bench(TINY, tmp_path / "whole")

    judged = _record_judging(monkeypatch, stop_at="n2n")
    with pytest.raises(KeyboardInterrupt):
        run_bench(TINY, tmp_path / "interrupted")
    assert judged == ["raw", "lowpass"]
    assert not (tmp_path / "interrupted" / "metrics.json").exists()

    judged = _record_judging(monkeypatch)

    def no_training(*args, **kwargs):
        raise AssertionError("a kept model was trained again")

    monkeypatch.setattr(cryoscore.bench.denoisers, "train_model", no_training)
    with caplog.at_level(logging.INFO, logger="cryoscore.bench"):
        # Pickers trained two at a time in worker processes: the same numbers, so the run may resume with them.
        resumed = run_bench(replace(TINY, learned=replace(TINY.learned, workers=2)), tmp_path / "interrupted",
                            resume=True)
    label = "apoferritin 30 e/A^2"
    # n2n on the test set, then each denoiser on the particle-free micrographs (never reached before).
    assert judged == ["n2n", "raw", "lowpass", "n2n"]
    assert resumed["resumed_steps"] == ["trained/apoferritin/n2n", f"judged/{label}/raw", f"judged/{label}/lowpass"]
    assert f"judged/{label}/raw: kept from an earlier run" in caplog.messages
    assert whole["resumed_steps"] == []
    assert _numbers(resumed) == _numbers(whole)
    assert [{**record, "seconds": 0} for record in resumed["training"]] == [
        {**record, "seconds": 0} for record in whole["training"]]
    assert resumed["summary"] == whole["summary"]
    # Each denoiser against raw, paired over micrographs and seeds: in metrics.json and the summary's table.
    against_raw = resumed["datasets"][label]["learned_ap_minus_raw"]
    assert set(against_raw) == {"lowpass", "n2n"}
    for name, difference in against_raw.items():
        learned = resumed["datasets"][label]["denoisers"]
        assert difference["ap"] == pytest.approx(learned[name]["learned"]["ap"] - learned["raw"]["learned"]["ap"])
        assert difference["ci"][0] <= difference["ap"] <= difference["ci"][1]
    summary = (tmp_path / "interrupted" / "summary.md").read_text()
    assert "| minus raw, paired |" in summary
    assert f"| {against_raw['n2n']['ap']:+.3f} [{against_raw['n2n']['ci'][0]:+.3f}, " in summary
    assert "(resumed: 3 steps kept from an earlier run, their time not counted)" in summary
    assert "resumed" not in (tmp_path / "whole" / "summary.md").read_text()
    assert "resumed: 3 steps kept" in (tmp_path / "interrupted" / "report.html").read_text()
    assert resumed["resumed_from_other_source"] is False and whole["resumed_from_other_source"] is False

    # Resumed again by other source code: every step is kept (nothing trained or judged) and the run says so.
    judged.clear()
    monkeypatch.setattr(cryoscore.bench.run, "source_digest", lambda: "0" * 64)
    again = run_bench(TINY, tmp_path / "interrupted", resume=True)
    assert judged == [] and again["resumed_from_other_source"] is True
    assert _numbers(again) == _numbers(whole)
    assert "steps kept from an earlier run, made by other cryoscore source" in (
        tmp_path / "interrupted" / "summary.md").read_text()


def test_a_run_with_more_denoisers_resumes_from_one_with_fewer(tmp_path, monkeypatch, one_thread):
    """Each step is one denoiser's: a run of two of TINY's three denoisers, then TINY with ``resume``
    into the same directory, trains and judges only the third and ends with the numbers of TINY run
    whole (a benchmark run in parts, or a denoiser added to a finished one)."""
    from cryoscore.bench.run import run_bench

    label = "apoferritin 30 e/A^2"
    whole = run_bench(TINY, tmp_path / "whole")
    part = run_bench(replace(TINY, denoisers=("raw", "lowpass")), tmp_path / "parts")
    assert set(part["datasets"][label]["denoisers"]) == {"raw", "lowpass"}

    judged = _record_judging(monkeypatch)
    resumed = run_bench(TINY, tmp_path / "parts", resume=True)
    assert judged == ["n2n", "n2n"]  # the test set, then the particle-free micrographs
    assert resumed["resumed_steps"] == [f"judged/{label}/raw", f"judged/{label}/lowpass",
                                        "particle-free/apoferritin particle-free/raw",
                                        "particle-free/apoferritin particle-free/lowpass"]
    assert [record["name"] for record in resumed["training"]] == ["n2n"]
    assert _numbers(resumed) == _numbers(whole) and resumed["summary"] == whole["summary"]


def test_resume_refuses_another_config_and_a_directory_without_steps(tmp_path, caplog):
    """Steps are never mixed between runs: a changed config (here the picker's steps) or versions
    is one clear error naming the directory and what differs, as is a directory with nothing kept.
    A run without ``resume`` starts again from nothing; one made by other source code resumes with
    a warning."""
    from cryoscore.bench.resume import StepStore, source_digest

    steps = tmp_path / "out" / "work" / "steps"
    with pytest.raises(InputError, match="nothing to resume"):
        StepStore(steps, {"config": {"a": 1}}, resume=True)
    store = StepStore(steps, {"config": TINY.to_dict(), "cryoscore": "1", "torch": "2"})
    assert store.load_or_run("judged/x/raw", lambda: {"ap": 0.5}) == {"ap": 0.5}
    assert store.load_or_run("judged/x/broken", lambda: None) is None  # a failed step is not kept
    changed = replace(TINY, learned=replace(TINY.learned, steps=4))
    with pytest.raises(InputError, match=r"out: cannot resume: its steps were made with another config"):
        StepStore(steps, {"config": changed.to_dict(), "cryoscore": "1", "torch": "2"}, resume=True)
    with pytest.raises(InputError, match="another cryoscore and torch"):
        StepStore(steps, {"config": TINY.to_dict(), "cryoscore": "0", "torch": "3"}, resume=True)
    again = StepStore(steps, {"config": TINY.to_dict(), "cryoscore": "1", "torch": "2"}, resume=True)
    assert again.load_or_run("judged/x/raw", lambda: {"ap": 0.0}) == {"ap": 0.5} and again.resumed == ["judged/x/raw"]
    assert again.load_or_run("judged/x/broken", lambda: {"ap": 0.1}) == {"ap": 0.1}
    fresh = StepStore(steps, {"config": TINY.to_dict(), "cryoscore": "1", "torch": "2"}, source="code 1")
    assert fresh.load_or_run("judged/x/raw", lambda: {"ap": 0.25}) == {"ap": 0.25} and fresh.resumed == []
    # Other source code with the same config and versions: resumed, with a warning and a mark.
    same = StepStore(steps, {"config": TINY.to_dict(), "cryoscore": "1", "torch": "2"}, resume=True, source="code 1")
    assert not same.source_changed
    with caplog.at_level(logging.WARNING, logger="cryoscore.bench"):
        other = StepStore(steps, {"config": TINY.to_dict(), "cryoscore": "1", "torch": "2"}, resume=True,
                          source="code 2")
    assert other.source_changed and "made by other cryoscore source" in caplog.text
    assert other.load_or_run("judged/x/raw", lambda: {"ap": 0.0}) == {"ap": 0.25}
    assert len(source_digest()) == 64 and source_digest() == source_digest()


def test_the_command_line_resumes_only_a_run_it_kept(tmp_path, capsys):
    """``cryoscore bench --resume`` in a directory with no kept steps, or with --overwrite, is one
    line and exit code 2, as are --workers below 1; nothing in the directory is touched."""
    from cryoscore.cli import main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(["bench", "--quick", "-o", str(tmp_path / "out"), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert "out: nothing to resume" in error and len(error.splitlines()) == 1
    assert main(["bench", "--quick", "-o", str(tmp_path / "out"), "--resume", "--overwrite"]) == 2
    assert "give --resume or --overwrite, not both" in capsys.readouterr().err
    assert main(["bench", "--quick", "-o", str(tmp_path / "out"), "--resume", "--workers", "0"]) == 2
    assert "--workers: [learned] workers must be >= 1" in capsys.readouterr().err
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_the_command_line_refuses_parallel_pickers_on_a_gpu(tmp_path, capsys, monkeypatch):
    """A config with ``[learned] workers = 2`` run with ``--device cuda`` (on a machine with CUDA)
    is one line naming --device and exit code 2, not a traceback; nothing is written."""
    import cryoscore.infer.denoise
    from cryoscore.cli import main

    monkeypatch.setattr(cryoscore.infer.denoise.torch.cuda, "is_available", lambda: True)
    config = tmp_path / "bench.toml"
    config.write_text('denoisers = ["raw"]\n\n[learned]\nworkers = 2\n\n[[simulated]]\nspecimen = "small"\n')
    assert main(["bench", str(config), "-o", str(tmp_path / "out"), "--device", "cuda"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--device: [learned] workers must be >= 1, and 1 on a GPU; got 2 on cuda" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "out").exists()
    assert main(["bench", str(config), "-o", str(tmp_path / "out"), "--device", "cuda", "--workers", "3"]) == 2
    assert "--device --workers: [learned] workers must be >= 1, and 1 on a GPU; got 3 on cuda" in capsys.readouterr().err
