"""CLI command `pomona export`. Owned by the export work; placeholder."""

from pomona.errors import PomonaError


def export() -> None:
    """Export a model (not implemented yet)."""
    raise PomonaError("pomona export is not implemented yet")
