"""Networks and preconditioning: the noise-conditioned U-Net, EDM denoiser, model files.

Imports only from :mod:`cryoscore.io`, :mod:`cryoscore.errors` and :mod:`cryoscore.settings`
(see DESIGN.md, section 4).
"""

from __future__ import annotations

from cryoscore.nn.checkpoint import load_model, save_model
from cryoscore.nn.precondition import Denoiser, EDMPreconditioner, tweedie_score
from cryoscore.nn.unet import NoiseConditionedUNet
from cryoscore.settings import UNetConfig

__all__ = [
    "Denoiser",
    "EDMPreconditioner",
    "NoiseConditionedUNet",
    "UNetConfig",
    "load_model",
    "save_model",
    "tweedie_score",
]
