"""What a benchmark runs: datasets x denoisers x judges, from a TOML file or built in.

A benchmark config file (TOML) looks like this; every key is optional except the
datasets, and paths (micrographs, coordinates, and a specimen, decoy or reference that is not
a built-in name) are relative to the file's folder unless absolute::

    denoisers = ["raw", "lowpass", "n2n", "score", "guided", "default", "flattened", "topaz"]   # + "adapted"; topaz: if installed
                                   # guided judges guided-decoy too where there is a decoy; "guided-decoy" alone: the decoy only
    judges = ["learned", "pixel", "blob", "template", "reconstruction"]   # learned: the primary judge; + "classes"
    lowpass_a = 20.0

    [learned]             # the learned picker judge: k-fold over each test set's micrographs
    folds = 5
    seeds = [0, 1, 2]
    steps = 800                    # picker training steps (default: the picker's own, 800)
    label_budgets = [1, 2]         # also train on 1 and 2 annotated micrographs per fold
    bootstrap = 1000               # replicates of the 95 % intervals
    workers = 2                    # pickers trained at a time, each in a single-threaded process
                                   # (default 1; the numbers are those of one thread: cryoscore bench --workers)
    background = "median"          # how the picker removes the background: "median" (default) or "gaussian"

    [classes]             # the 2D class judge (with "classes" in judges and a template density)
    classes = 4
    iterations = 6
    half_iterations = 3
    max_particles = 400            # picks classified per denoiser, drawn at random
    box_px = 64

    [training]            # one model per learned denoiser and specimen
    steps = 400
    batch_size = 8
    crop_px = 128
    guidance_strength = 3.0
    reference_resolution_a = 25.0

    [simulation]          # shared by every simulated dataset
    pixel_size_a = 3.0
    size_px = 512
    train_micrographs = 4
    test_micrographs = 3
    empty_micrographs = 2          # particle-free micrographs for the bias control
    background_strength = 1.5
    ice_spectral_exponent = 4.0    # the ice's power spectrum falls as k^-exponent...
    ice_shortest_wavelength_a = 600.0   # ...down to this wavelength (simulate.background)
    contrast_scale = 1.0           # fraction of the weak-phase contrast the particles keep
                                   # (about 0.2 matches the real EMPIAR-10146 micrographs)

    [[simulated]]         # one dataset per dose; models are shared across doses
    specimen = "apoferritin"       # built-in name, MRC map or atomic model
    doses = [12.0, 30.0]
    decoy = "elongated"            # guide with a wrong specimen too (bias control)
    seed_index = 0                 # seeds its datasets (default: its place among [[simulated]], from 0)
    template = "shell:120:80"      # the template judge's density: another model of the specimen,
                                   # never the guidance reference (no template: no template judge)

    [[real]]              # micrographs with coordinate files (STAR/BOX/CSV, same stems), judged at
                          # their own pixel size; learned denoisers train on recorrupted single-image pairs
    name = "apoferritin-empiar10146"
    micrographs = "../shared/data/apoferritin-empiar10146/micrographs"
    coordinates = "../shared/data/apoferritin-empiar10146/coordinates"
    pixel_size_a = 1.85
    diameter_a = 120.0
    reference = "apoferritin"      # guidance and reconstruction reference (optional)
    decoy = "elongated"            # guide with a wrong specimen too (bias control; optional)
    template = "shell:120:80"      # the template judge's density, not the reference (optional)
    symmetry = "O"                 # the particle's point group, for reconstruction (optional; C1)
    ctf = "ctf.star"               # each micrograph's CTF, e.g. from cryoscore ctf (optional;
                                   # without it the reconstruction judge does no CTF correction)

Lengths are in Angstrom, doses in electrons per square Angstrom over the movie. Each dataset
works in ``OUTDIR/work/NAME``: ``NAME`` is a real dataset's ``name``, which must be a plain
directory name, or a specimen's built-in name or file stem (:func:`work_dir_name`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, overload

from cryoscore.errors import InputError
from cryoscore.settings import BACKGROUND_METHODS, DEVICES, POINT_GROUP, GuidanceConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DENOISERS = ("raw", "lowpass", "n2n", "score", "guided", "guided-decoy", "default", "flattened", "adapted", "topaz")
"""Every denoiser a benchmark can judge: ``guided`` brings ``guided-decoy`` (guided by a dataset's
decoy, the bias control) wherever a decoy is given, ``guided-decoy`` listed without ``guided`` trains
and judges the decoy model alone; ``default`` is the model shipped with cryoscore,
``flattened`` the micrograph minus that model's background estimate, low-passed (``denoise
--flatten``), ``adapted`` that model after ``denoise --adapt`` on the dataset's training
micrographs; ``topaz`` only where the ``topaz`` command is installed."""
DEFAULT_DENOISERS = tuple(name for name in DENOISERS if name not in ("adapted", "guided-decoy"))
"""What a benchmark judges unless told (``adapted`` costs minutes of fine-tuning per dataset;
``guided`` brings ``guided-decoy``)."""
JUDGES = ("learned", "pixel", "blob", "template", "reconstruction", "classes")
"""``learned``: the learned picker, k-fold (the primary judge when enabled); ``blob``,
``template``: the fixed pickers; ``pixel``: metrics against the clean image; ``classes``: 2D
classes of the learned picker's picks (of the blob picks without ``learned``), matched against
the dataset's ``template`` density."""
DEFAULT_JUDGES = tuple(name for name in JUDGES if name != "classes")
"""What a benchmark judges unless told (``classes`` costs minutes of classification per denoiser)."""


