"""The one exception type that means "the user gave us bad input".

The CLI turns an :class:`InputError` into a single line on stderr and exit code 2;
library code raises it for anything a user can fix (a wrong file, a missing pixel
size, mismatched halves) and lets genuine bugs raise their own exceptions.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad user input: a file that cannot be used, or inconsistent options.

    Parameters
    ----------
    source:
        The file (or option name) the problem is in; shown first in the message.
    problem:
        What is wrong, in one short sentence without a trailing period.
    """

    def __init__(self, source: str | os.PathLike, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
