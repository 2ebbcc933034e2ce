"""``odbench train``: the segment decoder on frozen features, or a segmenter end to end.

Two kinds of run, both driven by a method card's ``[model]`` and ``[training]`` tables (the
defaults live there, with their reasons, never here; :mod:`~odbench.training.options`):

- ``--features NAME``: a frozen feature extractor (``sd-v1-4``, ``dino-vits16``, ``sd-tiny``, …)
  and the :class:`~odbench.models.decoder.SegmentDecoder` of the card of its family
  (``diffusionseg``, ``dino-decoder``, ``moco-decoder``, ``clip-decoder``).  Features are computed
  once and cached on disk (:mod:`odbench.feature_cache`), so every epoch costs only the decoder.
- ``--model unet|deeplabv3``: ``unet-e2e`` / ``deeplabv3-e2e`` trained end to end (Table 3).

Data (:mod:`~odbench.training.data`): every sample is read once per run (per process), hashed
(pixels and mask) and resized to the training resolution into memory-mapped arrays in
``RUN_DIR/.prepared/``; the hashes give the data manifest recorded in the checkpoint and key the
feature cache.  A ``--val-split`` fraction is
held out (seeded); validation IoU (per image at 0.5, averaged) is shown in the progress bar.

Determinism: the model's initial weights come from the seed; the sample order of epoch ``e`` is
a permutation drawn from ``(seed, e)`` and the flips of step ``s`` from ``(seed, s)``, so a run
resumed from step ``k`` continues exactly as the uninterrupted run (same batches, same optimizer
state; :mod:`~odbench.training.resume`).  Checkpoints (:mod:`odbench.checkpoint`) are written
every ``save_every`` steps, at least every :data:`~odbench.training.loop.SAVE_INTERVAL_S`
seconds, at the end, and on Ctrl-C or SIGTERM (:mod:`~odbench.training.loop`).

Data-parallel training (``torchrun``/``accelerate launch``, ``W`` processes): accelerate wraps the
model in DDP; ``batch_size`` is the global batch and every rank draws the same global batch as one
process would, takes every ``W``-th sample of it from its rank on, and weighs its loss by its
share's size, so the averaged gradient is that of the global batch; BatchNorm uses the global
batch's statistics (:mod:`odbench.syncbn`).  The feature cache is filled in strided shares (claim
files), then every rank trains from all of it.  Rank 0 alone writes the run folder; the others
prepare the data in a temporary folder.  ``docs/cluster.md`` has the commands.
"""

from odbench.training.loop import Terminated, TrainResult
from odbench.training.options import TrainError
from odbench.training.run import CacheResult, fill_feature_cache, train

__all__ = [
    "CacheResult",
    "Terminated",
    "TrainError",
    "TrainResult",
    "fill_feature_cache",
    "train",
]
