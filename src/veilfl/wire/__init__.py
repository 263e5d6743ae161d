"""veilfl.wire."""
