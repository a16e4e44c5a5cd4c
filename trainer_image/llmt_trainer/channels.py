"""Finding what an input channel holds: a folder with a given file, in the channel or one of its subfolders, or in
the one model.tar.gz (a SageMaker model artifact) the channel holds, unpacked into the job's scratch folder."""

from __future__ import annotations

import tarfile
from pathlib import Path

from .errors import ModelLoadError


def _folder_with(root: Path, marker: str, newest_first: bool) -> Path | None:
    subfolders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=newest_first)
    return next((c for c in (root, *subfolders) if (c / marker).is_file()), None)


def find_in_channel(channel: Path, marker: str, scratch: Path, *, newest_first: bool = False) -> Path | None:
    """The folder holding `marker`: the channel, one of its subfolders (by name; `newest_first`: the last name
    first, as checkpoint-00000010 before checkpoint-00000005), or the same inside the channel's one *.tar.gz,
    unpacked under `scratch`. None when there is none; a ModelLoadError when the archive cannot be unpacked."""
    found = _folder_with(channel, marker, newest_first)
    archives = sorted(channel.glob("*.tar.gz"))
    if found is not None or len(archives) != 1:
        return found
    target = scratch / f"{channel.name}-unpacked"
    try:
        with tarfile.open(archives[0]) as archive:
            archive.extractall(target, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise ModelLoadError(f"cannot unpack {archives[0].name} in the {channel.name} channel: {exc}") from exc
    return _folder_with(target, marker, newest_first)
