"""veilfl.sim."""
