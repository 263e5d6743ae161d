"""veilfl.server."""
