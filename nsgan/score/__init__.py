"""Scoring, a room per job: choices and options (choices, options), the model's file (loading), latent
inversion (search), per-tile maps (maps), the tile runner (tiles), map assembly (assembly), thresholds,
regions and verdicts (postprocess, regions), results and reports (result, reports), the Scorer that
composes them (scorer), and the no-learning floor (baselines)."""
