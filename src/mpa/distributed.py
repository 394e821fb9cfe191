"""Multi-process training support: `level` under `torchrun` / `accelerate launch` (DDP, FSDP, DeepSpeed).

Every process trains; only the main process (rank 0) writes run-directory artifacts. The process group is the
one Accelerate (and so the Trainer) uses, started from the launcher's environment variables.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
