"""The stop: SIGTERM (StopTrainingJob, a spot interruption, MaxRuntime) or SIGINT, in whatever phase it arrives.

Outside the training loop the signal raises StopRequested out of whatever the main thread is doing: reading the
data, fetching the Hugging Face token, downloading or loading the model, saving, merging, uploading. It is a
KeyboardInterrupt, hence a BaseException, on purpose:
- the `except Exception` clauses that turn a library's error into a FailureReason (ours in model_loading.py and
  outputs.py; transformers', which re-raises Hub errors as OSError; botocore's and huggingface_hub's retry loops)
  let it through as it is, so a stop during the download is never reported as "cannot load the base model";
- the libraries that clean up on Ctrl-C do the same for it: huggingface_hub aborts its Xet download session,
  s3transfer cancels an upload's in-flight parts.
The alternative, an Exception re-raised by hand at every `except Exception` of ours, cannot reach the clauses
inside the libraries.

Inside the training loop the signal only sets `received` (`deferred` is true there): the loop stops at its next
safe point and writes a checkpoint. Once the finished model is being moved into place the stop is deferred for
good (outputs.publish_model): the model dir then holds the whole model or nothing of this run.

Only the first signal acts. A second one while the stop is under way (the checkpoint being written, the staged
model being removed) is logged and ignored, so that it cannot cut that work short.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


def stopped_message(signal_name: str) -> str:
    return f"Training stopped by {signal_name}; no model was published"


class StopRequested(KeyboardInterrupt):
    """The stop signal, raised where the main thread was when it arrived (see the module's docstring)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(stopped_message(signal_name))
        self.signal_name = signal_name


class StopSignal:
    """SIGTERM or SIGINT: `received` names the first one; `deferred` makes the handler only note it."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.deferred = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            log.warning("%s received while stopping after %s: ignored", name, self.received)
            return
        self.received = name
        if not self.deferred:
            raise StopRequested(name)
        log.warning("%s received", name)
