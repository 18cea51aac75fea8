"""PASE workers: regressors and classifiers on the encoded frames, with labellers computing their
targets from the batch audio in torch.

The training loop's contract::

    workers = build_workers(pase_settings["workers_config"], model.dim_encoded)   # nn.ModuleDict
    check_sampling(workers, args.samplingType)
    estimate_target_stats(workers, train_batches, max_batches)    # before training, once
    outputs = [w(encoded, batch.audio, batch.speaker) for w in workers.values()]  # WorkerOutput
    loss = total_worker_loss(outputs, workers)                     # sum of weight * loss

Each worker gets its own optimizer over ``worker.parameters()``. Importing this package
registers every worker (``available_workers()`` lists them).
"""
from . import classifiers, regressors  # noqa: F401  (registration)
from .base import Worker, WorkerBatchError, WorkerOutput, check_sampling, total_worker_loss
from .normalization import estimate_target_stats
from .registry import available_workers, build_workers, check_workers_config

__all__ = ["Worker", "WorkerBatchError", "WorkerOutput", "available_workers", "build_workers",
           "check_sampling", "check_workers_config", "estimate_target_stats", "total_worker_loss"]
