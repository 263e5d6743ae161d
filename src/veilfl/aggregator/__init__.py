"""veilfl.aggregator."""

__all__: list[str] = []
