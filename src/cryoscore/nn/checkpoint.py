"""Save and load denoisers as weights plus a JSON config; never pickled objects.

A model file ``name.pt`` is ``torch.save`` of a plain dict::

    {"format": "cryoscore-model", "format_version": 1,
     "config": {"unet": UNetConfig fields, "preconditioner": EDMPreconditioner fields},
     "extra": caller's JSON-serialisable metadata (training run, data normalisation, ...),
     "state_dict": the Denoiser's tensors}

so it loads with ``torch.load(weights_only=True)``. A sidecar ``name.json`` holds the same
format, version, config and extra for people and scripts that do not read torch files.
Both are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.nn.precondition import Denoiser, EDMPreconditioner
from cryoscore.nn.unet import NoiseConditionedUNet
from cryoscore.settings import UNetConfig

FORMAT = "cryoscore-model"
FORMAT_VERSION = 1


def save_model(path: str | os.PathLike, model: Denoiser, *, extra: dict[str, Any]) -> None:
    """Write ``model`` to ``path`` (must end in ``.pt``) and its config to ``path`` with suffix ``.json``.

    ``model.net`` must be a :class:`NoiseConditionedUNet`. ``extra`` must be
    JSON-serialisable (``TypeError``/``ValueError`` otherwise); it is stored as its JSON
    round trip, so :func:`load_model` returns lists where tuples were given.
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise InputError(path, "model file name must end in .pt")
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, not {type(extra).__name__}")
    if not isinstance(model.net, NoiseConditionedUNet):
        raise TypeError(f"can only save a Denoiser around a NoiseConditionedUNet, not {type(model.net).__name__}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": {"unet": model.net.config.to_dict(), "preconditioner": model.preconditioner.to_dict()},
        "extra": json.loads(json.dumps(extra, allow_nan=False)),
    }
    state_dict = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({**header, "state_dict": state_dict}, tmp)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(header, indent=2) + "\n")


def load_model(path: str | os.PathLike) -> tuple[Denoiser, dict[str, Any]]:
    """Load a model written by :func:`save_model`; returns ``(denoiser in eval mode on the CPU, extra)``.

    Raises :class:`InputError` for a missing file, a file torch cannot read, a file that is
    not a cryoscore model, a newer format version, an invalid config, or weights that do
    not match the config.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model file not found")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on arbitrary bytes (KeyError included)
        raise InputError(path, _unreadable_reason(exc)) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(path, f"not a cryoscore model (format {found!r}, expected {FORMAT!r})")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise InputError(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise InputError(
            path,
            f"format_version {version} is newer than this cryoscore reads ({FORMAT_VERSION}); upgrade cryoscore",
        )
    model = _build(path, payload.get("config"))
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise InputError(path, "model file has no state_dict")
    _check_state_dict(path, model, state_dict)
    model.load_state_dict(state_dict)
    extra = payload.get("extra")
    if not isinstance(extra, dict):
        raise InputError(path, "model file has no extra metadata dict")
    return model.eval(), extra


def _unreadable_reason(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line for a user.

    torch's own message for pickled objects advises loading with ``weights_only=False``, which
    runs whatever code the file holds: unsafe advice for a file of unknown origin, never repeated.
    """
    text = str(error).strip()
    if "weights_only" in text or "Weights only" in text:
        return ("not a cryoscore model file: it holds pickled Python objects, which cryoscore does not load "
                "(they could run code); use a model written by cryoscore train")
    reason = text.splitlines()[0][:120] if text else type(error).__name__
    return f"not a cryoscore model file: torch cannot read it ({reason})"


def _build(path: Path, config: Any) -> Denoiser:
    """A fresh Denoiser from a stored config dict; InputError when the config is unusable."""
    try:
        net = NoiseConditionedUNet(UNetConfig(**config["unet"]))
        preconditioner = EDMPreconditioner(**config["preconditioner"])
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(path, f"invalid model config ({type(exc).__name__}: {exc})") from exc
    return Denoiser(net, preconditioner)


def _check_state_dict(path: Path, model: torch.nn.Module, state_dict: dict[str, Any]) -> None:
    """InputError with a one-line summary when ``state_dict`` does not fit ``model``."""
    expected = model.state_dict()
    problems = []
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    wrong = [
        f"{name}: {tuple(state_dict[name].shape)} vs {tuple(expected[name].shape)}"
        if isinstance(state_dict[name], torch.Tensor)
        else f"{name}: not a tensor"
        for name in sorted(expected.keys() & state_dict.keys())
        if not isinstance(state_dict[name], torch.Tensor) or state_dict[name].shape != expected[name].shape
    ]
    if wrong:
        problems.append(f"{len(wrong)} of the wrong shape (e.g. {wrong[0]})")
    if problems:
        raise InputError(path, "weights do not match the model config: " + "; ".join(problems))
