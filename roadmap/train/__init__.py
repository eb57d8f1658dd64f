"""Training: ``python -m roadmap.train step=<name> [preset=...] [seed=N] [...]``.

The package, module by module, in the order a run uses them:

- ``__main__``: the thin Hydra entry point around :func:`train`, which tests call in-process;
- ``run``: one run start to end (skip, resume, epochs, records);
- ``setup``: the run's data, model, loaders, optimizer and schedule;
- ``loop``: the loss, a training step (:class:`~roadmap.train.loop.Stepper`), an epoch,
  evaluation;
- ``state``: what a checkpoint holds of a run, and restoring it (the run directory's files
  are :mod:`roadmap.rundir`'s);
- ``data``, ``loaders``, ``augment``, ``randaugment``: data sets (and the validation split),
  batches, the recipe's augmentation (timm's for image folders, batched for in-memory sets);
- ``optim``: optimizer, weight-decay groups, learning-rate schedule;
- ``tracking``: Weights & Biases or nothing.
"""

from roadmap.errors import RunError
from roadmap.train.loop import Diverged
from roadmap.train.run import train

__all__ = ["Diverged", "RunError", "train"]
