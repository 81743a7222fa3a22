"""Every benchmark's JSON starts with the same provenance: the command as run, the machine and the versions."""

from __future__ import annotations

import torch

from cryoscore import __version__


def test_run_record_is_the_command_as_run_with_machine_and_versions(benchmarks_on_path, monkeypatch):
    from bench_learned_picker import run_record

    monkeypatch.setattr("sys.argv", ["/elsewhere/bench_picker_inputs.py", "data set", "-o", "out.json"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    record = run_record()
    command = "python benchmarks/bench_picker_inputs.py 'data set' -o out.json"
    assert record["command"] == command
    assert record["machine"]["torch_threads"] == torch.get_num_threads()
    assert record["versions"] == {"cryoscore": __version__, "torch": torch.__version__}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert run_record()["command"] == "OMP_NUM_THREADS=1 " + command
