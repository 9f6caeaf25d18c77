"""Ctrl-C and SIGTERM during pre-training: finish the optimiser step, save a checkpoint, stop with a resume hint.

A signal only sets a flag; the loop reads it after each optimiser step, so no step is lost and no step is saved half
applied. A second Ctrl-C interrupts at once (the last checkpoint stays loadable: checkpoints are written atomically).
"""

import logging
import signal
import threading

import torch
from accelerate import Accelerator


logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by `pretrain` after a SIGINT / SIGTERM once the current step is saved; the run can be resumed.

    Attributes:
        signal_name: `SIGINT` or `SIGTERM`.
        step: The last completed (and saved) optimiser step.
        checkpoint: The folder of that step's checkpoint.
    """

    def __init__(self, signal_name: str, step: int, checkpoint):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(
            f"stopped by {signal_name} after step {step}; checkpoint saved to {checkpoint}. Continue with the same "
            "settings plus --resume_from_checkpoint latest."
        )

    @property
    def exit_code(self) -> int:
        """The shell convention for a process ended by a signal: 128 + its number (130 for SIGINT)."""
        return 128 + signal.Signals[self.signal_name].value


class StopOnSignal:
    """Context manager that turns SIGINT / SIGTERM into a stop request the loop polls with `requested()`.

    Handlers are installed only in the main thread (Python's rule) and the previous ones are restored on exit.
    """

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.received: signal.Signals | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signal.Signals(signum)
        logger.warning(
            "%s received: finishing this step, saving a checkpoint and stopping (Ctrl-C again to stop at once).",
            self.received.name,
        )

    def requested(self) -> bool:
        """True once any process received a stop signal.

        Every process calls it after each step and gets the same answer, so all of them save the same step.
        """
        stop = self.received is not None
        if self.accelerator.num_processes > 1:
            flag = torch.tensor(float(stop), device=self.accelerator.device)
            stop = self.accelerator.reduce(flag, "sum").item() > 0
        return stop

    @property
    def signal_name(self) -> str:
        """Name of the received signal (SIGTERM when only another process received one)."""
        return self.received.name if self.received is not None else "SIGTERM"


def ignore_stop_signals(worker_id: int) -> None:
    """`DataLoader` worker init: workers leave SIGINT / SIGTERM to the main process.

    The main process saves and shuts the workers down; a worker ended by Ctrl-C would fail the batch the step waits for.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
