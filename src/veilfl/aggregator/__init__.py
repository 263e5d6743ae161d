"""veilfl.aggregator."""
