"""veilfl.cli."""
