"""Particle picking, the downstream judge of a denoiser (DESIGN.md section 3).

- :func:`pick_blobs`: reference-free Difference-of-Gaussians picker;
- :func:`pick_template`: cross-correlation with CTF-modulated projections of a reference;
- :func:`train_picker`: a small convolutional network trained on annotated micrographs
  (positive-unlabelled), the primary judge of the benchmark; :func:`save_picker` and
  :func:`load_picker` store it as weights plus a JSON sidecar;
- :func:`pick_micrographs`: any picker over MRC files, writing RELION STAR files.

All pickers return :class:`~cryoscore.io.coords.ParticleCoordinates` in the original
pixel frame with the score as ``figure_of_merit`` (robust noise standard deviations for
the blob and template pickers, a logit for the learned one), best first.
"""

from cryoscore.pick.blob import pick_blobs
from cryoscore.pick.learned import LearnedPicker, load_picker, save_picker
from cryoscore.pick.learned_training import PickerTraining, train_picker
from cryoscore.pick.run import PICKERS, pick_micrographs
from cryoscore.pick.template import pick_template

__all__ = ["PICKERS", "LearnedPicker", "PickerTraining", "load_picker", "pick_blobs", "pick_micrographs",
           "pick_template", "save_picker", "train_picker"]
