"""cryoscore: target-guided score-based denoising for cryo-EM micrographs.

Data flows one way through the subpackages (see ``DESIGN.md`` of the project):
``io`` -> ``simulate`` -> ``preprocess`` -> (pairs -> nn -> objectives -> train -> infer -> pick ->
reconstruct -> classify -> metrics -> bench) -> ``cli``; the README's module map
says what each holds, and tests/test_layout.py holds the imports to that order. Nothing happens
at import time.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cryoscore")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
