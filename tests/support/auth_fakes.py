"""In-memory stand-ins for auth's audit log and login throttle (services/auth/deps.py), for unit tests."""

from __future__ import annotations

from services.auth.audit_log import AuditEntry
from services.auth.models import ClientInfo

CLIENT = ClientInfo(ip="192.0.2.1", user_agent="pytest")


class MemoryAudit:
    """Records what auth would write to its audit table."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, AuditEntry]] = []
        self.addresses: set[tuple[str, str]] = set()

    async def record(self, user_id: str, event_type: str, client: ClientInfo,
                     details: dict[str, str] | None = None) -> AuditEntry:
        entry = AuditEntry(entry_id=f"audit_{len(self.entries):022d}", type=event_type, created_at=0,
                           ip_address=client.ip, user_agent=client.user_agent, details=details or {})
        self.entries.append((user_id, entry))
        return entry

    async def page(self, user_id: str, limit: int, after: str | None) -> tuple[list[AuditEntry], bool]:
        mine = [e for u, e in reversed(self.entries) if u == user_id]
        return mine[:limit], len(mine) > limit

    async def is_new_address(self, user_id: str, address: str) -> bool:
        new = (user_id, address) not in self.addresses
        self.addresses.add((user_id, address))
        return new

    async def delete_user(self, user_id: str) -> None:
        self.entries = [(u, e) for u, e in self.entries if u != user_id]

    def types(self, user_id: str) -> list[str]:
        return [e.type for u, e in self.entries if u == user_id]


class NoThrottle:
    """A throttle that admits every check and counts failures."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}

    async def admit(self, email: str, address: str) -> None:
        pass

    async def succeeded(self, email: str, address: str) -> None:
        pass

    async def count_failure(self, user_id: str, window_s: int) -> int:
        self.failures[user_id] = self.failures.get(user_id, 0) + 1
        return self.failures[user_id]
