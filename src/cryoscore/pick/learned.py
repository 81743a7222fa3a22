"""A learned particle picker: a small convolutional network trained on annotated micrographs.

The picker the benchmark trusts most (DESIGN.md section 3): trained on a denoiser's
output of some annotated micrographs and tested on others, as users pick with Topaz or
crYOLO. It works at a fixed scale so it is fast on a CPU and transfers between datasets:

1. *Working image.* Each micrograph is Fourier-resampled so the particle diameter is
   :data:`WORKING_DIAMETER_PX` pixels (the working pixel size is ``diameter_a / 16``),
   its background is removed (:func:`~cryoscore.pick.peaks.flatten_background`: by
   default a median over two diameters, which follows carbon edges and contamination
   rims; pickers saved before it, format version 1, used a Gaussian of one diameter) and
   it is scaled to robust noise standard deviations
   (:func:`~cryoscore.pick.peaks.robust_standardise`, median and MAD).
2. *Network.* :class:`PickerNet`, a few 3 x 3 convolutions (dilated, receptive field
   21 px = 1.3 diameters) giving one logit per working pixel: high where a particle
   centre is.
3. *Training* (:mod:`cryoscore.pick.learned_training`): positive-unlabelled, as Topaz
   trains, on annotated micrographs whose annotations may be incomplete.
4. *Picking.* Local maxima of the logit map, non-maximum suppression at one particle
   radius (:func:`~cryoscore.pick.peaks.find_peaks`), score = logit, coordinates in the
   original micrograph's pixels. Every local maximum is kept by default so a scorer can
   trace the precision-recall curve.

A trained picker is saved as ``name.pt`` (weights and config, read with
``torch.load(weights_only=True)``) plus a ``name.json`` sidecar with the same config and
the training record (diameter, working pixel size, settings, seed, micrograph names).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cryoscore.errors import InputError
from cryoscore.filters import fourier_resample
from cryoscore.io.atomic import atomic_path
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.nn.checkpoint import _check_state_dict
from cryoscore.pick.peaks import check_arguments, find_peaks, flatten_background, robust_standardise
from cryoscore.settings import BACKGROUND_METHODS

#: Particle diameter in working pixels: every micrograph is resampled to this scale.
WORKING_DIAMETER_PX = 16.0

FORMAT = "cryoscore-picker"

FORMAT_VERSION = 2
"""Version 2 records the working image's background method (``config.background``); version 1 files,
which have none, were trained on the Gaussian background and are read with it."""

#: The working image's background method for new pickers (:func:`~cryoscore.pick.peaks.flatten_background`).
DEFAULT_BACKGROUND = BACKGROUND_METHODS[0]


@dataclass(frozen=True)
class PickerNetConfig:
    """Shape of :class:`PickerNet`: ``channels`` per hidden layer and one 3 x 3 convolution per dilation."""

    channels: int = 32
    dilations: tuple[int, ...] = (1, 1, 2, 4, 2)

    def __post_init__(self) -> None:
        if self.channels < 1 or not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"invalid picker network config: {self}")

    @property
    def receptive_field_px(self) -> int:
        """Width of the square of working pixels that one output logit sees."""
        return 1 + 2 * sum(self.dilations)


class PickerNet(nn.Module):
    """Fully convolutional: (B, 1, H, W) normalised working image -> (B, 1, H, W) particle-centre logits.

    3 x 3 convolutions with the configured dilations (reflect padding, so the output has
    the input's size), ReLU between them, and a 1 x 1 convolution to one logit.
    """

    def __init__(self, config: PickerNetConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = 1
        for dilation in config.dilations:
            layers += [nn.Conv2d(in_channels, config.channels, 3, padding=dilation, dilation=dilation,
                                 padding_mode="reflect"), nn.ReLU(inplace=True)]
            in_channels = config.channels
        layers.append(nn.Conv2d(in_channels, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


def working_image(image: np.ndarray, pixel_size_a: float, diameter_a: float,
                  background: str = DEFAULT_BACKGROUND) -> tuple[np.ndarray, tuple[float, float]]:
    """The micrograph as the network sees it, and the original pixels per working pixel (rows, columns).

    ``image`` (H, W) is resampled so the particle is :data:`WORKING_DIAMETER_PX` across
    (:func:`cryoscore.filters.fourier_resample`), its background removed by the ``background`` method
    (:func:`~cryoscore.pick.peaks.flatten_background`) and scaled to robust noise standard deviations.
    Returns (float32 (h, w), (H / h, W / w)).
    """
    check_arguments(image, pixel_size_a, diameter_a)
    zoom = WORKING_DIAMETER_PX * pixel_size_a / diameter_a
    shape = (max(8, round(image.shape[0] * zoom)), max(8, round(image.shape[1] * zoom)))
    centred = np.asarray(image, dtype=np.float64) - float(np.mean(image))
    resampled = fourier_resample(centred, shape)
    normalised = robust_standardise(flatten_background(resampled, WORKING_DIAMETER_PX, background))
    return normalised, (image.shape[0] / shape[0], image.shape[1] / shape[1])


@dataclass
class LearnedPicker:
    """A trained :class:`PickerNet` with what it needs to pick: the particle diameter and its training record.

    ``record`` is JSON-ready: training settings, seed, class prior, training micrograph
    names, final loss and seconds. ``background``: how its working images lose their background
    (:func:`working_image`), as when it was trained.
    """

    network: PickerNet
    diameter_a: float
    record: dict[str, Any] = field(default_factory=dict)
    background: str = DEFAULT_BACKGROUND

    @property
    def working_pixel_size_a(self) -> float:
        """Angstrom per working pixel: the diameter spans :data:`WORKING_DIAMETER_PX` of them."""
        return self.diameter_a / WORKING_DIAMETER_PX

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> "LearnedPicker":
        """Move the network to ``device`` (``"cpu"``, ``"cuda"``...); returns self."""
        self.network.to(device)
        return self

    def logit_map(self, image: np.ndarray, pixel_size_a: float) -> tuple[np.ndarray, tuple[float, float]]:
        """Particle-centre logits on the working grid of ``image`` (H, W) at ``pixel_size_a`` A/px.

        Returns (float32 (h, w), original pixels per working pixel (rows, columns)).
        """
        working, step_px = working_image(image, pixel_size_a, self.diameter_a, self.background)
        self.network.eval()
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(working)[None, None].to(self.device))
        return logits[0, 0].float().cpu().numpy(), step_px

    def pick(self, image: np.ndarray, pixel_size_a: float, *, threshold: float | None = None,
             max_picks: int | None = None) -> ParticleCoordinates:
        """Pick particles in ``image`` (H, W, particles as in the training micrographs) at ``pixel_size_a`` A/px.

        Returns ParticleCoordinates in pixels of ``image`` with ``figure_of_merit`` = logit,
        best first: every local maximum of the logit map (``threshold`` None) or those
        scoring above ``threshold``, at most ``max_picks``; picks at least one particle
        radius apart and from the edge.
        """
        logits, (row_step, col_step) = self.logit_map(image, pixel_size_a)
        radius = WORKING_DIAMETER_PX / 2
        found = find_peaks(logits, 1, logits.shape, radius, threshold=threshold, max_picks=max_picks,
                           floor=-math.inf)
        return ParticleCoordinates(x_px=found.x_px * col_step, y_px=found.y_px * row_step,
                                   figure_of_merit=found.figure_of_merit)


def _header(picker: LearnedPicker) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": {"network": {"channels": picker.network.config.channels,
                               "dilations": list(picker.network.config.dilations)},
                   "diameter_a": picker.diameter_a,
                   "background": picker.background,
                   "working_diameter_px": WORKING_DIAMETER_PX,
                   "working_pixel_size_a": picker.working_pixel_size_a},
        "record": json.loads(json.dumps(picker.record, allow_nan=False)),
    }


def save_picker(path: str | os.PathLike, picker: LearnedPicker) -> None:
    """Write ``picker`` to ``path`` (``.pt``: config, record, weights) and ``path`` with suffix ``.json``
    (config and record), both atomically."""
    path = Path(path)
    if path.suffix != ".pt":
        raise InputError(path, "picker file name must end in .pt")
    header = _header(picker)
    state_dict = {name: tensor.detach().cpu() for name, tensor in picker.network.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({**header, "state_dict": state_dict}, tmp)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(header, indent=2) + "\n")


def load_picker(path: str | os.PathLike, device: str | torch.device = "cpu") -> LearnedPicker:
    """Load a picker written by :func:`save_picker` (``weights_only``, never a pickle) onto ``device``.

    Raises InputError for a missing or unreadable file, a file that is not a cryoscore
    picker (a denoising model, say), a newer format, or weights that do not fit the config.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "picker file not found")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on arbitrary bytes
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a readable torch file ({reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(path, f"not a cryoscore picker (format {found!r}, expected {FORMAT!r})")
    version = payload.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise InputError(path, f"unsupported picker format_version {version!r} (this cryoscore reads "
                               f"1 to {FORMAT_VERSION}); upgrade cryoscore")
    try:
        config = payload["config"]
        network_config = PickerNetConfig(int(config["network"]["channels"]),
                                         tuple(int(value) for value in config["network"]["dilations"]))
        diameter_a = float(config["diameter_a"])
        if float(config["working_diameter_px"]) != WORKING_DIAMETER_PX or not diameter_a > 0:
            raise ValueError(f"working diameter {config['working_diameter_px']} px or diameter {diameter_a} A")
        background = config["background"] if version >= 2 else "gaussian"
        if background not in BACKGROUND_METHODS:
            raise ValueError(f"background {background!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"invalid picker config ({type(exc).__name__}: {exc})") from exc
    network = PickerNet(network_config)
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise InputError(path, "picker file has no state_dict")
    _check_state_dict(path, network, state_dict)
    network.load_state_dict(state_dict)
    record: dict[str, Any] = payload["record"] if isinstance(payload.get("record"), dict) else {}
    return LearnedPicker(network.eval(), diameter_a, record, background).to(device)
