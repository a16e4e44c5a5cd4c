"""dynalite, a DynamoDB on LevelDB (npm), installed on first use into `.data/bench-node/` (git-ignored).

Its Query on a GSI reads the index with a key-range stream and stops at `Limit` (`db/index.js`, `queryTable`),
as DynamoDB's costs follow the page. moto's sorts the whole table first, so only on dynalite can the bench
hold our job list to the table-size aim. dynalite runs in memory here (no `--path`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = ROOT / ".data" / "bench-node"
SPEC = "dynalite@4"
PACKAGE = PREFIX / "node_modules" / "dynalite"
_MARKER = PREFIX / ".installed"  # holds SPEC once an install of it finished; a cut-short one leaves none
INSTALL_TIMEOUT_S = 300


class Unavailable(RuntimeError):
    """No node or npm, or the install failed; the message says which."""


@dataclass(frozen=True)
class Dynalite:
    node: str
    cli: Path
    version: str
    node_version: str

    def argv(self, port: int) -> list[str]:
        # --createTableMs 0: tables are ACTIVE at once instead of after 500 ms.
        return [self.node, str(self.cli), "--host", "127.0.0.1", "--port", str(port), "--createTableMs", "0"]


def _installed(node: str) -> Dynalite | None:
    cli = PACKAGE / "cli.js"
    if not (cli.exists() and _MARKER.exists() and _MARKER.read_text().strip() == SPEC):
        return None
    version = json.loads((PACKAGE / "package.json").read_text())["version"]
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return Dynalite(node, cli, str(version), node_version)


def _npm_install(npm: str) -> None:
    PREFIX.mkdir(parents=True, exist_ok=True)
    _MARKER.unlink(missing_ok=True)
    log = PREFIX / "npm-install.log"
    with log.open("wb") as out:
        # Its own session, so that a timeout or Ctrl-C ends npm and whatever npm started.
        proc = subprocess.Popen([npm, "install", "--prefix", str(PREFIX), SPEC, "--no-audit", "--no-fund"],
                                cwd=PREFIX, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=INSTALL_TIMEOUT_S)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise Unavailable(f"`npm install {SPEC}` exited with {code} (see {log}): {' | '.join(tail)}")
    _MARKER.write_text(SPEC + "\n")


def find_or_install() -> Dynalite:
    """dynalite from `.data/bench-node/`, installed there first if it is not; raises `Unavailable`."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        raise Unavailable("no `node` on PATH")
    if (found := _installed(node)) is not None:
        return found
    if npm is None:
        raise Unavailable("no `npm` on PATH to install it with")
    try:
        _npm_install(npm)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"`npm install {SPEC}` took over {INSTALL_TIMEOUT_S} s") from exc
    found = _installed(node)
    if found is None:
        raise Unavailable(f"`npm install {SPEC}` succeeded but left no {PACKAGE / 'cli.js'}")
    return found
