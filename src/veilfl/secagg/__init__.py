"""veilfl.secagg."""

__all__: list[str] = []
