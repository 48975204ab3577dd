"""One exception type for every user-facing failure.

The CLI turns a :class:`PomonaError` into one line on stderr and a non-zero exit; anything
else is a bug and keeps its traceback.
"""


class PomonaError(Exception):
    """A problem with the user's input or environment (bad file, missing weights, ...)."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]