def _check_device(section: str, device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"{section} device must be {' or '.join(DEVICES)}, got {device!r}")


@dataclass(frozen=True)
class TrainingSettings:
    """How each learned denoiser is trained (``cryoscore.train.TrainConfig`` fields), and on
    which ``device`` ("cpu" or "cuda") it trains and denoises."""

    steps: int = 400
    batch_size: int = 8
    crop_px: int = 128
    seed: int = 0
    guidance_strength: float = GuidanceConfig.strength
    reference_resolution_a: float = GuidanceConfig.resolution_a
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_device("[training]", self.device)


@dataclass(frozen=True)
class LearnedJudgeSettings:
    """How the learned picker judges a denoiser (:mod:`cryoscore.bench.crossval`).

    ``folds``: k of the k-fold split over a test set's micrographs (at most their
    number); ``seeds``: one picker training per seed and fold; ``steps``, ``batch_size``,
    ``crop_px``: the picker's training (None: :class:`~cryoscore.pick.learned_training.PickerTraining`'s
    defaults); ``label_budgets``: numbers of annotated training micrographs per fold to
    judge with as well (AP against labels); ``bootstrap``: replicates of the interval of
    coverage ``confidence``; ``device``: where the pickers train and pick ("cpu" or "cuda");
    ``workers``: pickers trained at a time, each in a single-threaded process (CPU only; 1: one
    after another in this process), which changes no number against a single-threaded run;
    ``background``: how the pickers' working images lose their background (one of
    :data:`~cryoscore.settings.BACKGROUND_METHODS`; runs before it existed used ``"gaussian"``).
    """

    folds: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = None
    batch_size: int | None = None
    crop_px: int | None = None
    label_budgets: tuple[int, ...] = ()
    bootstrap: int = 1000
    confidence: float = 0.95
    device: str = "cpu"
    workers: int = 1
    background: str = BACKGROUND_METHODS[0]

    def __post_init__(self) -> None:
        _check_device("[learned]", self.device)
        if self.background not in BACKGROUND_METHODS:
            raise ValueError(f"[learned] background must be one of {', '.join(BACKGROUND_METHODS)}, "
                             f"got {self.background!r}")
        if self.workers < 1 or (self.workers > 1 and self.device != "cpu"):
            raise ValueError(f"[learned] workers must be >= 1, and 1 on a GPU; got {self.workers} on {self.device}")
        if self.folds < 2 or not self.seeds or self.bootstrap < 1 or not 0 < self.confidence < 1:
            raise ValueError(f"[learned] needs folds >= 2, at least one seed, bootstrap >= 1 and 0 < confidence < 1; "
                             f"got {self}")
        if any(budget < 1 for budget in self.label_budgets):
            raise ValueError(f"[learned] label budgets must be >= 1 micrograph, got {self.label_budgets}")


@dataclass(frozen=True)
class ClassJudgeSettings:
    """How the 2D class judge classifies each denoiser's picks (:func:`~cryoscore.bench.judges.attach_classes`):
    ``classes``, ``iterations``, ``half_iterations`` as ``cryoscore classify2d`` takes them; at most
    ``max_particles`` picks (drawn at random), boxed at ``box_px``."""

    classes: int = 4
    iterations: int = 6
    half_iterations: int = 3
    max_particles: int = 400
    box_px: int = 64

    def __post_init__(self) -> None:
        if min(self.classes, self.iterations, self.half_iterations) < 1 or self.max_particles < self.classes:
            raise ValueError(f"[classes] needs classes, iterations, half_iterations >= 1 and max_particles >= classes; "
                             f"got {self}")
        if self.box_px < 16 or self.box_px % 2:
            raise ValueError(f"[classes] box_px must be an even number >= 16, got {self.box_px}")


