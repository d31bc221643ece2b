"""Several processes (GPUs) through Hugging Face ``accelerate``: who does what in a parallel run.

Launch the same command under ``accelerate launch`` (or ``torchrun``)::

    accelerate launch --num_processes 4 -m loraml empirical run --preset paper ...

and the run splits its work over the processes:

- Retraining is data parallel: the model is wrapped in DistributedDataParallel, every global
  batch of ``batch_size`` examples is dealt round-robin to the processes (:meth:`Workers.shard`),
  and each process weights its mean loss by its share, so the all-reduced gradient is the
  gradient of the whole batch's mean loss, as in a single process. Batches, learning-rate
  schedule and step count are those of a single-process run; only the dropout masks differ
  (each process draws its own), so the numbers are not bit-identical to one.
- Fine-tuning jobs (method x scheme x rank x unseen task) are independent and seeded by their
  own key; they are dealt to the processes in rounds, and each round's records are gathered and
  written by process 0. A job's result does not depend on which process ran it.
- Only process 0 writes files; checkpoints hold every process's RNG state, so a killed run
  resumes exactly when restarted with the same number of processes.

Without a launcher (``WORLD_SIZE`` unset or 1) none of this is active and nothing here imports
``accelerate``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

T = TypeVar("T")


def launched_world_size() -> int:
    """The number of processes of the launcher that started this one (1 without a launcher)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def is_main_process() -> bool:
    """True in a single-process run and in process 0 of a launched one."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Workers:
    """This process's place in the run: rank, number of processes, and the accelerator.

    Attributes
    ----------
    rank : int
        This process's index, 0 .. world - 1.
    world : int
        The number of processes (1: an ordinary run).
    accelerator : accelerate.Accelerator or None
        None in a single-process run.
    """

    rank: int = 0
    world: int = 1
    accelerator: Any = None

    @classmethod
    def from_env(cls, device: str = "auto") -> Workers:
        """The workers of this launch: a single process, or an ``accelerate`` process group.

        Parameters
        ----------
        device : str
            The run's ``--device``: ``cpu`` makes a CPU process group (gloo), ``cuda`` one
            process per GPU, ``auto`` the latter where CUDA is available, else the former.
            ``cuda:N`` names one GPU and cannot be split.

        Raises
        ------
        ValueError
            ``cuda:N`` with several processes, or a process group of another size than the
            launcher's.
        """
        if launched_world_size() == 1:
            return cls()
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(
                f"--device {device} names one device, but {launched_world_size()} processes "
                "were launched; use --device auto (each process takes its own GPU) or cpu"
            )
        import torch
        from accelerate import Accelerator

        # Every parameter takes part in every step (encoders load without their pooler; the
        # stacked adapters and heads are gathered per example), so DDP's default of no search
        # for unused parameters holds.
        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        accelerator = Accelerator(cpu=cpu)
        if accelerator.num_processes != launched_world_size():
            raise ValueError(
                f"{launched_world_size()} processes were launched but accelerate formed a group "
                f"of {accelerator.num_processes}; check the launcher's settings and --device"
            )
        return cls(accelerator.process_index, accelerator.num_processes, accelerator)

    @property
    def main(self) -> bool:
        """True in the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """This process's device, or None in a single-process run (the run's ``--device``)."""
        return None if self.accelerator is None else self.accelerator.device

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` for training: wrapped in DistributedDataParallel when there are several
        processes (its parameters stay the model's own, so optimizers and state dicts of the
        unwrapped ``model`` keep working)."""
        if self.accelerator is None:
            return model
        return self.accelerator.prepare_model(model, device_placement=False)

    def shard(self, items: Sequence[T]) -> tuple[list[T], float]:
        """This process's share of a global batch and the weight of its mean loss.

        Items are dealt round-robin: this process gets ``items[rank::world]``. Its mean loss is
        multiplied by ``weight = world * len(share) / len(items)``; DistributedDataParallel
        averages gradients over the processes, so the result is the gradient of the mean loss
        over all ``items``. A process left without items (a last batch smaller than the number
        of processes) gets the first item with weight 0, so every process joins the all-reduce.

        Returns
        -------
        share : list
        weight : float
        """
        if not items:
            raise ValueError("cannot shard an empty batch")
        share = list(items[self.rank :: self.world])
        if not share:
            return [items[0]], 0.0
        return share, self.world * len(share) / len(items)

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order (``[obj]`` in a single-process run)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every process gets here (a no-op in a single-process run)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group (a no-op in a single-process run)."""
        if self.accelerator is not None:
            self.accelerator.end_training()
