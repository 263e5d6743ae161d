"""veilfl.secagg."""
