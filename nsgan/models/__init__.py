"""Models: the networks (G, D, the f-AnoGAN encoder), their losses, and the model file they are shared in."""
