"""The settings of training and reconstruction, as frozen and validated objects that import without torch.

The command line builds these from its arguments and takes its defaults and help from
them (``cryoscore train --help``, ``cryoscore reconstruct --help``), the library runs on them,
and a trained model records them (``train_config`` in its metadata). Each default is
written once, here.

- :class:`UNetConfig`: the denoising network's shape (:mod:`cryoscore.nn.unet`);
- :class:`NoiseLevels`: the noise levels of score matching (:mod:`cryoscore.objectives`);
- :class:`GuidanceConfig`: how a reference density guides training (:mod:`cryoscore.pairs.guidance`);
- :class:`TrainConfig`: one training run (:mod:`cryoscore.train`);
- :class:`PoseSearchConfig` and :class:`ReconstructionSettings`: how picked particles are
  aligned and reconstructed (:mod:`cryoscore.reconstruct.pipeline`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

METHODS = ("n2n", "score", "guided")
"""The training objectives (:func:`cryoscore.objectives.build_objective`)."""

DEVICES = ("cpu", "cuda")
"""Where training, denoising and picking run (every ``--device`` flag and ``device`` setting)."""

BACKGROUND_METHODS = ("median", "gaussian")
"""How a micrograph's background is removed before picking (:func:`cryoscore.pick.peaks.flatten_background`):
a median that follows carbon edges, or a Gaussian low-pass. The first is the learned picker's default."""


class SettingError(ValueError):
    """A setting out of its range: ``field`` is the dataclass field (``strength``), ``problem``
    what is wrong with it. The command line names its own flag instead (``--guidance-strength``)."""

    def __init__(self, owner: str, field: str, problem: str):
        self.owner, self.field, self.problem = owner, field, problem
        super().__init__(f"{owner}.{field}: {problem}")


def check_fields(owner: str, checks: dict[str, tuple[bool, str]]) -> None:
    """SettingError for the first ``field -> (holds, problem)`` whose condition does not hold."""
    for name, (holds, problem) in checks.items():
        if not holds:
            raise SettingError(owner, name, problem)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`NoiseConditionedUNet`.

    Attributes
    ----------
    base_channels:
        Feature channels at the finest U-Net level (after pixel-unshuffling).
    depth:
        Number of 2x down-sampling levels below the finest one.
    input_unshuffle:
        Pixel-unshuffle factor ``f`` (1, 2 or 4) applied to the input: the U-Net runs at
        1/f of the input resolution on f^2 channels, and pixel-shuffles back at the end.
    noise_embedding_dim:
        Width of the sinusoidal noise embedding and of the MLP that maps it (even).
    blocks_per_level:
        Residual blocks (two 3x3 convolutions each) per level, in the encoder, the bottleneck
        and the decoder alike.
    max_channels:
        Cap on the channel count, which otherwise doubles at every level.
    """

    base_channels: int = 16
    depth: int = 4
    input_unshuffle: int = 1
    noise_embedding_dim: int = 64
    blocks_per_level: int = 1
    max_channels: int = 128

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{item.name} must be an integer, got {value!r}")
        if self.base_channels < 1 or self.blocks_per_level < 1:
            raise ValueError("base_channels and blocks_per_level must be at least 1")
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")
        if self.input_unshuffle not in (1, 2, 4):
            raise ValueError(f"input_unshuffle must be 1, 2 or 4, got {self.input_unshuffle!r}")
        if self.noise_embedding_dim < 2 or self.noise_embedding_dim % 2:
            raise ValueError(f"noise_embedding_dim must be even and >= 2, got {self.noise_embedding_dim}")
        if self.max_channels < self.base_channels:
            raise ValueError("max_channels must be >= base_channels")

    @property
    def required_multiple(self) -> int:
        """Image edges the network takes are multiples of this many pixels."""
        return self.input_unshuffle * 2**self.depth

    def channels(self, level: int) -> int:
        """Feature channels at U-Net level ``level`` (0 = finest, ``depth`` = bottleneck)."""
        return min(self.base_channels * 2**level, self.max_channels)

    def to_dict(self) -> dict[str, int]:
        """JSON-serialisable form; ``UNetConfig(**d)`` rebuilds it."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class NoiseLevels:
    """Distribution of the noise added for score matching.

    ``ln(sigma_add) ~ Normal(log_mean, log_std)``, and a ``zero_fraction`` of the samples get
    no added noise so the observed level itself is trained.
    """

    log_mean: float = 0.0
    log_std: float = 1.2
    zero_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.log_std < 0 or not 0 <= self.zero_fraction <= 1:
            raise ValueError("log_std must be >= 0 and zero_fraction in [0, 1]")


