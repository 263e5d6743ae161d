"""veilfl.crypto."""
