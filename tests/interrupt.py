"""A callback that stops its own process at the end of an epoch, as a user or a scheduler would
(SIGINT: Ctrl-C; SIGKILL: a killed job): used by the resume tests through the config, e.g.
`+callbacks.stop._target_=tests.interrupt.StopAt +callbacks.stop.epoch=2`."""

from __future__ import annotations

import os
import signal as signals

import lightning as L


class StopAt(L.Callback):
    def __init__(self, epoch: int, signal: str = "SIGKILL"):
        self.epoch, self.signal = epoch, getattr(signals, signal)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the resumed run (fitted from a checkpoint) carries on
        if trainer.current_epoch == self.epoch and trainer.ckpt_path is None:
            if self.signal == signals.SIGINT:
                # a process started in the background by a non-interactive shell inherits
                # SIGINT ignored; Ctrl-C in a terminal meets Python's own handler
                signals.signal(signals.SIGINT, signals.default_int_handler)
            os.kill(os.getpid(), self.signal)
