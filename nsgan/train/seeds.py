"""Where each rank's random streams start: one formula, so ranks draw apart and a run repeats exactly.

Every stream a rank draws from on its own (the GAN's latents, the encoder's latent cycle, the
comparator's painter and picks) starts at `rank_seed(seed, rank, stream)`; the streams differ by
their offset. A changed number would change every run drawn with it, and a saved state would
no longer resume bit for bit: offsets are only ever added.
"""

from __future__ import annotations

import torch

GAN_LATENTS = 1  # the GAN's latents z, for the D and the G step
ENCODER_LATENTS = 4243  # the encoder's latent cycle E(G(z)) ≈ z
ENCODER_PAINTER = 4244  # the denoising encoder's painter (encoder.denoise; a numpy Generator)
COMPARATOR_DRAWS = 5354  # the comparator's painter, labelled-tile and bag picks (a numpy Generator)
GAN_AUGMENT = 6465  # the GAN's augmentation of what D sees (nsgan/models/augment.py)


def rank_seed(seed: int, rank: int, stream: int) -> int:
    """The seed of stream `stream` on process `rank` of a run seeded `seed`."""
    return seed * 1000003 + rank * 7919 + stream


def rank_generator(seed: int, rank: int, stream: int) -> torch.Generator:
    """A CPU torch.Generator at `rank_seed`: draws on the CPU resume exactly on any device."""
    return torch.Generator().manual_seed(rank_seed(seed, rank, stream))


def loss_noise_seed(seed: int, rank: int) -> int:
    """The seed of the global torch stream a GAN rank's loss draws from (WGAN-GP's interpolation weights).

    Not `rank_seed`: this stream's numbers are part of every WGAN-GP run and its saved states."""
    return seed * 1000 + 17 + rank
