"""Training a learned picker (:mod:`cryoscore.pick.learned`) on annotated micrographs.

*Positive-unlabelled.* Annotations are incomplete, so pixels away from an
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
The learning rate rises linearly over the first ``warmup_steps`` and then falls on a
cosine: without the warm-up, Adam's first full-size steps overshoot on high-contrast
inputs (flattened denoised micrographs), the nnPU correction then pushes every logit
down, and the ReLUs stop firing one layer after another (benchmarks/RESULTS.md,
"The picker's warm-up"). A training whose network still ends dead, its output (nearly)
the same whatever the image, is started again from other initial weights
(:data:`TRAINING_ATTEMPTS`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional

from cryoscore.io.coords import ParticleCoordinates
from cryoscore.pick.learned import (
    DEFAULT_BACKGROUND,
    WORKING_DIAMETER_PX,
    LearnedPicker,
    PickerNet,
    PickerNetConfig,
    working_image,
)

logger = logging.getLogger(__name__)

#: Pixels within this many particle diameters of an annotated centre are positives.
POSITIVE_RADIUS_DIAMETERS = 0.2

LOSSES = ("nnpu", "pn")

#: A trained network whose logits over each training image span less than this is dead: (nearly)
#: every ReLU of some layer stopped firing, the output is about its last bias whatever the image (the
#: odds of its likeliest pixel at most e times those of its least likely), and the training is started
#: again from other initial weights. Trained networks span 20-50; dead ones measured below 0.01.
DEAD_LOGIT_RANGE = 1.0

#: Trainings tried at most; if all die, the last is kept with a warning.
TRAINING_ATTEMPTS = 3


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
    ``warmup_steps``: steps over which the learning rate rises linearly to ``learning_rate``
    (module docstring); 0 starts at full rate.
    """

    steps: int = 800
    warmup_steps: int = 50
    batch_size: int = 16
    crop_px: int = 64
    learning_rate: float = 5e-3
    seed: int = 0
    particles_per_micrograph: float | None = None
    loss: str = "nnpu"

    def __post_init__(self) -> None:
        if (self.steps < 1 or self.warmup_steps < 0 or self.batch_size < 1 or self.crop_px < 8
                or not self.learning_rate > 0 or self.seed < 0):
            raise ValueError(f"invalid picker training settings: {self}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.particles_per_micrograph is not None and not self.particles_per_micrograph > 0:
            raise ValueError(f"particles_per_micrograph must be > 0, got {self.particles_per_micrograph}")


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


def learning_rate_factor(step: int, training: PickerTraining) -> float:
    """Fraction of ``training.learning_rate`` used at ``step`` (0-based): a linear rise over the
    warm-up steps times a cosine fall from 1 at step 0 to 0 at ``training.steps``."""
    warmup = min(1.0, (step + 1) / training.warmup_steps) if training.warmup_steps else 1.0
    return warmup * 0.5 * (1 + math.cos(math.pi * step / training.steps))


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
    head = net.layers[-1]
    assert isinstance(head, torch.nn.Conv2d) and head.bias is not None, "PickerNet ends in a 1 x 1 convolution"
    with torch.no_grad():  # start from the prior's logit, so steps go to telling particles apart
        head.bias.fill_(math.log(prior / (1 - prior)))
    net.to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=training.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: learning_rate_factor(step, training))
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
    background: str = DEFAULT_BACKGROUND,
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
    background:
        How the working images lose their background (:func:`~cryoscore.pick.learned.working_image`);
        the picker keeps it for picking.
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
    given = np.asarray(pixel_size_a, dtype=np.float64)  # one for all, or one per micrograph
    pixel_sizes = [float(given)] * len(micrographs) if given.ndim == 0 else given.tolist()
    if len(pixel_sizes) != len(micrographs):
        raise ValueError(f"need one pixel size or one per micrograph, got {len(pixel_sizes)}")
    started = time.perf_counter()
    images, masks = [], []
    for image, coords, pixel_a in zip(micrographs, coordinates, pixel_sizes):
        working, step_px = working_image(image, float(pixel_a), diameter_a, background)
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
    return LearnedPicker(net, float(diameter_a), record, background)
