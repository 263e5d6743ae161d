"""veilfl.ml."""
