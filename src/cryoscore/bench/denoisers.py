"""The denoisers a benchmark judges: training the learned ones, and each as a function.

Every denoiser is a function from a full frame sum (H, W), in counts, to its estimate
(H, W) in the same units, so every judge sees every denoiser the same way.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from cryoscore.bench.config import TrainingSettings
from cryoscore.bench.resume import NO_STORE, StepStore
from cryoscore.filters import lowpass_filter
from cryoscore.infer.adapt import AdaptSettings, Micrograph, adapt_to_images
from cryoscore.infer.denoise import TrainedDenoiser, denoise_image, flatten_image, load_denoiser
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.pairs.halves import HalfPair
from cryoscore.settings import METHODS, GuidanceConfig, TrainConfig
from cryoscore.train import train_model

logger = logging.getLogger(__name__)

DenoiseFunction = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TrainedModel:
    """A model a benchmark trained: its name (``n2n``, ``guided``, ``guided-decoy``, ...), the
    loaded denoiser and what to record about the run (seconds, final loss, config)."""

    name: str
    denoiser: TrainedDenoiser
    record: dict[str, Any]


GUIDED_BY = {"guided": ("guided", "guided-decoy"), "guided-decoy": ("guided-decoy",)}
"""The guided models each name of a benchmark's denoisers trains, where its density is given: ``guided``
its reference's and its decoy's (the bias control beside it), ``guided-decoy`` the decoy's alone."""


def train_models(
    pairs: Sequence[HalfPair],
    methods: Sequence[str],
    settings: TrainingSettings,
    model_dir: Path,
    *,
    reference: str | None,
    decoy: str | None = None,
    defocus_range_um: tuple[float, float] = (1.0, 2.5),
    failures: dict[str, str] | None = None,
    store: StepStore = NO_STORE,
) -> dict[str, TrainedModel]:
    """Train every learned method of ``methods`` on ``pairs``; models go to ``model_dir``.

    ``guided`` is guided by ``reference`` (a map, an atomic model or a built-in specimen
    name); with a ``decoy`` density a second guided model, ``guided-decoy``, is trained
    with it in the reference's place, for the bias control (``guided-decoy`` in ``methods``
    without ``guided``: the decoy model alone, :data:`GUIDED_BY`). ``default`` is the shipped model
    as it is (``flattened`` too: :func:`denoise_functions` subtracts its background estimate),
    ``adapted`` the shipped model fine-tuned on the pairs' full sums as
    ``denoise --adapt`` does it (:mod:`cryoscore.infer.adapt`), for the steps, batch and crop
    of ``settings``. Returns models by name. With a ``failures`` dict, a model whose training
    raises is left out and its error stored there under its name (:func:`call_or_record`; the
    others still train); without one the error propagates. Each model trained is a step of
    ``store`` (``trained/DATASET/NAME``, DATASET the name of ``model_dir``'s parent): one kept
    there is loaded from ``model_dir``, not trained again.
    """
    models = {}
    dataset = model_dir.parent.name
    if {"default", "flattened", "adapted"} & set(methods):
        shipped = load_denoiser(device=settings.device)
        for name in ("default", "flattened"):
            if name in methods:
                models[name] = TrainedModel(name, shipped, {"name": name, "method": name})
        if "adapted" in methods:
            adapted_path = model_dir / "adapted.pt"
            adapted = store.load_or_run(f"trained/{dataset}/adapted",
                                        lambda: _adapt(shipped, pairs, settings, adapted_path))
            models["adapted"] = TrainedModel("adapted", load_denoiser(adapted_path, settings.device), adapted)
    densities = {"guided": reference, "guided-decoy": decoy}
    runs: dict[str, tuple[str, GuidanceConfig | None]] = {}
    for method in methods:
        if method in METHODS and method != "guided":
            runs[method] = (method, None)
        for name in GUIDED_BY.get(method, ()):
            if (density := densities[name]) is not None:
                runs.setdefault(name, ("guided", GuidanceConfig(
                    reference=density, strength=settings.guidance_strength,
                    resolution_a=settings.reference_resolution_a, defocus_range_um=defocus_range_um)))
    for name, (method, guidance) in runs.items():
        config = TrainConfig(method=method, steps=settings.steps, batch_size=settings.batch_size,
                             crop_px=settings.crop_px, seed=settings.seed, guidance=guidance)
        model_path = model_dir / f"{name}.pt"
        record = store.load_or_run(f"trained/{dataset}/{name}", functools.partial(
            _train, name, pairs, config, model_path, settings.device, failures))
        if record is not None:
            models[name] = TrainedModel(name, load_denoiser(model_path, settings.device), record)
    return models


