"""The dataset directory layout, shared by simulated and real datasets.

::

    DATASET/
      manifest.json             pixel size, particle diameter, dose, CTF per micrograph, seed...
      reference.mrc             the volume used (simulated data) or a reference map, optional
      micrographs/NAME.mrc      full frame sums (what a user's motion correction writes)
      even/NAME.mrc             sum of even frames (0, 2, 4, ...)
      odd/NAME.mrc              sum of odd frames
      frames/NAME.mrcs          the movie, optional
      clean/NAME.mrc            ground truth: the particles' expected contribution (simulation only)
      background/NAME.mrc       ground truth: the expected image without particles (simulation only)
      coordinates/NAME.star     particle centres (RELION), with poses and CTF when known

Every image of one micrograph shares NAME; ``clean + background`` is the expected value
of the full sum, so all ground-truth images are on the full sum's scale (electron counts).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path

MANIFEST_NAME = "manifest.json"
REFERENCE_NAME = "reference.mrc"


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of one dataset directory; nothing is created or checked on construction."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def reference(self) -> Path:
        return self.root / REFERENCE_NAME

    def micrograph(self, name: str) -> Path:
        return self.root / "micrographs" / f"{name}.mrc"

    def even(self, name: str) -> Path:
        return self.root / "even" / f"{name}.mrc"

    def odd(self, name: str) -> Path:
        return self.root / "odd" / f"{name}.mrc"

    def frames(self, name: str) -> Path:
        return self.root / "frames" / f"{name}.mrcs"

    def clean(self, name: str) -> Path:
        return self.root / "clean" / f"{name}.mrc"

    def background(self, name: str) -> Path:
        return self.root / "background" / f"{name}.mrc"

    def coordinates(self, name: str) -> Path:
        return self.root / "coordinates" / f"{name}.star"

    def micrograph_names(self) -> list[str]:
        """Names of the full sums present, sorted."""
        return sorted(path.stem for path in (self.root / "micrographs").glob("*.mrc"))


def write_json(path: str | os.PathLike, content: dict[str, Any]) -> None:
    """Write ``content`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The dataset's manifest as a dict; InputError if it is missing or not JSON."""
    path = DatasetLayout(Path(root)).manifest
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "no manifest.json: not a cryoscore dataset directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid JSON ({error})") from None
