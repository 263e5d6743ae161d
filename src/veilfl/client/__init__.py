"""veilfl.client."""
