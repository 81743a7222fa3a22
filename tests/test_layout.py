"""The package's layout: the README's module map lists every module, in an order the imports keep."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cryoscore"
README = PACKAGE.parents[1] / "README.md"
ALLOWED_BACKWARD = {("io", "simulate")}
"""``io/ctf_star.py`` reads CTFs into ``simulate.ctf.CtfParams`` (named in the README)."""
SUPPORT = {"__init__", "errors", "progress", "allocator", "settings", "models"}
"""Helpers and settings every stage may use, and the shipped model's folder: not stages of the data flow."""


def _module_map() -> list[str]:
    """The first column of the README's module map, top to bottom (``io/`` -> ``io``)."""
    section = README.read_text().split("## Code layout", 1)[1].split("\n## ", 1)[0]
    return [name.removesuffix("/").removesuffix(".py") for name in re.findall(r"^\| `([^`]+)` \|", section, re.M)]


def _imports() -> dict[str, set[str]]:
    """Top-level unit -> the other units it imports from."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cryoscore."):
                other = node.module.split(".")[1]
                if other != unit:
                    edges.setdefault(unit, set()).add(other)
    return edges


def test_the_module_map_lists_every_module_of_the_package():
    units = {path.name.removesuffix(".py") for path in PACKAGE.iterdir()
             if path.suffix == ".py" or (path.is_dir() and path.name != "__pycache__")}
    listed = _module_map()
    assert len(listed) == len(set(listed))
    assert set(listed) == units - SUPPORT


def test_no_module_imports_one_below_it_in_the_module_map():
    order = {name: index for index, name in enumerate(_module_map())}
    backward = sorted((unit, other) for unit, others in _imports().items() for other in others
                      if unit in order and other in order and order[other] > order[unit])
    assert set(backward) <= ALLOWED_BACKWARD, backward
