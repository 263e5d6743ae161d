"""veilfl.privacy."""

__all__: list[str] = []
