"""veilfl.crypto."""

__all__: list[str] = []
