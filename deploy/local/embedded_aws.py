"""moto's server as the embedded AWS runs it, with DynamoDB's writes made atomic.

DynamoDB applies a conditional write atomically: of two concurrent puts with `attribute_not_exists`, one succeeds
and the other gets ConditionalCheckFailedException. moto's server handles each request on its own thread and
checks a condition, then writes, with nothing in between, so two concurrent writes can both pass the same
condition (seen: two registrations of one email both answered 201 on a loaded machine). Every service relies on
those conditions (unique emails, status transitions, the inbox's once-only handling), so here each DynamoDB write
(put, update, delete, transactions) holds one lock for the whole check-and-write. Reads are not locked.

With `--state-dir DIR` it keeps its state there across restarts (deploy/local/aws_state.py): `make up` uses
`.data/aws`, `make clean` removes it.

    python -m deploy.local.embedded_aws -H 127.0.0.1 -p 4566 [--state-dir .data/aws]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
WRITE_LOCK = threading.RLock()  # re-entrant: a transaction's writes go through the single-item methods


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with WRITE_LOCK:
            return method(*args, **kwargs)

    locked.__dict__["atomic"] = True
    return locked


def make_dynamodb_writes_atomic() -> None:
    for name in WRITES:
        method = getattr(DynamoDBBackend, name)
        if not getattr(method, "atomic", False):
            setattr(DynamoDBBackend, name, _atomic(method))


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    from deploy.local.aws_state import Store, tracking

    parser = argparse.ArgumentParser(description="moto's server as the embedded AWS")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4566)
    parser.add_argument("--state-dir", type=Path, help="keep the state here across restarts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request: thousands an hour
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto's own main does
    make_dynamodb_writes_atomic()
    app: Any = DomainDispatcherApplication(create_backend_app)
    store = None
    if args.state_dir:
        store = Store(args.state_dir)
        store.install(WRITE_LOCK)
        started = time.monotonic()
        restored = store.restore()
        logging.getLogger("embedded_aws").info("state %s: restored %s in %.2f s", args.state_dir,
                                               ", ".join(restored) or "nothing", time.monotonic() - started)
        app = tracking(app, store)
        stop = threading.Event()
        threading.Thread(target=store.run_snapshots, args=(stop,), name="snapshots", daemon=True).start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    try:
        run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    finally:
        if store is not None:
            store.snapshot()
            logging.getLogger("embedded_aws").info("state saved to %s", args.state_dir)


if __name__ == "__main__":
    main()