@dataclass(frozen=True)
class GuidanceConfig:
    """How a reference density guides training.

    Attributes
    ----------
    reference:
        An MRC map, a PDB/mmCIF model, or a built-in specimen name (``simulate.volume``).
    strength:
        ``lambda`` (``--guidance-strength``; bench's ``guidance_strength``), the weight of the guided
        loss against the Noise2Noise score loss;
        0 makes ``guided`` identical to ``score``. Where the network cannot tell synthetic
        from real data, it keeps about ``1 / (1 + lambda)`` of the low-frequency background
        Noise2Noise alone would keep; 3 measured better than 1 on simulated data (README).
    resolution_a:
        The reference is trusted to this resolution, Angstrom: the guided loss acts only on
        longer wavelengths (Gaussian low-pass, transfer 1/sqrt(2) at ``1/resolution_a``).
    defocus_range_um:
        Defocus of the synthetic images, drawn uniformly, micrometres (underfocus positive).
    area_fraction:
        Fraction of a synthetic crop covered by particles (sets how many are placed).
    voltage_kv, cs_mm, amplitude_contrast, bfactor_a2:
        Microscope of the synthetic images (RELION conventions, as ``simulate.ctf``).
    """

    reference: str
    strength: float = 3.0
    resolution_a: float = 25.0
    defocus_range_um: tuple[float, float] = (1.0, 2.5)
    area_fraction: float = 0.2
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    bfactor_a2: float = 60.0

    def __post_init__(self) -> None:
        low, high = self.defocus_range_um
        check_fields("GuidanceConfig", {
            "strength": (self.strength >= 0, f"must be >= 0, got {self.strength:g}"),
            "resolution_a": (self.resolution_a > 0, f"must be > 0 A, got {self.resolution_a:g}"),
            "defocus_range_um": (0 < low <= high, f"needs 0 < min <= max, got {low:g} {high:g}"),
            "area_fraction": (0 < self.area_fraction <= 0.5, f"must lie in (0, 0.5], got {self.area_fraction:g}"),
        })

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``crop_px`` must be a multiple of the network's required multiple.

    ``guidance`` is required by ``method="guided"`` and refused by the other methods.
    ``min_pixel_size_a`` is the model's pixel-size floor (:mod:`cryoscore.pairs.scale`):
    training micrographs finer than it are Fourier-cropped to it, and so are the micrographs
    the model later denoises; None trains on the micrographs as they are (one pixel size).
    ``ema_half_life_steps``: when > 0, the saved model is an exponential moving average of
    the weights over the run (:class:`WeightAverage`) instead of the last step's weights.
    ``max_grad_norm``: each step's gradient is scaled down to at most this norm (over all
    weights) before the optimiser step; None: not clipped. Without it, all three networks of
    the size sweep (benchmarks/RESULTS.md, section 6) had loss spikes that left their last
    weights worse than earlier ones; a trained model's gradient norm is about 2 (median).
    """

    method: str = "score"
    steps: int = 2000
    batch_size: int = 8
    crop_px: int = 256
    learning_rate: float = 5e-4
    seed: int = 0
    checkpoint_every: int = 250
    unet: UNetConfig = field(default_factory=UNetConfig)
    noise_levels: NoiseLevels = field(default_factory=NoiseLevels)
    guidance: GuidanceConfig | None = None
    min_pixel_size_a: float | None = None
    ema_half_life_steps: float = 0.0
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        multiple = self.unet.required_multiple
        check_fields("TrainConfig", {
            "method": (self.method in METHODS, f"must be one of {', '.join(METHODS)}, got {self.method!r}"),
            "guidance": ((self.method == "guided") == (self.guidance is not None),
                         "the guided method needs a reference, and only it takes one"),
            "steps": (self.steps >= 1, f"must be >= 1, got {self.steps}"),
            "batch_size": (self.batch_size >= 1, f"must be >= 1, got {self.batch_size}"),
            "checkpoint_every": (self.checkpoint_every >= 1, f"must be >= 1, got {self.checkpoint_every}"),
            "seed": (self.seed >= 0, f"must be >= 0, got {self.seed}"),
            "learning_rate": (self.learning_rate > 0, f"must be > 0, got {self.learning_rate:g}"),
            "max_grad_norm": (self.max_grad_norm is None or self.max_grad_norm > 0,
                              f"must be > 0, got {self.max_grad_norm}"),
            "ema_half_life_steps": (self.ema_half_life_steps >= 0,
                                    f"must be >= 0 steps, got {self.ema_half_life_steps}"),
            "min_pixel_size_a": (self.min_pixel_size_a is None or self.min_pixel_size_a > 0,
                                 f"must be > 0 A, got {self.min_pixel_size_a}"),
            "crop_px": (self.crop_px >= multiple and self.crop_px % multiple == 0,
                        f"must be a positive multiple of {multiple} px for this network, got {self.crop_px}"),
        })

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PoseSearchConfig:
    """How finely orientations and translations are searched (see :mod:`cryoscore.reconstruct.poses`).

    Attributes
    ----------
    coarse_step_deg:
        Angular step of the global SO(3) grid, degrees (10: 14832 orientations without
        symmetry, 1152 with O).
    local_steps_deg:
        Angular steps of the successive local refinements, degrees, each finer than the
        last; at least one.
    shift_step_px:
        Translation step of the global search, pixels of the particle box; halved for the
        candidates and again in every local refinement.
    global_resolution_over_diameter:
        The global search and the first local round compare frequencies up to
        ``1 / (this * diameter)`` (at most the reference's band): coarse enough that a
        grid point 5-7 degrees off still correlates, fine enough to tell poses apart.
    n_candidates:
        Orientations per particle kept from the global search and scored on the full band.
    n_refined:
        Poses per particle (the best candidates) refined in the first local round.
    """

    coarse_step_deg: float = 10.0
    local_steps_deg: tuple[float, ...] = (5.0, 2.5, 1.25)
    shift_step_px: float = 2.0
    global_resolution_over_diameter: float = 1 / 6
    n_candidates: int = 32
    n_refined: int = 4

    def __post_init__(self) -> None:
        steps = (self.coarse_step_deg, *self.local_steps_deg)
        check_fields("PoseSearchConfig", {
            "coarse_step_deg": (0 < self.coarse_step_deg <= 90,
                                f"must lie in (0, 90] degrees, got {self.coarse_step_deg:g}"),
            "local_steps_deg": (len(self.local_steps_deg) > 0 and all(0 < finer < coarser for coarser, finer
                                                                       in zip(steps, steps[1:])),
                                f"need at least one step, each finer than the one before, got {steps}"),
            "shift_step_px": (self.shift_step_px > 0, f"must be > 0, got {self.shift_step_px:g}"),
            "global_resolution_over_diameter": (self.global_resolution_over_diameter > 0,
                                                f"must be > 0, got {self.global_resolution_over_diameter:g}"),
            "n_refined": (1 <= self.n_refined <= self.n_candidates,
                          f"need 1 <= n_refined <= n_candidates, got {self.n_refined} and {self.n_candidates}"),
        })


MIN_BOX_PX = 16
"""Smallest processing box of a reconstruction, pixels."""
POINT_GROUP = re.compile(r"[CD][1-9][0-9]*|O", re.IGNORECASE)
"""The point groups reconstruction supports (:func:`cryoscore.reconstruct.poses.parse_symmetry`)."""


@dataclass(frozen=True)
class ReconstructionSettings:
    """How particles are boxed, aligned and reconstructed; validated when made (SettingError
    naming the field, which ``cryoscore reconstruct`` turns into its flag).

    Attributes
    ----------
    box_px:
        Processing box, pixels (even, at least 16): particles are boxed at
        ``box_over_diameter`` times the diameter and Fourier-cropped to this box when larger.
    box_over_diameter:
        Extraction box edge over the particle diameter.
    reference_resolution_a:
        Resolution, Angstrom, beyond which the reference is not used for alignment.
    max_shift_over_diameter:
        Translation search range as a fraction of the diameter.
    max_particles:
        At most this many particles (at least 2), drawn at random (seeded) when there are more.
    seed:
        Seeds the particle subset and the half split.
    symmetry:
        Point group of the particle (Cn, Dn about z, O; RELION's axes); None = C1. The
        global search covers one asymmetric unit and each half map is averaged over the group.
    search:
        Pose search steps (:class:`PoseSearchConfig`).
    wiener_constant:
        Regulariser of the CTF correction (see :mod:`cryoscore.reconstruct.insert`).
    """

    box_px: int = 64
    box_over_diameter: float = 1.5
    reference_resolution_a: float = 25.0
    max_shift_over_diameter: float = 0.1
    max_particles: int = 5000
    seed: int = 0
    symmetry: str | None = None
    search: PoseSearchConfig = PoseSearchConfig()
    wiener_constant: float = 1.0

    def __post_init__(self) -> None:
        check_fields("ReconstructionSettings", {
            "box_px": (self.box_px >= MIN_BOX_PX and self.box_px % 2 == 0,
                       f"the processing box must be an even number >= {MIN_BOX_PX} px, got {self.box_px}"),
            "box_over_diameter": (self.box_over_diameter >= 1, f"must be >= 1, got {self.box_over_diameter:g}"),
            "reference_resolution_a": (self.reference_resolution_a > 0,
                                       f"must be > 0 A, got {self.reference_resolution_a:g}"),
            "max_shift_over_diameter": (self.max_shift_over_diameter >= 0,
                                        f"must be >= 0, got {self.max_shift_over_diameter:g}"),
            "max_particles": (self.max_particles >= 2,
                              f"two half maps need at least 2 particles, got {self.max_particles}"),
            "seed": (self.seed >= 0, f"must be >= 0, got {self.seed}"),
            "wiener_constant": (self.wiener_constant > 0, f"must be > 0, got {self.wiener_constant:g}"),
            "symmetry": (self.symmetry is None or POINT_GROUP.fullmatch(self.symmetry) is not None,
                         f"must be Cn, Dn or O (C1 for none), got {self.symmetry!r}"),
        })