@dataclass(frozen=True)
class SimulationSettings:
    """What every simulated dataset shares; sizes in pixels, lengths in Angstrom."""

    pixel_size_a: float = 3.0
    size_px: int = 512
    train_micrographs: int = 4
    test_micrographs: int = 3
    empty_micrographs: int = 2
    background_strength: float = 1.5
    ice_spectral_exponent: float = 4.0
    ice_shortest_wavelength_a: float = 600.0
    particle_area_fraction: float = 0.15
    contrast_scale: float = 1.0
    defocus_range_um: tuple[float, float] = (1.0, 2.5)


@dataclass(frozen=True)
class SimulatedSpecimen:
    """One specimen simulated at several doses; ``decoy`` is another specimen's density
    used as a wrong guidance reference (None: no decoy control for this specimen);
    ``template`` the density the template judge correlates with (see :class:`RealDataset`);
    ``seed_index`` the index its datasets are seeded by (None: its position among the
    ``[[simulated]]`` entries, from 0), so a config holding some of another's specimens, e.g. the
    default benchmark split over several processes, simulates the same micrographs as that one."""

    specimen: str
    doses: tuple[float, ...] = (12.0, 30.0)
    decoy: str | None = None
    template: str | None = None
    seed_index: int | None = None

    def __post_init__(self) -> None:
        _check_template(self.template, self.specimen, f"[[simulated]] {self.specimen}")
        if self.seed_index is not None and self.seed_index < 0:
            raise ValueError(f"[[simulated]] {self.specimen}: seed_index must be >= 0, got {self.seed_index}")


@dataclass(frozen=True)
class RealDataset:
    """Real micrographs with annotated particle coordinates (one file per micrograph);
    ``ctf``: a micrograph STAR file with each one's CTF (e.g. from ``cryoscore ctf``), with
    which the reconstruction judge corrects the CTF; ``decoy``: a wrong guidance reference, for the
    decoy control as on simulated data (with ``reference`` only).

    ``symmetry``: the particle's point group (Cn, Dn or O), for the reconstruction judge, which
    on real data aligns to ``template`` when given (else ``reference``) and, without ``ctf``,
    reconstructs the particles without CTF correction.

    ``template``: the density the template judge correlates with (a specimen as
    :func:`~cryoscore.simulate.volume.load_specimen` takes it). It must be another density
    than the guidance reference (the simulated specimen's own map, or ``reference``), or the
    template judge would favour the guided denoiser that learned that very map: e.g. an
    independent low-resolution model (``shell:120:80`` for apoferritin) or a map from
    elsewhere. None: no template judge on this dataset."""

    name: str
    micrographs: Path
    coordinates: Path
    pixel_size_a: float
    diameter_a: float
    reference: str | None = None
    ctf: Path | None = None
    template: str | None = None
    decoy: str | None = None
    symmetry: str | None = None

    def __post_init__(self) -> None:
        _check_template(self.template, self.reference, f"[[real]] {self.name}")
        if self.symmetry is not None and not POINT_GROUP.fullmatch(self.symmetry):
            raise ValueError(f"[[real]] {self.name}: symmetry must be Cn, Dn or O, got {self.symmetry!r}")
        if self.decoy is not None and self.reference is None:
            raise ValueError(f"[[real]] {self.name}: a decoy needs a reference (the decoy replaces it in guided training)")


def _check_template(template: str | None, reference: str | None, where: str) -> None:
    if template is not None and reference is not None and Path(template) == Path(reference):
        raise ValueError(f"{where}: the template {template!r} is the guidance reference; the template judge "
                         "needs another density of the specimen (or no template)")


