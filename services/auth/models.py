from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, field_validator

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer is refused, never silently truncated


@dataclass(frozen=True)
class ClientInfo:
    """Who is asking, as far as the request tells: the client's address and its User-Agent (cut short)."""

    ip: str
    user_agent: str = ""


def normalise_email(value: str) -> str:
    return value.strip().lower()


class Credentials(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        value = normalise_email(value)
        if not EMAIL.match(value):
            raise ValueError("Enter a valid email address")
        return value


class Registration(Credentials):
    name: str | None = Field(default=None, max_length=200)


class User(BaseModel):
    id: str
    email: str
    name: str | None = None
    created_at: int
    providers: list[str] = ["password"]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": "user", "email": self.email, "name": self.name,
                "created_at": self.created_at, "providers": self.providers}


class StoredUser(User):
    password_hash: str | None = None
    google_sub: str | None = None


class DeleteAccount(BaseModel):
    password: str | None = Field(default=None, max_length=1024)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)
