"""Reference-free 2D classification of picked particles (:func:`~cryoscore.classify.twod.classify_2d`)."""

from cryoscore.classify.twod import Classification2D, Classification2DSettings, classify_2d

__all__ = ["Classification2D", "Classification2DSettings", "classify_2d"]