@dataclass(frozen=True)
class BenchConfig:
    """A whole benchmark: datasets x denoisers x judges."""

    simulated: tuple[SimulatedSpecimen, ...] = ()
    real: tuple[RealDataset, ...] = ()
    denoisers: tuple[str, ...] = DEFAULT_DENOISERS
    judges: tuple[str, ...] = DEFAULT_JUDGES
    lowpass_a: float = 20.0
    training: TrainingSettings = field(default_factory=TrainingSettings)
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    learned: LearnedJudgeSettings = field(default_factory=LearnedJudgeSettings)
    classes: ClassJudgeSettings = field(default_factory=ClassJudgeSettings)

    def __post_init__(self) -> None:
        unknown = [name for name in self.denoisers if name not in DENOISERS]
        unknown += [name for name in self.judges if name not in JUDGES]
        if unknown:
            raise ValueError(f"unknown denoiser or judge: {', '.join(unknown)} "
                             f"(denoisers: {', '.join(DENOISERS)}; judges: {', '.join(JUDGES)})")
        if "raw" not in self.denoisers:
            raise ValueError("denoisers must include raw: every gain is measured against it")
        if not self.simulated and not self.real:
            raise ValueError("a benchmark needs at least one [[simulated]] or [[real]] dataset")
        simulation = self.simulation
        if self.training.steps < 1 or min(simulation.train_micrographs, simulation.test_micrographs,
                                          simulation.empty_micrographs) < 1:
            raise ValueError("training steps and train/test/empty micrographs must be >= 1 "
                             "(the particle-free micrographs are the bias control)")
        if not 0 < simulation.contrast_scale <= 1:
            raise ValueError("[simulation] contrast_scale must lie in (0, 1]")
        for dataset in self.real:
            if work_dir_name(dataset.name) != dataset.name:
                raise ValueError(f"[[real]] name {dataset.name!r} must be a plain directory name "
                                 "(letters, digits, '.', '-', '_'); it names the dataset's work directory")
        names = [work_dir_name(specimen.specimen) for specimen in self.simulated] + [d.name for d in self.real]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"two datasets would share the work directory {repeated[0]!r}; rename one")

    def to_dict(self) -> dict[str, Any]:
        return json_ready(dataclasses.asdict(self))

    def with_absolute_paths(self) -> BenchConfig:
        """This config with every file path absolute and normalised (from the current directory;
        built-in specimen names as they are): the same for two spellings of one config file's path,
        which :func:`load_bench_config` joins to the paths inside it."""
        real = tuple(dataclasses.replace(dataset, micrographs=Path(os.path.abspath(dataset.micrographs)),
                                         coordinates=Path(os.path.abspath(dataset.coordinates)),
                                         ctf=None if dataset.ctf is None else Path(os.path.abspath(dataset.ctf)),
                                         reference=_absolute(dataset.reference), template=_absolute(dataset.template),
                                         decoy=_absolute(dataset.decoy))
                     for dataset in self.real)
        simulated = tuple(dataclasses.replace(specimen, specimen=_absolute(specimen.specimen),
                                              decoy=_absolute(specimen.decoy), template=_absolute(specimen.template))
                          for specimen in self.simulated)
        return dataclasses.replace(self, real=real, simulated=simulated)


def work_dir_name(label: str) -> str:
    """The directory under the work directory for a dataset ``label`` (a real dataset's name, or a
    specimen: a built-in name, a map or a model path): the label's file name without its suffix,
    with anything but letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``; never empty or a
    relative step, so no label writes outside the work directory."""
    name = Path(label).name
    stem = Path(name).stem if Path(name).suffix else name
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip(".")
    return safe or "dataset"


def _file_spec(spec: str | None, path_of: Callable[[str], str]) -> str | None:
    """A specimen, reference, template or decoy with ``path_of`` applied if it names a file; ``None`` and
    built-in names as they are."""
    from cryoscore.simulate.procedural import is_generated_specimen

    return spec if spec is None or is_generated_specimen(spec) else path_of(spec)


def _relative_to(base: Path, spec: str | None) -> str | None:
    """A specimen or reference as the config file means it: a built-in name as it is, a file path
    relative to ``base`` (the config file's folder) unless absolute."""
    return _file_spec(spec, lambda path: path if Path(path).is_absolute() else str(base / path))


@overload
def _absolute(spec: str) -> str: ...
@overload
def _absolute(spec: None) -> None: ...
def _absolute(spec: str | None) -> str | None:
    """A specimen or reference with its file path absolute and normalised; a built-in name as it is."""
    return _file_spec(spec, os.path.abspath)


