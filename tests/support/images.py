"""A container image's contents and requirements, reproduced without Docker: a clean virtualenv that has only the
image's own requirements file installed, and a directory that holds only what the image's Dockerfile copies.

What ships is what is tested: run an entry point from that directory with that virtualenv's Python, and a missing
requirement or a file the image does not carry fails the run, as it would in the image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.aws import ROOT

# Kept between runs on one machine (a fresh clone builds them once): keyed by the requirements' content.
VENV_CACHE = ROOT / ".data" / "test-venvs"


def _requirements_digest(requirements: Path) -> str:
    """The file and every file it includes with `-r`, so a change anywhere in the chain rebuilds the venv."""
    digest = hashlib.sha256()
    pending = [requirements]
    while pending:
        path = pending.pop()
        text = path.read_text()
        digest.update(path.name.encode() + b"\0" + text.encode())
        for line in text.splitlines():
            if line.strip().startswith("-r "):
                pending.append(path.parent / line.strip()[3:].strip())
    return digest.hexdigest()[:16]


def clean_venv(requirements: Path, name: str) -> Path:
    """A virtualenv (no system site-packages) with just `requirements` installed; its `bin/python`."""
    venv = VENV_CACHE / f"{name}-{_requirements_digest(requirements)}"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    if not done.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-r", str(requirements)], check=True)
        done.touch()
    return python


def dockerfile_copies(dockerfile: Path, build_args: dict[str, str]) -> list[tuple[str, str]]:
    """The (source, destination) pairs of the Dockerfile's COPY instructions (build-context sources only)."""
    pairs: list[tuple[str, str]] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        for key, value in build_args.items():
            args = [a.replace(f"${{{key}}}", value).replace(f"${key}", value) for a in args]
        *sources, destination = args
        pairs += [(source, destination) for source in sources]
    return pairs


def image_tree(dockerfile: Path, context: Path, workdir: str, target: Path,
               build_args: dict[str, str] | None = None) -> Path:
    """Lay out under `target` what the image holds below `workdir` (its WORKDIR), copied as its COPYs do."""
    for source, destination in dockerfile_copies(dockerfile, build_args or {}):
        src = context / source.rstrip("/")
        if not destination.startswith("/"):
            destination = f"{workdir.rstrip('/')}/{destination}"
        relative = os.path.relpath(destination, workdir)
        if relative.startswith(".."):
            continue  # outside the code directory (e.g. a requirements file installed, not run)
        dest = target / relative
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            if destination.endswith("/"):
                dest = dest / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    return target
