"""One exception type for every user-facing failure.

The CLI turns a :class:`PomonaError` into one line on stderr and a non-zero exit; anything
else is a bug and keeps its traceback.
"""


class PomonaError(Exception):
    """A problem with the user's input or environment (bad file, missing weights, ...)."""
