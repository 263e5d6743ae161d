"""veilfl.wire."""

__all__: list[str] = []
