"""Measuring: detection metrics, the evaluate run over a labelled folder, its plots and page, and calibration of thresholds."""
