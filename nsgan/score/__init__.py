"""Scoring: score options, latent search, residual maps, the tile-parallel scorer, regions and reports, the no-learning floor."""
