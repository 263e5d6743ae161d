"""veilfl.privacy."""
