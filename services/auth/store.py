"""The users table. Emails are unique through a guard item written in the same transaction as the user:
a GSI cannot enforce uniqueness, a conditional write can."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from services.auth.models import StoredUser


class EmailTaken(Exception):
    pass


def _email_guard_id(email: str) -> str:
    return f"email#{email}"


class UsersStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def create(self, user: StoredUser) -> None:
        item: dict[str, Any] = {"id": {"S": user.id}, "email": {"S": user.email},
                                "created_at": {"N": str(user.created_at)},
                                "providers": {"SS": user.providers}}
        if user.name:
            item["name"] = {"S": user.name}
        if user.password_hash:
            item["password_hash"] = {"S": user.password_hash}
        try:
            await self._db.transact_write_items(TransactItems=[
                {"Put": {"TableName": self._table, "ConditionExpression": "attribute_not_exists(id)",
                         "Item": {"id": {"S": _email_guard_id(user.email)}, "user_id": {"S": user.id}}}},
                {"Put": {"TableName": self._table, "ConditionExpression": "attribute_not_exists(id)",
                         "Item": item}},
            ])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                raise EmailTaken(user.email) from exc
            raise

    async def get(self, user_id: str) -> StoredUser | None:
        if user_id.startswith("email#"):
            return None
        item = (await self._db.get_item(TableName=self._table, Key={"id": {"S": user_id}})).get("Item")
        return _user(item) if item else None

    async def by_email(self, email: str) -> StoredUser | None:
        result = await self._db.query(TableName=self._table, IndexName="email-index", Limit=1,
                                      KeyConditionExpression="email = :e",
                                      ExpressionAttributeValues={":e": {"S": email}})
        items = result.get("Items", [])
        return _user(items[0]) if items else None

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._db.update_item(TableName=self._table, Key={"id": {"S": user_id}},
                                   UpdateExpression="SET password_hash = :h",
                                   ExpressionAttributeValues={":h": {"S": password_hash}})


def _user(item: dict[str, Any]) -> StoredUser:
    return StoredUser(id=item["id"]["S"], email=item["email"]["S"], name=item.get("name", {}).get("S"),
                      created_at=int(item["created_at"]["N"]),
                      providers=sorted(item.get("providers", {}).get("SS", [])),
                      password_hash=item.get("password_hash", {}).get("S"))
