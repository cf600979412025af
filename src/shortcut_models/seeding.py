"""Counter-based seeding: every random draw of step k is a pure function of (seed, k, stream).

Nothing random is carried from one step to the next, so a resumed run draws exactly what an
uninterrupted one would, with no generator state in the checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

# independent streams; PAIRING: noise drawn on the host to be paired with the data there
DATA, OBJECTIVE, EVALUATION, PAIRING = 0, 1, 2, 3


def derive_seed(*keys: int) -> int:
    """Mix integer keys into one well-spread 63-bit seed. Keys of any size count in full (seeds
    2^32 apart differ); negative keys count modulo 2^32."""
    words = [int(k) if k >= 0 else int(k) & 0xFFFFFFFF for k in keys]
    state = np.random.SeedSequence(words).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))


def step_generator(
    seed: int, step: int, stream: int, device: torch.device | str = "cpu", micro_batch: int = 0
) -> torch.Generator:
    """A fresh generator for one stream of one training step; `micro_batch` numbers the
    micro-batches of a step split over ranks or accumulation (0 draws as an unsplit step)."""
    keys = (seed, step, stream) if micro_batch == 0 else (seed, step, stream, micro_batch)
    return torch.Generator(device=device).manual_seed(derive_seed(*keys))