def json_ready(value: Any) -> Any:
    """``value`` with paths as strings and tuples as lists, for JSON."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return str(value) if isinstance(value, Path) else value


INDEPENDENT_APOFERRITIN = "shell:120:80"
"""The template judge's apoferritin: a featureless hollow sphere of its outer and cavity diameters,
independent of the built-in 24-mer that guidance uses (none of its subunits)."""

QUICK_CONFIG = BenchConfig(
    simulated=(SimulatedSpecimen("apoferritin", doses=(15.0,), decoy="elongated"),),
    judges=("learned", "pixel", "blob", "reconstruction"),
    training=TrainingSettings(steps=30, batch_size=4, crop_px=64),
    simulation=SimulationSettings(size_px=256, train_micrographs=2, test_micrographs=2, empty_micrographs=1),
    learned=LearnedJudgeSettings(folds=2, steps=15, batch_size=4, crop_px=48, bootstrap=200),
)
"""``cryoscore bench --quick``: one specimen, one dose, a few training steps (a smoke run)."""

DEFAULT_CONFIG = BenchConfig(
    simulated=(
        SimulatedSpecimen("apoferritin", doses=(20.0, 240.0), decoy="elongated", template=INDEPENDENT_APOFERRITIN),
        SimulatedSpecimen("elongated", doses=(180.0,), decoy="apoferritin"),
        SimulatedSpecimen("small", doses=(60.0,), decoy="apoferritin"),
    ),
    simulation=SimulationSettings(test_micrographs=9, contrast_scale=0.2, background_strength=0.1),
    learned=LearnedJudgeSettings(folds=3, steps=800),
)
"""The default simulated benchmark: three specimens at the real EMPIAR-10146 set's signal level
(particles at a fifth of the weak-phase contrast, ice at a tenth of the simulator's default
strength: the real set's band powers, benchmarks/RESULTS.md section 6), with a carbon edge
and a contamination blob, at doses where the converged (800-step) learned picker on the
raw micrographs is neither blind nor saturated: apoferritin at 20 e/A^2 (raw AP 0.61), the
elongated particle at 180 (0.57; 0.23 at 60), the small one at 60 (0.59); apoferritin at 240
e/A^2 (0.99, the signal of a full-contrast particle at about 10 e/A^2) is the easy no-harm
condition. Each condition has 9 test micrographs, so each of the 3 folds' pickers trains on 6
annotated micrographs, as a user who annotates 5-10 would (calibration: RESULTS.md section 2).
The learned judge trains each picker for its converged 800 steps, 3 folds x 3 seeds: about 250
picker trainings of about 2 minutes on one CPU thread, so most of a day on 2 cores;
``--device cuda`` takes the pickers to a GPU."""


def _section(table: dict[str, Any], cls: type, source: Path, where: str) -> Any:
    names = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise InputError(source, f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in table.items()})


def load_bench_config(path: str | Path) -> BenchConfig:
    """Read a benchmark TOML file (see the module docstring); InputError on any problem."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "no such benchmark config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid TOML ({error})") from None
    base = path.parent
    try:
        real = []
        for index, entry in enumerate(table.pop("real", [])):
            dataset = _section(entry, RealDataset, path, f"[[real]] #{index + 1}")
            real.append(dataclasses.replace(dataset, micrographs=base / dataset.micrographs,
                                            coordinates=base / dataset.coordinates,
                                            reference=_relative_to(base, dataset.reference),
                                            template=_relative_to(base, dataset.template),
                                            decoy=_relative_to(base, dataset.decoy),
                                            ctf=None if dataset.ctf is None else base / dataset.ctf))
        simulated = []
        for index, entry in enumerate(table.pop("simulated", [])):
            specimen = _section(entry, SimulatedSpecimen, path, f"[[simulated]] #{index + 1}")
            simulated.append(dataclasses.replace(specimen, specimen=_relative_to(base, specimen.specimen),
                                                 decoy=_relative_to(base, specimen.decoy),
                                                 template=_relative_to(base, specimen.template)))
        training = _section(table.pop("training", {}), TrainingSettings, path, "[training]")
        simulation = _section(table.pop("simulation", {}), SimulationSettings, path, "[simulation]")
        learned = _section(table.pop("learned", {}), LearnedJudgeSettings, path, "[learned]")
        classes = _section(table.pop("classes", {}), ClassJudgeSettings, path, "[classes]")
        return _section({**table, "simulated": tuple(simulated), "real": tuple(real), "training": training,
                         "simulation": simulation, "learned": learned, "classes": classes}, BenchConfig, path,
                        "the top level")
    except (TypeError, ValueError) as error:
        raise InputError(path, str(error)) from None
