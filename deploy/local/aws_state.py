"""The embedded AWS's state on disk, so that `make up` keeps accounts, files, jobs and events across restarts.

moto keeps everything in memory. Of the ways to keep it (moto's recorder, which replays every recorded request at
start; servers compatible with DynamoDB or S3 that persist to disk, which need Java, Node or Docker), this one needs
nothing beyond moto and starts in a time that does not grow with the bytes kept:

- **Object bodies are files.** Every S3 object's body (parts of unfinished uploads included) is written once, when
  it arrives, to `<state>/s3/<random name>` instead of moto's temporary buffer, and read from there on demand.
- **Everything else is a snapshot.** moto's backends (DynamoDB tables, SQS queues and their messages, SNS topics,
  EventBridge rules, S3 buckets and key metadata, ...) are pickled to `<state>/state.pickle`, an object body as the
  name of its file, within `SNAPSHOT_INTERVAL_S` of a change and at a clean stop. The file is replaced atomically,
  so a crash leaves the previous snapshot whole.
- **Start-up** unpickles the snapshot (metadata only: a 1 GiB object costs what a 1 KiB one does) and removes body
  files that no snapshot names (objects deleted, or written after the last snapshot of a crashed run).

What a kill -9 of the embedded AWS itself loses: what changed in the last `SNAPSHOT_INTERVAL_S`. A clean stop
(Ctrl-C, SIGTERM) loses nothing. The snapshot is taken while requests go on: DynamoDB's writes are held for it
(deploy/local/embedded_aws.py's lock), a dict changed underneath is retried, and an SQS receive it misses makes
that message visible again after a restart, which the consumers' inboxes already tolerate (at-least-once).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moto.backends import get_backend
from moto.core.base_backend import BackendDict
from moto.s3.models import FakeKey

log = logging.getLogger("embedded_aws.state")

SNAPSHOT_FILE = "state.pickle"
BODIES_DIR = "s3"
SNAPSHOT_INTERVAL_S = 2.0
# A body file younger than this is never removed by a snapshot taken while requests run: its key may exist but not
# yet be in its bucket (moto writes the body, then reads it for the ETag, then links the key).
ORPHAN_GRACE_S = 600.0
FORMAT = 1


class BodyFile(io.RawIOBase):
    """An object's body in its file, opened only for each read: the handful of calls moto makes on its buffer
    (seek, read, tell, close) without holding a descriptor per object."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self.path.stat().st_size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        with self.path.open("rb") as f:
            f.seek(self._pos)
            data = f.read() if size is None or size < 0 else f.read(size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)


