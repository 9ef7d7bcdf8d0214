"""A callback that SIGKILLs its own process at the start of an epoch (tests of resume).

It acts only when ``SALAD_KILL_AT_EPOCH`` is set, so that the killed run and its
resumption compose the same config.
"""

from __future__ import annotations

import os
import signal

from pytorch_lightning import Callback


class KillAtEpoch(Callback):
    """Kills after the second training batch of epoch ``SALAD_KILL_AT_EPOCH``: mid-epoch,
    with that epoch's first steps done (and logged) but not checkpointed."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        at = os.environ.get("SALAD_KILL_AT_EPOCH")
        if at is not None and trainer.current_epoch == int(at) and batch_idx == 1:
            trainer.logger.save()  # the partial epoch's rows reach metrics.csv
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a lost machine
