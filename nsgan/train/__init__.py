"""Training: the run config, the progressive schedule, the GAN and encoder loops and what they share (engines, checkpoints, trackers, sample grids, the run lock, the live display)."""