class Store:
    """One state directory. `install()` patches moto's S3 keys to keep their bodies here; `restore()` loads the
    last snapshot into moto's backends; `snapshot()` writes one; `run_snapshots()` keeps writing them while dirty."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.bodies = directory / BODIES_DIR
        self.bodies.mkdir(parents=True, exist_ok=True)
        self._dirty = threading.Event()
        self._snapshot_lock = threading.Lock()
        self._write_lock: Any = contextlib.nullcontext()

    # --- object bodies -------------------------------------------------------------------------------------------
    def new_body(self, data: bytes) -> BodyFile:
        return BodyFile(self.bodies / _write_body(self.bodies, data))

    def install(self, write_lock: Any = None) -> None:
        """Every S3 key's body goes to a file of its own, from the moment moto sets it."""
        store = self
        if write_lock is not None:
            self._write_lock = write_lock

        def set_value(key: FakeKey, new_value: bytes | str) -> None:
            if isinstance(new_value, str):
                new_value = new_value.encode("utf-8")
            old = key.__dict__.get("_value_buffer")
            key._value_buffer = store.new_body(new_value)  # type: ignore[assignment]
            key.contentsize = len(new_value)
            if old is not None:
                old.close()

        getter = FakeKey.value.fget  # type: ignore[attr-defined]
        FakeKey.value = property(getter, set_value)  # type: ignore[assignment,method-assign]

    def mark_dirty(self) -> None:
        self._dirty.set()

    # --- snapshots -----------------------------------------------------------------------------------------------
    def snapshot(self) -> int:
        """Writes the state of every backend in use; returns the snapshot's size in bytes."""
        with self._snapshot_lock:
            self._dirty.clear()
            started = time.time()
            named: set[str] = set()
            blobs: dict[str, bytes] = {}
            for backend in list(BackendDict._instances):  # type: ignore[misc]
                data = self._pickle_backend(backend, named)
                if data is not None:
                    blobs[backend.service_name] = data
            path = self.directory / SNAPSHOT_FILE
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as f:
                pickle.dump({"format": FORMAT, "backends": blobs}, f, protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self._remove_unnamed(named, older_than=started - ORPHAN_GRACE_S)
            return path.stat().st_size

    def _pickle_backend(self, backend: BackendDict[Any], named: set[str]) -> bytes | None:
        for attempt in range(20):
            names: set[str] = set()
            buffer = io.BytesIO()
            try:
                with self._write_lock:
                    _Pickler(buffer, self.bodies, names).dump(dict(backend))
            except RuntimeError as exc:  # "dictionary changed size during iteration": a request ran; again
                if attempt == 19:
                    log.warning("%s not saved: %s", backend.service_name, exc)
                    return None
                continue
            except (TypeError, AttributeError, pickle.PicklingError) as exc:
                log.warning("%s cannot be saved: %s", backend.service_name, exc)
                return None
            named |= names
            return buffer.getvalue()
        return None

    def restore(self) -> list[str]:
        """Loads the last snapshot into moto's backends; returns the services restored."""
        path = self.directory / SNAPSHOT_FILE
        if not path.exists():
            self._remove_unnamed(set(), older_than=time.time() + 1)
            return []
        with path.open("rb") as f:
            saved = pickle.load(f)  # noqa: S301 - our own file, written by snapshot() on this machine
        if saved.get("format") != FORMAT:
            raise RuntimeError(f"{path} is from another version; `make clean` starts empty")
        named: set[str] = set()
        restored = []
        for service, data in saved["backends"].items():
            accounts = _Unpickler(io.BytesIO(data), self.bodies, named).load()
            live = get_backend(service)
            for account_id, per_region in accounts.items():
                dict.__setitem__(live, account_id, per_region)
            if live not in BackendDict._instances:  # type: ignore[misc]
                BackendDict._instances.append(live)  # type: ignore[misc]
            restored.append(service)
        self._remove_unnamed(named, older_than=time.time() + 1)
        return restored

    def _remove_unnamed(self, named: set[str], older_than: float) -> None:
        for path in self.bodies.iterdir():
            if path.name not in named:
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < older_than:
                        path.unlink()

    def run_snapshots(self, stop: threading.Event, interval_s: float = SNAPSHOT_INTERVAL_S) -> None:
        while not stop.wait(interval_s):
            if self._dirty.is_set():
                started = time.monotonic()
                try:
                    size = self.snapshot()
                except Exception:
                    log.exception("snapshot failed; the previous one stands")
                    continue
                took = time.monotonic() - started
                if took > interval_s / 2:
                    log.warning("snapshot of %.1f MiB took %.2f s", size / (1 << 20), took)


class _Pickler(pickle.Pickler):
    """moto's state as it is, except: an S3 key's body by its file's name, locks as new locks."""

    def __init__(self, file: io.BytesIO, bodies: Path, names: set[str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._bodies, self._names = bodies, names

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, FakeKey):
            state = {k: v for k, v in obj.__dict__.items() if k not in ("_value_buffer", "lock")}
            buffer = obj.__dict__.get("_value_buffer")
            name = buffer.path.name if isinstance(buffer, BodyFile) else None
            if name is None:  # a key made before install(): its body moves to a file now
                moved = _read_all(buffer)
                name = _write_body(self._bodies, moved)
            self._names.add(name)
            return _restore_key, (state, name)
        if isinstance(obj, _LOCK_TYPES):
            return _new_lock, (type(obj) is _RLOCK,)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, bodies: Path, names: set[str]) -> None:
        super().__init__(file)
        _RESTORING.bodies, _RESTORING.names = bodies, names


_RESTORING = threading.local()
_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())
_LOCK_TYPES = (_LOCK, _RLOCK)


def _new_lock(reentrant: bool) -> Any:
    return threading.RLock() if reentrant else threading.Lock()


def _restore_key(state: dict[str, Any], name: str) -> Any:
    key: Any = FakeKey.__new__(FakeKey)
    key.__dict__.update(state)
    key._value_buffer = BodyFile(_RESTORING.bodies / name)
    key.lock = threading.Lock()
    _RESTORING.names.add(name)
    return key


def _read_all(buffer: Any) -> bytes:
    if buffer is None or getattr(buffer, "closed", False):
        return b""
    buffer.seek(0)
    return bytes(buffer.read())


def _write_body(bodies: Path, data: bytes) -> str:
    path = bodies / secrets.token_hex(16)
    path.write_bytes(data)
    return path.name


READ_ONLY = frozenset({
    "GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable", "ListTables",
    "DescribeTimeToLive", "ListTagsOfResource", "DescribeContinuousBackups",
    "ReceiveMessage", "GetQueueAttributes", "GetQueueUrl", "ListQueues", "ListQueueTags",
    "ListTopics", "GetTopicAttributes", "ListSubscriptions", "ListSubscriptionsByTopic",
    "GetSubscriptionAttributes", "DescribeRule", "ListRules", "ListTargetsByRule", "DescribeLogGroups",
    "DescribeLogStreams", "GetLogEvents", "FilterLogEvents", "GetCallerIdentity",
})


def changes_state(environ: dict[str, Any]) -> bool:
    """Whether a request may change moto's state (to know when a snapshot is due). Reads are GET/HEAD, or a
    POST whose operation (X-Amz-Target's, or the query protocol's Action) only reads."""
    method = environ.get("REQUEST_METHOD", "GET")
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rsplit(".", 1)[-1] not in READ_ONLY
    query = environ.get("QUERY_STRING", "")
    for part in query.split("&"):
        if part.startswith("Action="):
            return part[len("Action="):] not in READ_ONLY
    return True  # a form-encoded query-protocol call keeps its Action in the body: count it as a change


def tracking(app: Callable[..., Iterable[bytes]], store: Store) -> Callable[..., Iterable[bytes]]:
    """The WSGI app, marking the store dirty after each request that may have changed something."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        finally:
            if changes_state(environ):
                store.mark_dirty()

    return wrapped