def _train(name: str, pairs: Sequence[HalfPair], config: TrainConfig, model_path: Path, device: str,
           failures: dict[str, str] | None) -> dict[str, Any] | None:
    """Train model ``name`` into ``model_path``; its record, or None if it failed (``failures``:
    :func:`call_or_record`)."""
    result = call_or_record(failures, name, "training failed: ", train_model, list(pairs), config, model_path,
                            progress=False, device=device)
    if result is None:
        return None
    logger.info("trained %s on %d micrographs in %.1f s", name, len(pairs), result.seconds)
    return {
        "name": name,
        "method": config.method,
        "n_micrographs": len(pairs),
        "seconds": result.seconds,
        "final_loss": float(np.mean(result.losses[-20:])),
        "loss_curve": loss_curve(result.losses),
        "reference": config.guidance.reference if config.guidance else None,
        "steps": config.steps,
    }


def failure_message(error: BaseException) -> str:
    """``error`` as one line for a benchmark's record: its type and its message's first line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


Result = TypeVar("Result")


def call_or_record(failures: dict[str, str] | None, name: str, prefix: str, function: Callable[..., Result],
                   *args: Any, **kwargs: Any) -> Result | None:
    """``function(*args, **kwargs)`` for denoiser ``name``; if it raises and ``failures`` is a dict,
    ``prefix`` + :func:`failure_message` is stored there under ``name``, logged, and None returned,
    so a benchmark goes on without that denoiser; with ``failures`` None the error propagates."""
    try:
        return function(*args, **kwargs)
    except Exception as error:
        if failures is None:
            raise
        failures[name] = prefix + failure_message(error)
        logger.error("%s: %s; left out", name, failures[name])
        return None


def loss_curve(losses: Sequence[float], points: int = 40) -> list[list[float]]:
    """A training run's losses as at most ``points`` [step, mean loss] pairs, each the mean of
    one block of consecutive steps (step: the block's last step, counted from 1)."""
    blocks = np.array_split(np.asarray(losses, dtype=np.float64), min(points, len(losses)))
    ends = np.cumsum([len(block) for block in blocks])
    return [[int(end), float(block.mean())] for end, block in zip(ends, blocks)]


def _adapt(shipped: TrainedDenoiser, pairs: Sequence[HalfPair], settings: TrainingSettings,
           model_path: Path) -> dict[str, Any]:
    """Write the ``shipped`` model after ``denoise --adapt`` on the full sums of ``pairs`` to ``model_path``;
    returns its record."""
    micrographs = [Micrograph(pair.name, pair.even + pair.odd, pair.pixel_size_a, pair.name) for pair in pairs]
    adapt = AdaptSettings(steps=settings.steps, batch_size=settings.batch_size, crop_px=settings.crop_px,
                          seed=settings.seed)
    result = adapt_to_images(shipped, micrographs, model_path, adapt, progress=False, device=settings.device)
    logger.info("adapted the default model to %d micrographs in %.1f s", len(pairs), result.seconds)
    return {"name": "adapted", "method": "adapted", "n_micrographs": len(pairs), "seconds": result.seconds,
            "held_out_loss": {"default": result.initial_loss, "adapted": result.adapted_loss}, "kept": result.kept}


def denoise_functions(
    denoisers: Sequence[str], models: dict[str, TrainedModel], pixel_size_a: float, lowpass_a: float,
) -> dict[str, DenoiseFunction]:
    """Each name of ``denoisers`` (and every trained model) as a function of a micrograph, in the
    order of ``denoisers`` (``guided-decoy``, where it is not listed, after ``guided``), the
    order in which the benchmark judges them.

    ``raw`` is the identity, ``lowpass`` a Gaussian low-pass at ``lowpass_a`` Angstrom,
    ``topaz`` Topaz-Denoise's pretrained model (left out, with a warning, when the ``topaz``
    command is not installed),
    the learned ones the one-step Tweedie estimate of their model for a full sum of two of the
    halves it trained on, ``flattened`` the micrograph minus its model's background estimate,
    low-passed at :data:`~cryoscore.infer.FLATTEN_LOWPASS_A` (:func:`~cryoscore.infer.denoise.flatten_image`).
    """
    functions: dict[str, DenoiseFunction] = {}
    for name in denoisers:
        if name == "raw":
            functions[name] = lambda image: image
        elif name == "lowpass":
            functions[name] = lambda image: lowpass_filter(image, pixel_size_a, lowpass_a)
        elif name == "topaz" and (command := _installed_topaz(os.environ.get("PATH", ""))) is not None:
            functions[name] = functools.partial(topaz_denoise, command=command)
    for name, model in models.items():
        estimate = flatten_image if name == "flattened" else denoise_image
        functions[name] = functools.partial(estimate, model.denoiser, pixel_size_a=pixel_size_a)

    def place(name: str) -> int:
        listed = [candidate for candidate in (name, name.split("-")[0]) if candidate in denoisers]
        return list(denoisers).index(listed[0]) if listed else len(denoisers)

    return dict(sorted(functions.items(), key=lambda item: place(item[0])))


TOPAZ_COMMAND = "topaz"
"""The Topaz-Denoise executable looked up on PATH; ``topaz`` in the benchmark needs it."""


@functools.lru_cache(maxsize=None)
def _installed_topaz(search_path: str) -> str | None:
    """The ``topaz`` executable on ``search_path`` (a PATH value) if ``topaz denoise --help`` runs,
    or None, said once per PATH: a Topaz whose command line cannot start (on a CPU machine it
    fails to import the CUDA-only torchvision wheel; benchmarks/topaz-api/topaz runs its Python
    API instead) is left out before the benchmark spends its time, not found broken after."""
    command = shutil.which(TOPAZ_COMMAND, path=search_path)
    if command is None:
        logger.warning("topaz is not installed (no %r on PATH): left out of the benchmark", TOPAZ_COMMAND)
        return None
    try:
        probe = subprocess.run([command, "denoise", "--help"], capture_output=True, text=True, timeout=300)
        failure = None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["no output"])[-1]
    except (OSError, subprocess.TimeoutExpired) as error:
        failure = str(error)
    if failure is not None:
        logger.warning("%s does not run (%s): topaz left out of the benchmark", command, failure)
        return None
    return command


def topaz_denoise(image: np.ndarray, command: str = TOPAZ_COMMAND, *, device: int = -1) -> np.ndarray:
    """``image`` (H, W) denoised by ``topaz denoise`` with its pretrained default model.

    Runs ``COMMAND denoise --device DEVICE -o OUT IN.mrc`` (-1: CPU) in a temporary
    directory and reads OUT/IN.mrc back; float32 (H, W). Raises RuntimeError with Topaz's
    last error line if it fails or writes no output.
    """
    with tempfile.TemporaryDirectory(prefix="cryoscore-topaz-") as directory:
        source, output = Path(directory) / "micrograph.mrc", Path(directory) / "denoised"
        output.mkdir()
        write_mrc(source, image, 1.0)
        finished = subprocess.run([command, "denoise", "--device", str(device), "-o", str(output), str(source)],
                                  capture_output=True, text=True)
        result = output / source.name
        if finished.returncode != 0 or not result.is_file():
            last = (finished.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{command} denoise failed (exit {finished.returncode}): {last}")
        return read_mrc(result, pixel_size_a=1.0)[0]
