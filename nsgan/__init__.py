"""nsgan: micro-defect detection with a progressive GAN trained on noisy normal data."""

__version__ = "0.1.0"
