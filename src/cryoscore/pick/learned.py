"""A learned particle picker: a small convolutional network trained on annotated micrographs.

The picker the benchmark trusts most (DESIGN.md section 3): trained on a denoiser's
output of some annotated micrographs and tested on others, as users pick with Topaz or
crYOLO. It works at a fixed scale so it is fast on a CPU and transfers between datasets:

1. *Working image.* Each micrograph is Fourier-resampled so the particle diameter is
   :data:`WORKING_DIAMETER_PX` pixels (the working pixel size is ``diameter_a / 16``),
   its slow background is removed (:func:`~cryoscore.pick.peaks.flatten_background`,
   a Gaussian of one diameter) and it is scaled to robust noise standard deviations
   (:func:`~cryoscore.pick.peaks.robust_standardise`, median and MAD).
2. *Network.* :class:`PickerNet`, a few 3 x 3 convolutions (dilated, receptive field
   21 px = 1.3 diameters) giving one logit per working pixel: high where a particle
   centre is.
3. *Training: positive-unlabelled.* Annotations are incomplete, so pixels away from an
   annotated centre are *unlabelled*, not negative. Positives are the pixels within
   :data:`POSITIVE_RADIUS_DIAMETERS` of an annotated centre; every pixel is an unlabelled
   sample of the whole image, of which a fraction ``pi`` (the class prior) is positive.
   The loss is the non-negative PU risk of Kiryo et al. (2017), as in Topaz::

       R = pi E_P[l(g, +1)] + max(0, E_U[l(g, -1)] - pi E_P[l(g, -1)])

   with the logistic loss ``l(g, y) = softplus(-y g)``; when the bracket goes negative the
   step descends on ``-(E_U[l(g,-1)] - pi E_P[l(g,-1)])`` instead (the nnPU correction).
   ``pi`` comes from the expected number of particles per micrograph, labelled or not
   (default: the labelled count, i.e. annotations taken as nearly complete).
   Training draws random crops with flips and quarter turns, a fixed number of steps,
   from fixed seeds: the same inputs and seed give the same network on the same device.
   A training whose network ends dead, its output the same whatever the image (a plain
   ReLU stack can lose every unit of a layer in its first steps), is started again from
   other initial weights (:data:`TRAINING_ATTEMPTS`).
4. *Picking.* Local maxima of the logit map, non-maximum suppression at one particle
   radius (:func:`~cryoscore.pick.peaks.find_peaks`), score = logit, coordinates in the
   original micrograph's pixels. Every local maximum is kept by default so a scorer can
   trace the precision-recall curve.

A trained picker is saved as ``name.pt`` (weights and config, read with
``torch.load(weights_only=True)``) plus a ``name.json`` sidecar with the same config and
the training record (diameter, working pixel size, settings, seed, micrograph names).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.nn.checkpoint import _check_state_dict
from cryoscore.pick.peaks import check_arguments, find_peaks, flatten_background, robust_standardise

logger = logging.getLogger(__name__)

#: Particle diameter in working pixels: every micrograph is resampled to this scale.
WORKING_DIAMETER_PX = 16.0

#: Pixels within this many particle diameters of an annotated centre are positives.
POSITIVE_RADIUS_DIAMETERS = 0.2

FORMAT = "cryoscore-picker"
FORMAT_VERSION = 1
LOSSES = ("nnpu", "pn")

#: A trained network whose logits over each training image span less than this is dead: every
#: ReLU of some layer stopped firing, the output is its last bias whatever the image, and the
#: training is started again from other initial weights.
DEAD_LOGIT_RANGE = 1e-4

#: Trainings tried at most; if all die, the last is kept with a warning.
TRAINING_ATTEMPTS = 3


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


@dataclass(frozen=True)
class PickerTraining:
    """How a picker is trained; crop sizes in working pixels (:data:`WORKING_DIAMETER_PX` per diameter).

    ``particles_per_micrograph``: the expected number of particles per micrograph, labelled
    or not, which sets the PU class prior; None takes the mean labelled count.
    ``loss``: ``"nnpu"`` (positive-unlabelled) or ``"pn"`` (every unlabelled pixel a
    negative; for comparison only).
    ``steps``: 800, chosen by convergence (benchmarks/RESULTS.md section 5, "How long to train
    the picker"): from 800 to 1600 steps the k-fold AP rises by at most 0.011 on raw or
    denoised micrographs, while 100-400 steps understate denoised micrographs against raw.
    """

    steps: int = 800
    batch_size: int = 16
    crop_px: int = 64
    learning_rate: float = 5e-3
    seed: int = 0
    particles_per_micrograph: float | None = None
    loss: str = "nnpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.crop_px < 8 or not self.learning_rate > 0 or self.seed < 0:
            raise ValueError(f"invalid picker training settings: {self}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.particles_per_micrograph is not None and not self.particles_per_micrograph > 0:
            raise ValueError(f"particles_per_micrograph must be > 0, got {self.particles_per_micrograph}")


def fourier_resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` (H, W) resampled to ``shape`` (h, w) by cropping (or zero-padding) its Fourier transform.

    Sample (i, j) of the result lies at original pixel (i * H / h, j * W / w); values keep
    their scale (a constant image stays that constant). float32 (h, w).
    """
    spectrum = np.fft.fft2(np.asarray(image, dtype=np.float64))
    resampled = np.zeros(shape, dtype=np.complex128)
    kept = []
    for old, new in zip(image.shape, shape):
        n_kept = min(old, new)
        kept.append(np.concatenate([np.arange(0, (n_kept + 1) // 2), np.arange(-(n_kept // 2), 0)]))
    index = np.ix_(*kept)
    resampled[index] = spectrum[index]
    scale = (shape[0] * shape[1]) / (image.shape[0] * image.shape[1])
    return (np.fft.ifft2(resampled).real * scale).astype(np.float32)


def working_image(image: np.ndarray, pixel_size_a: float, diameter_a: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The micrograph as the network sees it, and the original pixels per working pixel (rows, columns).

    ``image`` (H, W) is resampled so the particle is :data:`WORKING_DIAMETER_PX` across
    (:func:`fourier_resample`), its background flattened over one diameter and scaled to
    robust noise standard deviations. Returns (float32 (h, w), (H / h, W / w)).
    """
    check_arguments(image, pixel_size_a, diameter_a)
    zoom = WORKING_DIAMETER_PX * pixel_size_a / diameter_a
    shape = (max(8, round(image.shape[0] * zoom)), max(8, round(image.shape[1] * zoom)))
    centred = np.asarray(image, dtype=np.float64) - float(np.mean(image))
    resampled = fourier_resample(centred, shape)
    normalised = robust_standardise(flatten_background(resampled, WORKING_DIAMETER_PX))
    return normalised, (image.shape[0] / shape[0], image.shape[1] / shape[1])


def positive_mask(shape: tuple[int, int], coordinates: ParticleCoordinates, step_px: tuple[float, float]) -> np.ndarray:
    """bool (h, w): working pixels within :data:`POSITIVE_RADIUS_DIAMETERS` of an annotated centre.

    ``coordinates`` are in original pixels; ``step_px`` is the original pixels per working
    pixel (rows, columns) from :func:`working_image`.
    """
    radius = POSITIVE_RADIUS_DIAMETERS * WORKING_DIAMETER_PX
    rows = np.asarray(coordinates.y_px) / step_px[0]
    cols = np.asarray(coordinates.x_px) / step_px[1]
    mask = np.zeros(shape, dtype=bool)
    reach = math.ceil(radius)
    offsets = np.arange(-reach, reach + 1)
    for row, col in zip(rows, cols):
        grid_rows = np.round(row).astype(int) + offsets
        grid_cols = np.round(col).astype(int) + offsets
        grid_rows = grid_rows[(grid_rows >= 0) & (grid_rows < shape[0])]
        grid_cols = grid_cols[(grid_cols >= 0) & (grid_cols < shape[1])]
        inside = (grid_rows[:, None] - row) ** 2 + (grid_cols[None, :] - col) ** 2 <= radius**2
        mask[np.ix_(grid_rows, grid_cols)] |= inside
    return mask


def pu_loss(logits: torch.Tensor, positive: torch.Tensor, prior: float, loss: str = "nnpu") -> tuple[torch.Tensor, float]:
    """The training objective on a batch, and the risk it estimates.

    ``logits`` and ``positive`` (bool) have the same shape; every element is an
    unlabelled sample and the ``positive`` ones are also labelled positives; ``prior``
    is the fraction of all elements that are particle centres. ``"nnpu"``: the
    non-negative PU risk (module docstring), returning the corrective objective
    ``-(negative risk)`` when that estimate is below 0. ``"pn"``: positives against all
    other elements as negatives, weighted ``prior`` and ``1 - prior``. Returns
    (objective to minimise, scalar risk estimate).
    """
    n_positive = int(positive.sum())
    if loss == "pn":
        negative = ~positive
        positive_risk = functional.softplus(-logits[positive]).mean() if n_positive else logits.sum() * 0
        negative_risk = functional.softplus(logits[negative]).mean()
        objective = prior * positive_risk + (1 - prior) * negative_risk
        return objective, float(objective.detach())
    unlabelled_as_negative = functional.softplus(logits).mean()
    if not n_positive:
        return unlabelled_as_negative, float(unlabelled_as_negative.detach())
    positives = logits[positive]
    positive_risk = functional.softplus(-positives).mean()
    negative_risk = unlabelled_as_negative - prior * functional.softplus(positives).mean()
    if negative_risk < 0:
        return -negative_risk, float(prior * positive_risk.detach())
    objective = prior * positive_risk + negative_risk
    return objective, float(objective.detach())


@dataclass
class LearnedPicker:
    """A trained :class:`PickerNet` with what it needs to pick: the particle diameter and its training record.

    ``record`` is JSON-ready: training settings, seed, class prior, training micrograph
    names, final loss and seconds.
    """

    network: PickerNet
    diameter_a: float
    record: dict[str, Any] = field(default_factory=dict)

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
        working, step_px = working_image(image, pixel_size_a, self.diameter_a)
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


def _class_prior(masks: Sequence[np.ndarray], labelled_counts: Sequence[int], expected_count: float | None) -> float:
    """Fraction of working pixels that are particle-centre positives, labelled or not."""
    labelled_fraction = sum(int(mask.sum()) for mask in masks) / sum(mask.size for mask in masks)
    mean_labelled = float(np.mean(labelled_counts))
    if expected_count is None or mean_labelled == 0:
        return labelled_fraction
    return min(0.5, labelled_fraction * expected_count / mean_labelled)


def _crop_batch(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], crop_px: int, batch_size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` random crops (float32 and bool (B, 1, crop, crop)), each flipped and turned at random.

    Micrographs are drawn in proportion to their area, crop corners uniformly.
    """
    areas = np.array([image.size for image in images], dtype=np.float64)
    chosen = rng.choice(len(images), size=batch_size, p=areas / areas.sum())
    crops, labels = [], []
    for index in chosen:
        image, mask = images[index], masks[index]
        row = int(rng.integers(0, image.shape[0] - crop_px + 1))
        col = int(rng.integers(0, image.shape[1] - crop_px + 1))
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        pair = [np.rot90(array[row:row + crop_px, col:col + crop_px], turns) for array in (image, mask)]
        if flip:
            pair = [array[:, ::-1] for array in pair]
        crops.append(pair[0])
        labels.append(pair[1])
    return np.stack(crops)[:, None].copy(), np.stack(labels)[:, None].copy()


def _train_network(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], prior: float, crop_px: int,
                   training: PickerTraining, network: PickerNetConfig, device: str | torch.device,
                   attempt: int) -> tuple[PickerNet, list[float], float]:
    """One training run on working ``images`` and their positive ``masks``.

    Returns the network (eval mode), the risk of each step and the largest range (max - min)
    of its logits over one of the training images, which is 0 for a dead network. Attempt 0
    draws its initial weights with ``training.seed`` and the crops of step ``k`` with
    ``default_rng([seed, k])``; a later attempt ``a`` with seeds derived from ``[seed, a]``.
    """
    weights_seed = (training.seed if attempt == 0
                    else int(np.random.SeedSequence([training.seed, attempt]).generate_state(1)[0]))
    crop_key = [training.seed] if attempt == 0 else [training.seed, attempt]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(weights_seed)
        net = PickerNet(network)
    with torch.no_grad():  # start from the prior's logit, so steps go to telling particles apart
        net.layers[-1].bias.fill_(math.log(prior / (1 - prior)))
    net.to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=training.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=training.steps)
    risks = []
    for step in range(training.steps):
        crops, labels = _crop_batch(images, masks, crop_px, training.batch_size,
                                    np.random.default_rng([*crop_key, step]))
        logits = net(torch.from_numpy(crops).to(device))
        objective, risk = pu_loss(logits, torch.from_numpy(labels).to(device), prior, training.loss)
        optimiser.zero_grad(set_to_none=True)
        objective.backward()
        optimiser.step()
        schedule.step()
        risks.append(risk)
    net.eval()
    with torch.inference_mode():
        ranges = [float(logits.max() - logits.min()) for logits in
                  (net(torch.from_numpy(image)[None, None].to(device)) for image in images)]
    return net, risks, max(ranges)


def train_picker(
    micrographs: Sequence[np.ndarray],
    coordinates: Sequence[ParticleCoordinates],
    pixel_size_a: float | Sequence[float],
    diameter_a: float,
    *,
    training: PickerTraining = PickerTraining(),
    network: PickerNetConfig = PickerNetConfig(),
    names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> LearnedPicker:
    """Train a picker on annotated micrographs.

    Parameters
    ----------
    micrographs:
        (H, W) images, particles as they will be in the micrographs to pick (raw or denoised).
    coordinates:
        The annotated particle centres of each micrograph, original pixels; may be incomplete.
    pixel_size_a:
        Angstrom per pixel, one for all micrographs or one each.
    diameter_a:
        Particle diameter, Angstrom: sets the working scale.
    training, network:
        Settings and network shape; ``training.seed`` fixes the initial weights (drawn
        under :func:`torch.random.fork_rng`, leaving the global generator as it was) and
        the crops of step ``k`` (``numpy.random.default_rng([seed, k])``). A training that
        ends with a dead network (logits spanning less than :data:`DEAD_LOGIT_RANGE`, the
        same whatever the image) is started again with seeds derived from ``[seed, attempt]``,
        at most :data:`TRAINING_ATTEMPTS` times in all; the record says how many were made.
    names:
        Micrograph names for the record.
    device:
        Where the network trains and later picks (``"cpu"`` or ``"cuda"``).

    Returns the trained :class:`LearnedPicker` on ``device``. Raises ValueError for
    mismatched inputs or no annotated particle at all.
    """
    if len(micrographs) != len(coordinates) or not micrographs:
        raise ValueError(f"need as many coordinate sets as micrographs (>= 1), got {len(coordinates)} "
                         f"and {len(micrographs)}")
    pixel_sizes = [pixel_size_a] * len(micrographs) if np.isscalar(pixel_size_a) else list(pixel_size_a)
    if len(pixel_sizes) != len(micrographs):
        raise ValueError(f"need one pixel size or one per micrograph, got {len(pixel_sizes)}")
    started = time.perf_counter()
    images, masks = [], []
    for image, coords, pixel_a in zip(micrographs, coordinates, pixel_sizes):
        working, step_px = working_image(image, float(pixel_a), diameter_a)
        images.append(working)
        masks.append(positive_mask(working.shape, coords, step_px))
    counts = [len(coords) for coords in coordinates]
    if sum(counts) == 0:
        raise ValueError("no annotated particle in the training micrographs")
    prior = _class_prior(masks, counts, training.particles_per_micrograph)
    crop_px = min(training.crop_px, *(min(image.shape) for image in images))
    for attempt in range(TRAINING_ATTEMPTS):
        net, risks, logit_range = _train_network(images, masks, prior, crop_px, training, network, device, attempt)
        if logit_range >= DEAD_LOGIT_RANGE:
            break
        logger.warning("picker training attempt %d (seed %d) ended with a dead network (the same logit whatever "
                       "the image)%s", attempt + 1, training.seed,
                       "; starting again from other initial weights" if attempt + 1 < TRAINING_ATTEMPTS
                       else f"; giving up after {TRAINING_ATTEMPTS} attempts, its picks are meaningless")
    seconds = time.perf_counter() - started
    record = {
        "training": dataclasses.asdict(training),
        "crop_px_used": crop_px,
        "class_prior": prior,
        "labelled_particles": int(sum(counts)),
        "micrographs": list(names) if names is not None else [f"#{index}" for index in range(len(micrographs))],
        "pixel_sizes_a": [float(value) for value in pixel_sizes],
        "final_risk": float(np.mean(risks[-max(1, len(risks) // 10):])),
        "attempts": attempt + 1,
        "seconds": seconds,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    logger.info("picker trained on %d micrographs (%d particles, prior %.4f) in %.1f s, risk %.4f",
                len(micrographs), sum(counts), prior, seconds, record["final_risk"])
    return LearnedPicker(net, float(diameter_a), record)


def _header(picker: LearnedPicker) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": {"network": {"channels": picker.network.config.channels,
                               "dilations": list(picker.network.config.dilations)},
                   "diameter_a": picker.diameter_a,
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
                               f"{FORMAT_VERSION}); upgrade cryoscore")
    try:
        config = payload["config"]
        network_config = PickerNetConfig(int(config["network"]["channels"]),
                                         tuple(int(value) for value in config["network"]["dilations"]))
        diameter_a = float(config["diameter_a"])
        if float(config["working_diameter_px"]) != WORKING_DIAMETER_PX or not diameter_a > 0:
            raise ValueError(f"working diameter {config['working_diameter_px']} px or diameter {diameter_a} A")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"invalid picker config ({type(exc).__name__}: {exc})") from exc
    network = PickerNet(network_config)
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise InputError(path, "picker file has no state_dict")
    _check_state_dict(path, network, state_dict)
    network.load_state_dict(state_dict)
    record = payload.get("record") if isinstance(payload.get("record"), dict) else {}
    return LearnedPicker(network.eval(), diameter_a, record).to(device)
