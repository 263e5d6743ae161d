"""veilfl.protocol."""
