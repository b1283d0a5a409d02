"""Training: in-memory flight data, the loop, the two stages, checkpoints."""
