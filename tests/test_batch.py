"""Batch denoising: Dask workers give the bits one process gives; reruns resume; failures are isolated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cryoscore.cli import main
from cryoscore.jobs import remove_stale_parts

NAMES = [f"mic_{index:04d}.mrc" for index in range(6)]


@pytest.fixture(scope="module")
def micrographs(tmp_path_factory) -> Path:
    """Six simulated 192 x 192 micrographs in a directory."""
    root = tmp_path_factory.mktemp("batch")
    assert main(["simulate", "-o", str(root / "sim"), "--micrographs", str(len(NAMES)), "--size", "192",
                 "--frames", "4", "--particles", "6", "--pixel-size", "3"]) == 0
    return root / "sim" / "micrographs"


@pytest.fixture(scope="module")
def reference(micrographs, tmp_path_factory) -> dict[str, bytes]:
    """The bytes of each output of one in-process run with one torch thread."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["denoise", str(micrographs), "-o", str(out), "--threads", "1"]) == 0
    return {name: (out / name).read_bytes() for name in NAMES}


def outputs(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` but the run record (which holds the time), by name."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.name != "denoise.json"}


@pytest.mark.slow
def test_two_local_workers_give_the_same_bits_as_one_process(micrographs, reference, tmp_path, capsys):
    # Workers run one torch thread per micrograph by default: the reference's setting.
    assert main(["denoise", str(micrographs / "*.mrc"), "-o", str(tmp_path), "--workers", "2"]) == 0
    assert outputs(tmp_path) == reference
    assert f"denoised {len(NAMES)}, skipped 0 (already done), failed 0" in capsys.readouterr().out


@pytest.mark.slow
def test_an_existing_scheduler_runs_the_same_job(micrographs, reference, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert main(["denoise", str(micrographs), "-o", str(tmp_path), "--scheduler", cluster.scheduler_address]) == 0
    assert outputs(tmp_path) == reference


def test_a_rerun_skips_complete_outputs_and_redoes_missing_or_corrupt_ones(micrographs, reference, tmp_path, capsys):
    for name, data in reference.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / NAMES[0]).unlink()
    (tmp_path / NAMES[1]).write_bytes(reference[NAMES[1]][:2000])  # truncated
    stale = tmp_path / ".mic_0002.x1y2z3w4.part.mrc"  # what a writer killed mid-write leaves
    stale.write_bytes(b"half")
    mtimes = {name: (tmp_path / name).stat().st_mtime_ns for name in NAMES[2:]}
    time.sleep(0.01)
    assert main(["denoise", str(micrographs), "-o", str(tmp_path), "--threads", "1"]) == 0
    assert "denoised 2, skipped 4 (already done), failed 0" in capsys.readouterr().out
    statuses = [entry["status"] for entry in json.loads((tmp_path / "denoise.json").read_text())["micrographs"]]
    assert statuses == ["ok", "ok"] + ["skipped"] * 4
    assert outputs(tmp_path) == reference  # the stale part file is gone too
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in NAMES[2:]} == mtimes
    assert main(["denoise", str(micrographs), "-o", str(tmp_path), "--threads", "1", "--overwrite"]) == 0
    assert f"denoised {len(NAMES)}, skipped 0" in capsys.readouterr().out


def test_a_corrupt_input_is_reported_and_the_others_are_written(micrographs, reference, tmp_path, capsys):
    corrupt = tmp_path / "in" / "corrupt.mrc"
    corrupt.parent.mkdir()
    corrupt.write_bytes((micrographs / NAMES[0]).read_bytes()[:3000])
    inputs = [str(micrographs / NAMES[0]), str(corrupt), str(micrographs / NAMES[1])]
    assert main(["denoise", *inputs, "-o", str(tmp_path / "out"), "--threads", "1"]) == 2
    captured = capsys.readouterr()
    assert f"failed: {corrupt}: file is truncated" in captured.err
    assert "denoised 2, skipped 0 (already done), failed 1" in captured.out
    assert outputs(tmp_path / "out") == {name: reference[name] for name in NAMES[:2]}
    record = json.loads((tmp_path / "out" / "denoise.json").read_text())
    assert record["command_line"] == ["cryoscore", "denoise", *inputs, "-o", str(tmp_path / "out"), "--threads", "1"]
    assert record["denoiser"] == "the default model" and record["settings"]["tile_px"] == 1024
    assert [(entry["input"], entry["output"], entry["status"]) for entry in record["micrographs"]] == [
        (inputs[0], NAMES[0], "ok"), (str(corrupt), "corrupt.mrc", "failed"), (inputs[2], NAMES[1], "ok")]
    assert record["micrographs"][1]["error"].startswith(f"{corrupt}: file is truncated")


def test_a_killed_run_restarts_and_finishes_with_every_output_correct(micrographs, reference, tmp_path):
    command = [sys.executable, "-m", "cryoscore.cli", "denoise", str(micrographs), "-o", str(tmp_path), "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not any(tmp_path.glob("mic_*.mrc")) and process.poll() is None:
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert 0 < len(list(tmp_path.glob("mic_*.mrc"))) < len(NAMES)  # killed mid-way
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    assert outputs(tmp_path) == reference  # every output written and correct, no stray part files


def test_stale_part_files_of_other_outputs_are_kept(tmp_path):
    for name in (".mic_0001.abcd1234.part.mrc", ".mic_00010.abcd1234.part.mrc", ".mic_[1].abcd_234.part.mrc",
                 ".mic.0001.abcd1234.part.mrc"):
        (tmp_path / name).write_bytes(b"x")
    remove_stale_parts(tmp_path / "mic_[1].mrc")
    remove_stale_parts(tmp_path / "mic_0001.mrc")
    remove_stale_parts(tmp_path / "mic.mrc")
    assert sorted(os.listdir(tmp_path)) == [".mic.0001.abcd1234.part.mrc", ".mic_00010.abcd1234.part.mrc"]


def test_options_that_cannot_work_exit_2(micrographs, tmp_path, capsys):
    assert main(["denoise", str(micrographs), "-o", str(tmp_path), "--workers", "2",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["denoise", str(tmp_path / "none" / "*.mrc"), "-o", str(tmp_path)]) == 2
    assert "no .mrc files" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["denoise", str(micrographs), "-o", str(tmp_path), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_binning_denoises_the_block_averaged_micrograph_at_its_noise_level(micrographs, tmp_path, capsys):
    from cryoscore.filters import bin_image
    from cryoscore.infer.denoise import denoise_image, load_denoiser
    from cryoscore.io.mrc import read_mrc

    assert main(["denoise", str(micrographs), "-o", str(tmp_path), "--bin", "2", "--threads", "1"]) == 0
    image, pixel_size_a = read_mrc(micrographs / NAMES[0])
    binned, binned_pixel_size_a = read_mrc(tmp_path / NAMES[0])
    assert binned.shape == (image.shape[0] // 2, image.shape[1] // 2)
    assert binned_pixel_size_a == pytest.approx(2 * pixel_size_a)
    # A binned full sum has a quarter of the noise variance: it holds 4 x 2 halves' worth.
    expected = denoise_image(load_denoiser(), bin_image(image, 2), halves_in_image=8)
    np.testing.assert_allclose(binned, expected, rtol=0, atol=1e-4 * float(np.abs(expected).max()))
    capsys.readouterr()
    assert main(["denoise", str(micrographs), "-o", str(tmp_path), "--bin", "2", "--threads", "1"]) == 0
    assert f"denoised 0, skipped {len(NAMES)}" in capsys.readouterr().out  # binned outputs count as complete


@pytest.mark.slow
def test_two_local_workers_pick_what_one_process_picks(micrographs, tmp_path):
    assert main(["pick", str(micrographs), "-o", str(tmp_path / "one"), "--diameter", "120", "--threads", "1"]) == 0
    assert main(["pick", str(micrographs / "*.mrc"), "-o", str(tmp_path / "two"), "--diameter", "120",
                 "--workers", "2"]) == 0
    stars = sorted(path.name for path in (tmp_path / "one").glob("*.star"))
    assert stars == [name.replace(".mrc", ".star") for name in NAMES]
    assert outputs(tmp_path / "two").keys() == outputs(tmp_path / "one").keys()
    for name in stars:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    one, two = ([{key: value for key, value in entry.items() if key != "seconds"}  # the time each took differs
                 for entry in json.loads((tmp_path / run / "pick.json").read_text())["micrographs"]]
                for run in ("one", "two"))
    assert one == two and all(entry["n_picks"] > 0 for entry in one)


def test_the_next_input_is_read_ahead_while_the_current_one_is_computed(tmp_path, monkeypatch):
    from cryoscore import jobs as job_runner
    from cryoscore.infer.batch import DenoiseJob

    events = []
    monkeypatch.setattr(job_runner, "read_ahead", lambda path: events.append(("read ahead", path.name)))
    jobs = [DenoiseJob(tmp_path / f"{name}.mrc", tmp_path / "out" / f"{name}.mrc") for name in "abc"]

    def job_function(job, torch_threads=None):
        events.append(("compute", job.source.name))
        return job_runner.JobRecord(job.source.name, "ok", 0.0)

    records = job_runner.run_jobs(job_function, jobs, progress=False)
    assert [record.name for record in records] == ["a.mrc", "b.mrc", "c.mrc"]
    assert events == [("read ahead", "b.mrc"), ("compute", "a.mrc"), ("read ahead", "c.mrc"), ("compute", "b.mrc"),
                      ("compute", "c.mrc")]


def test_read_ahead_is_harmless_on_any_path(tmp_path):
    from cryoscore.jobs import read_ahead

    (tmp_path / "x.mrc").write_bytes(b"0" * 1000)
    read_ahead(tmp_path / "x.mrc")
    read_ahead(tmp_path / "missing.mrc")  # the job reports a missing input, not the read-ahead
    assert (tmp_path / "x.mrc").read_bytes() == b"0" * 1000 and not (tmp_path / "missing.mrc").exists()


def _resident_fraction(path) -> float:
    """Share of ``path``'s pages that sit in the page cache (Linux ``mincore`` on a mapping of it)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    pages = (ctypes.c_ubyte * (-(-size // mmap.PAGESIZE)))()
    with open(path, "rb") as file:
        base = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, file.fileno(), 0)
    try:
        assert libc.mincore(base, size, pages) == 0, f"mincore failed: errno {ctypes.get_errno()}"
    finally:
        libc.munmap(base, size)
    return sum(page & 1 for page in pages) / len(pages)


def test_read_ahead_puts_the_whole_file_in_the_page_cache(tmp_path):
    """A 64 MiB input (a 4096 x 4096 float32 micrograph) is read to its end, not just the
    first read-ahead window, once it has been evicted from the cache."""
    from cryoscore.jobs import read_ahead

    path = tmp_path / "mic.mrc"
    path.write_bytes(os.urandom(64 * 2**20))
    with open(path, "rb") as file:
        os.fsync(file.fileno())
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if _resident_fraction(path) > 0.5:
        pytest.skip(f"{tmp_path}'s file system keeps files in memory (tmpfs?); eviction cannot be tested there")
    read_ahead(path).join(timeout=60)
    assert _resident_fraction(path) > 0.99
