"""`python -m deploy.local.generation_server --model-dir DIR --port N [--host H] [--max-waiting 256]`

Loads the model first and only then listens, so `GET /ping` answering means ready. Environment, as LMI reads
it: OPTION_MAX_MODEL_LEN caps the context length. GENERATION_SERVER_TORCH_THREADS (else OMP_NUM_THREADS,
else 2) sets torch's CPU threads. With --parent-pid, the server exits when that process is gone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

import uvicorn

from .app import create_app
from .engine import Engine, configure_torch_threads

log = logging.getLogger("generation_server")
PARENT_POLL_S = 1.0


def _exit_with_parent(parent_pid: int) -> None:
    """Belt and braces beside the launcher's PR_SET_PDEATHSIG: never outlive whoever started us."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent_pid:
            log.warning("parent process %s is gone; exiting", parent_pid)
            os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.generation_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="a save_pretrained folder: model, tokenizer and chat template")
    source.add_argument("--hub-id", help="a Hugging Face Hub id, loaded with from_pretrained (downloads)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-waiting", type=int, default=256, help="requests waiting beyond the one "
                        "running before new ones get a 503 (default 256)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is no longer our parent")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    if args.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True).start()
    threads = configure_torch_threads()
    max_len = int(os.environ["OPTION_MAX_MODEL_LEN"]) if os.environ.get("OPTION_MAX_MODEL_LEN") else None
    engine = Engine.load(args.model_dir or args.hub_id, max_model_len=max_len)
    log.info("serving %s on %s:%s (context %s tokens, %s torch threads)", args.model_dir or args.hub_id,
             args.host, args.port, engine.context_length, threads)
    uvicorn.run(create_app(engine, args.max_waiting), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
