"""veilfl.strategy."""
