"""Denoise micrographs with a trained model: one-step Tweedie estimate, tiled.

The image is put in noise units (``pairs.normalise``) with the number of halves it holds
(2 for a full sum), the network returns ``E[signal | image]`` for the noise level the
image has, and the result is mapped back to the input's units.

The model may live on a GPU (``load_denoiser(..., device="cuda")``); the image, the
sampler's state and the tiling stay on the CPU and only each batch of tiles visits the
model's device, so CPU results do not depend on this plumbing.

The network's weights and activations are kept channels-last (NHWC), the layout of oneDNN's
fastest convolution kernels: on 2 CPU cores the convolutions of a tile take 40 % less time
than in the default NCHW layout (benchmarks/RESULTS.md, section 3) and the result is the same
to float round-off.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch

from cryoscore.allocator import heap_allocations
from cryoscore.errors import InputError
from cryoscore.filters import fourier_resample, lowpass_filter, lowpass_filter_nonperiodic
from cryoscore.infer import DEFAULT_TILE_PX, FLATTEN_LOWPASS_A
from cryoscore.infer.sampler import DenoiseFunction, SamplerConfig, sample_mean_and_std
from cryoscore.infer.tiling import TilingConfig, apply_tiled
from cryoscore.nn.checkpoint import load_model
from cryoscore.nn.precondition import Denoiser
from cryoscore.objectives import HALF_NOISE_SIGMA
from cryoscore.pairs.guidance import particle_band_a
from cryoscore.pairs.normalise import NORMALISATION, Normalisation, normalisation_for_image, relative_noise_map
from cryoscore.pairs.scale import WorkingScale, working_shape
from cryoscore.settings import DEVICES

logger = logging.getLogger(__name__)

#: How far outside the pixel sizes a model was trained at a micrograph may be before a warning.
PIXEL_SIZE_TOLERANCE = 1.25

DEFAULT_MODEL = resources.files("cryoscore") / "models" / "default.pt"
"""The model shipped inside the package (``scripts/train_default_model.sh`` made it)."""


PRECISIONS = ("fp32", "bf16", "fp16")
"""Arithmetic of the network's forward passes (``TrainedDenoiser.precision``)."""
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainedDenoiser:
    """A loaded model with the metadata training recorded (method, normalisation, ...).

    ``precision`` is the arithmetic of its forward passes: ``"fp32"``, or ``"bf16"`` /
    ``"fp16"`` mixed precision (torch autocast; the image and the result stay float32).
    """

    model: Denoiser
    metadata: dict[str, Any]
    source: str
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError("--precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.metadata.get("normalisation") != NORMALISATION:
            raise InputError(self.source, f"model expects data normalised as {self.metadata.get('normalisation')!r}, "
                             f"this cryoscore uses {NORMALISATION!r}")

    def network_sigma(self, image_sigma: float) -> float:
        """The noise level to tell the network, within the levels it was trained on.

        n2n models only know the halves' level. Score models know the halves' level and
        above; a full sum (0.707 in noise units) is below anything halves can show them, and
        telling them so measured worse than telling them 1 (an MSE of 54 against 21 on a
        simulated test), so the level is clamped to the trained range.
        """
        if self.metadata["method"] == "n2n":
            return HALF_NOISE_SIGMA
        return max(image_sigma, HALF_NOISE_SIGMA)

    @property
    def pixel_size_range_a(self) -> tuple[float, float]:
        """The (smallest, largest) pixel size, Angstrom, of the micrographs the network was
        trained on, after any Fourier cropping to the model's floor."""
        low, high = self.metadata.get("pixel_size_range_a") or [self.metadata["training_pixel_size_a"]] * 2
        return float(low), float(high)

    def working_scale(self, shape: tuple[int, int], pixel_size_a: float | None) -> WorkingScale:
        """The grid a ``shape`` (H, W) image at ``pixel_size_a`` is denoised on (:mod:`cryoscore.pairs.scale`).

        Without a pixel size the image is taken as it is. A warning is logged when its working
        pixel size lies outside the trained range by more than ``PIXEL_SIZE_TOLERANCE``.
        """
        if pixel_size_a is None:
            return WorkingScale((int(shape[0]), int(shape[1])), float("nan"))
        scale = working_shape(shape, pixel_size_a, self.metadata.get("min_pixel_size_a"))
        low, high = self.pixel_size_range_a
        if not low / PIXEL_SIZE_TOLERANCE <= scale.pixel_size_a <= high * PIXEL_SIZE_TOLERANCE:
            logger.warning("a micrograph at %.3g A/px is outside the pixel sizes %s was trained on (%.3g-%.3g "
                           "A/px); particles and noise may not look as the model expects", scale.pixel_size_a,
                           self.source, low, high)
        return scale

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    def check_can_sample(self) -> None:
        """InputError unless the model knows a range of noise levels (``score`` or ``guided``)."""
        if self.metadata["method"] == "n2n":
            raise InputError(self.source, "an n2n model knows a single noise level and cannot sample; "
                             "use --sampler tweedie or a score or guided model")


def resolve_device(name: str | None) -> str:
    """``"cpu"`` or ``"cuda"``: ``name``, or without one CUDA when it is available; InputError for
    CUDA on a machine without it."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in DEVICES:
        raise InputError("--device", f"must be {' or '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"CUDA is not available to this torch ({torch.__version__}); use --device cpu")
    return name


def resolve_precision(name: str | None, device: str) -> str:
    """``name``, or without one ``"bf16"`` on a GPU and ``"fp32"`` on the CPU (where bf16 is
    slower on most processors)."""
    if name is None:
        return "bf16" if device == "cuda" else "fp32"
    return name


def load_denoiser(path: str | os.PathLike | None = None, device: str = "cpu",
                  precision: str | None = None) -> TrainedDenoiser:
    """Load a model file written by ``cryoscore train`` onto ``device`` ("cpu" or "cuda"), to
    run at ``precision`` (:func:`resolve_precision`); without a path, the shipped default model."""
    precision = resolve_precision(precision, device)
    if path is None:
        with resources.as_file(DEFAULT_MODEL) as default_path:
            model, metadata = load_model(default_path)
        source = "the default model"
    else:
        model, metadata = load_model(path)
        source = str(path)
    # Module.to takes memory_format (torch's stubs do not say so)
    return TrainedDenoiser(model.to(device, memory_format=torch.channels_last),  # type: ignore[call-overload]
                           metadata, source, precision)


def _tiled_denoise_function(denoiser: TrainedDenoiser, tile_px: int, batch_size: int) -> DenoiseFunction:
    """``D(x, sigma)`` on a whole image (H, W) in noise units, evaluated tile by tile.

    Each batch of tiles (B, 1, h, w) goes to the model's device and its result comes back to
    the image's device. The forward passes take all their memory from the C heap, so the next
    tile reuses this one's activations (:func:`cryoscore.allocator.heap_allocations`).
    """
    net, device = denoiser.model.net, denoiser.device
    config = TilingConfig(tile_px=tile_px, halo_px=net.receptive_field_px, batch_size=batch_size)

    def denoise(image: torch.Tensor, sigma: float) -> torch.Tensor:
        level = torch.tensor([sigma], dtype=torch.float32, device=device)

        def network(batch: torch.Tensor) -> torch.Tensor:
            with heap_allocations(), torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(denoiser.precision),
                                                    enabled=denoiser.precision != "fp32"):
                result = denoiser.model(batch.to(device, memory_format=torch.channels_last),
                                        level.expand(len(batch)))
            return result.float().to(batch.device)

        return apply_tiled(network, image, config=config, multiple=net.required_multiple)

    return denoise


def _working_image(denoiser: TrainedDenoiser, image: np.ndarray, pixel_size_a: float | None,
                   halves_in_image: int) -> tuple[np.ndarray, Normalisation]:
    """``image`` (H, W) on the model's working grid (:meth:`TrainedDenoiser.working_scale`), and its
    noise-unit normalisation."""
    working = fourier_resample(image, denoiser.working_scale(image.shape, pixel_size_a).shape)
    return working, normalisation_for_image(working, halves_in_image)


def denoise_image(
    denoiser: TrainedDenoiser,
    image: np.ndarray,
    *,
    pixel_size_a: float | None = None,
    halves_in_image: int = 2,
    tile_px: int = DEFAULT_TILE_PX,
    batch_size: int = 1,
    level_factor: float = 1.0,
) -> np.ndarray:
    """The one-step Tweedie estimate of ``image`` (H, W), float32 in the input's units and grid.

    ``pixel_size_a`` (Angstrom) lets the model work at its own scale: an image finer than
    the model's pixel-size floor is Fourier-cropped to it and the estimate padded back
    (:mod:`cryoscore.pairs.scale`); without it the image is taken as it is.
    ``halves_in_image`` is 2 for a full frame sum, 1 for an even or odd half sum. Tiles of
    ``tile_px`` with a halo of the network's receptive field keep memory bounded and give
    the same result as whole-image inference. ``level_factor`` tells the network that many
    times the level :meth:`TrainedDenoiser.network_sigma` gives: above 1 it asks for a smoother
    estimate (:func:`background_image`).
    """
    working, normalisation = _working_image(denoiser, image, pixel_size_a, halves_in_image)
    denoise = _tiled_denoise_function(denoiser, tile_px, batch_size)
    level = level_factor * denoiser.network_sigma(normalisation.noise_sigma)
    estimate = denoise(torch.from_numpy(normalisation.apply(working)), level)
    return fourier_resample(normalisation.invert(estimate.numpy()), image.shape)


BACKGROUND_LEVEL_FACTOR = 2.0
"""How many times the usual noise level a model is told for :func:`background_image`."""


def background_image(denoiser: TrainedDenoiser, image: np.ndarray, *, pixel_size_a: float | None = None,
                     halves_in_image: int = 2, tile_px: int = DEFAULT_TILE_PX, batch_size: int = 1) -> np.ndarray:
    """A model's estimate of the background of ``image`` (H, W): ice, carbon, gradients, contamination.

    The one-step estimate for :data:`BACKGROUND_LEVEL_FACTOR` times the image's noise level
    (:func:`denoise_image`). Where particles are faint and sparse (simulated at the real
    EMPIAR-10146 set's contrast) the shipped model's posterior mean keeps the background and
    little of the particles, and told a higher level it drops more of them, so what it returns is
    what lies under them; where it keeps the particles (the crowded real set) the estimate holds
    part of them too (benchmarks/RESULTS.md, section 6, "Flattened micrographs"). Float32 in the
    input's units and grid.
    """
    return denoise_image(denoiser, image, pixel_size_a=pixel_size_a, halves_in_image=halves_in_image,
                         tile_px=tile_px, batch_size=batch_size, level_factor=BACKGROUND_LEVEL_FACTOR)


def flatten_image(denoiser: TrainedDenoiser, image: np.ndarray, *, pixel_size_a: float,
                  lowpass_a: float = FLATTEN_LOWPASS_A, halves_in_image: int = 2, tile_px: int = DEFAULT_TILE_PX,
                  batch_size: int = 1) -> np.ndarray:
    """``image`` (H, W) minus :func:`background_image`, low-passed at ``lowpass_a`` Angstrom: the
    particles on a flat background, for picking (``cryoscore denoise --flatten``).

    Linear in whatever of the particles the background estimate does not hold (not shrunk as in
    the posterior mean), with the shot noise of a low-pass at ``lowpass_a``; ``pixel_size_a``
    (Angstrom) is needed for the low-pass. Float32 in the input's units (its background level
    removed) and grid.
    """
    background = background_image(denoiser, image, pixel_size_a=pixel_size_a, halves_in_image=halves_in_image,
                                  tile_px=tile_px, batch_size=batch_size)
    return lowpass_filter(image - background, pixel_size_a, lowpass_a)


BACKGROUND_STRENGTH_TO_FLATTEN = 5.0
"""Above this median :func:`background_strength` of a set of micrographs, ``--flatten auto`` flattens them.
Measured on every micrograph of nine conditions (benchmarks/RESULTS.md section 6, "`--flatten auto`
measured again"): 0.67-1.97 (medians 0.72 and 0.79) on the real EMPIAR-10146 set and its simulated
stand-in, whose background is weak and where the posterior mean picks best on the real set; 12.2-65.7
(medians 14.0-55.5) on the seven simulated conditions with an ice gradient, carbon edge or contamination,
where flattening picks better or as well. Five lies midway between the two groups on a log scale."""


def background_strength_of(posterior_mean: np.ndarray, background: np.ndarray, *, pixel_size_a: float,
                           diameter_a: float) -> float:
    """How much a micrograph's background outweighs its particles, as the model sees them: the standard
    deviation of the ``background`` estimate (H, W) at wavelengths longer than two particle diameters
    (``diameter_a``, Angstrom: ice gradients, carbon edges, contamination) over that of what the
    ``posterior_mean`` (H, W) holds beyond the background at the particles' scales and longer
    (wavelengths from an eighth of a diameter). Low-passes without the images' edges ringing
    (:func:`~cryoscore.filters.lowpass_filter_nonperiodic`). Below 1 where the background is weak
    (the real EMPIAR-10146 set), tens where a gradient or carbon edge crosses the micrograph."""
    shortest_a, longest_a = particle_band_a(diameter_a)
    large_scale_background = lowpass_filter_nonperiodic(background, pixel_size_a, longest_a)
    kept = lowpass_filter_nonperiodic(posterior_mean - background, pixel_size_a, shortest_a)
    return float(large_scale_background.std() / max(float(kept.std()), np.finfo(np.float32).tiny))


def background_strength(denoiser: TrainedDenoiser, image: np.ndarray, *, pixel_size_a: float, diameter_a: float,
                        halves_in_image: int = 2, tile_px: int = DEFAULT_TILE_PX, batch_size: int = 1) -> float:
    """:func:`background_strength_of` the posterior mean of ``image`` (H, W) (:func:`denoise_image`) and the
    model's background estimate (:func:`background_image`), for particles ``diameter_a`` Angstrom across.
    Costs two forward passes."""
    options: dict[str, Any] = {"pixel_size_a": pixel_size_a, "halves_in_image": halves_in_image,
                               "tile_px": tile_px, "batch_size": batch_size}
    return background_strength_of(denoise_image(denoiser, image, **options), background_image(denoiser, image, **options),
                                  pixel_size_a=pixel_size_a, diameter_a=diameter_a)


def should_flatten(strengths: Sequence[float]) -> bool:
    """Whether micrographs of one dataset, with these :func:`background_strength` values, are better
    picked flattened (:func:`flatten_image`) than as the posterior mean (``--flatten auto``): one choice
    for the whole set, by the median, so that a picker sees one kind of image."""
    return float(np.median(strengths)) > BACKGROUND_STRENGTH_TO_FLATTEN


def sample_image(
    denoiser: TrainedDenoiser,
    image: np.ndarray,
    sampler: SamplerConfig,
    *,
    pixel_size_a: float | None = None,
    halves_in_image: int = 2,
    tile_px: int = DEFAULT_TILE_PX,
    batch_size: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and per-pixel standard deviation of ``image`` (H, W) over stochastic samples, input units.

    ``sampler.samples`` draws of the reverse-diffusion sampler (``infer.sampler``); the
    standard deviation map is zero for a single draw. Needs a model trained over a range
    of noise levels (``score`` or ``guided``). ``pixel_size_a`` as for :func:`denoise_image`;
    the standard deviation is that of the working-scale samples, interpolated to the input grid.
    """
    denoiser.check_can_sample()
    working, normalisation = _working_image(denoiser, image, pixel_size_a, halves_in_image)
    mean, std = sample_mean_and_std(
        _tiled_denoise_function(denoiser, tile_px, batch_size),
        torch.from_numpy(normalisation.apply(working)),
        normalisation.noise_sigma,
        HALF_NOISE_SIGMA,
        torch.from_numpy(relative_noise_map(working)),
        sampler,
    )
    std_input_units = (std.numpy() * normalisation.scale).astype(np.float32)
    return (fourier_resample(normalisation.invert(mean.numpy()), image.shape),
            np.maximum(fourier_resample(std_input_units, image.shape), 0))
