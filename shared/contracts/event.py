"""The base of every event payload model (the `data` of an envelope, shared/envelope.py)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    """The payload of one event type. Subclasses set TYPE (`resource.past_tense`) and declare their fields.

    Fields a consumer does not know are ignored, so a producer may add fields without breaking anyone; a missing
    or mistyped field fails the parse, which makes the message a permanent failure (shared/worker.py)."""

    TYPE: ClassVar[str]
    model_config = ConfigDict(extra="ignore", frozen=True)
