"""A benchmark's finished steps, kept so an interrupted run continues (``cryoscore bench --resume``).

A benchmark runs for hours (every denoiser judged by nine or more picker trainings). Each
step that finishes, a model trained or a denoiser judged on a test set, is kept under
``OUTDIR/work/steps/`` as a pickle, written atomically, beside ``run.json``: the
configuration and the cryoscore and torch versions the steps were made with, and a digest of
cryoscore's source. A run with ``--resume`` loads the steps that are there instead of running
them again, provided its configuration and versions are the same (an
:class:`~cryoscore.errors.InputError` otherwise, so the steps of different runs are never
mixed). The configuration's list of denoisers is not part of it: each step is one denoiser's,
so a run with more denoisers resumes from one with fewer and runs only the new ones. Where only
the source differs (a change between releases, perhaps one that changes no number) it resumes
with a warning, and the run's record says so. A run without ``--resume``
starts from nothing. The datasets are simulated again either way (the simulator is seeded, so they
come out the same, in minutes); a step that failed is not kept and runs again.

Pickles run code when they are loaded: resume only output directories you made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.io.layout import write_json

logger = logging.getLogger(__name__)

Value = TypeVar("Value")

RUN_RECORD = "run.json"


class StepStore:
    """Finished steps of one benchmark run, by key, in ``directory`` (None: nothing is kept).

    ``fingerprint`` (JSON-ready) says what the steps depend on: the configuration and the
    versions; ``source`` is a digest of the code (:func:`source_digest`). Without ``resume`` the
    directory is emptied and both written; with it the directory must hold the same
    fingerprint, and ``source_changed`` says whether its steps were made by other code.
    ``resumed`` lists the keys loaded.
    """

    def __init__(self, directory: Path | None, fingerprint: dict[str, Any], *, resume: bool = False,
                 source: str = ""):
        self.directory = directory
        self.resumed: list[str] = []
        self.source_changed = False
        if directory is None:
            return
        record = directory / RUN_RECORD
        if resume:
            if not record.is_file():
                raise InputError(directory.parent.parent, "nothing to resume: no benchmark steps were kept there")
            kept = json.loads(record.read_text())
            kept_source = kept.pop("source", None)
            if kept != json.loads(json.dumps(fingerprint)):
                differs = sorted(key for key in set(kept) | set(fingerprint) if kept.get(key) != fingerprint.get(key))
                raise InputError(directory.parent.parent, "cannot resume: its steps were made with another "
                                 f"{' and '.join(differs)} (run again without --resume, into another directory)")
            self.source_changed = kept_source != source
            if self.source_changed:
                logger.warning("%s: its steps were made by other cryoscore source than this one; resuming with them, "
                               "though numbers this code would give may differ", directory.parent.parent)
            return
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        write_json(record, {**fingerprint, "source": source})

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:80]
        return self.directory / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pkl"

    def load_or_run(self, key: str, step: Callable[[], Value]) -> Value:
        """The value kept under ``key``, or ``step()``'s, kept unless it is None (a failed step)."""
        if self.directory is None:
            return step()
        path = self._path(key)
        if path.is_file():
            with path.open("rb") as stream:
                value: Value = pickle.load(stream)
            self.resumed.append(key)
            logger.info("%s: kept from an earlier run", key)
            return value
        value = step()
        if value is not None:
            with atomic_path(path) as partial, partial.open("wb") as stream:
                pickle.dump(value, stream, protocol=pickle.HIGHEST_PROTOCOL)
        return value


def source_digest() -> str:
    """SHA-256 of cryoscore's Python source (every ``.py`` file of the package, by relative path)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


NO_STORE = StepStore(None, {})
"""Keeps nothing: every step runs (functions used outside a benchmark run)."""
