"""The users table. Emails (and Google identities) are unique through guard items written in the same
transaction as the user: a GSI cannot enforce uniqueness, a conditional write can."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from services.auth.models import StoredUser


class EmailTaken(Exception):
    pass


class IdentityTaken(Exception):
    pass


def _guard(kind: str, value: str) -> str:
    return f"{kind}#{value}"


class UsersStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def _put_guard(self, kind: str, value: str, user_id: str) -> dict[str, Any]:
        return {"Put": {"TableName": self._table, "ConditionExpression": "attribute_not_exists(id)",
                        "Item": {"id": {"S": _guard(kind, value)}, "user_id": {"S": user_id}}}}

    def _delete_guard(self, kind: str, value: str) -> dict[str, Any]:
        return {"Delete": {"TableName": self._table, "Key": {"id": {"S": _guard(kind, value)}}}}

    async def create(self, user: StoredUser) -> None:
        item: dict[str, Any] = {"id": {"S": user.id}, "email": {"S": user.email},
                                "created_at": {"N": str(user.created_at)}, "providers": {"SS": user.providers}}
        for key in ("name", "password_hash", "google_sub"):
            if getattr(user, key):
                item[key] = {"S": getattr(user, key)}
        writes = [self._put_guard("email", user.email, user.id),
                  {"Put": {"TableName": self._table, "ConditionExpression": "attribute_not_exists(id)", "Item": item}}]
        if user.google_sub:
            writes.append(self._put_guard("google", user.google_sub, user.id))
        try:
            await self._db.transact_write_items(TransactItems=writes)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                raise EmailTaken(user.email) from exc
            raise

    async def get(self, user_id: str) -> StoredUser | None:
        if "#" in user_id:
            return None
        item = (await self._db.get_item(TableName=self._table, Key={"id": {"S": user_id}},
                                        ConsistentRead=True)).get("Item")
        return _user(item) if item else None

    async def by_email(self, email: str) -> StoredUser | None:
        result = await self._db.query(TableName=self._table, IndexName="email-index", Limit=1,
                                      KeyConditionExpression="email = :e",
                                      ExpressionAttributeValues={":e": {"S": email}})
        items = result.get("Items", [])
        return _user(items[0]) if items else None

    async def by_google_subject(self, subject: str) -> StoredUser | None:
        guard = (await self._db.get_item(TableName=self._table, Key={"id": {"S": _guard("google", subject)}},
                                         ConsistentRead=True)).get("Item")
        return await self.get(guard["user_id"]["S"]) if guard else None

    async def link_google(self, user_id: str, subject: str, name: str | None) -> None:
        update = "SET google_sub = :s ADD providers :p"
        values: dict[str, Any] = {":s": {"S": subject}, ":p": {"SS": ["google"]}}
        if name:
            update = "SET google_sub = :s, #n = if_not_exists(#n, :n) ADD providers :p"
            values[":n"] = {"S": name}
        try:
            await self._db.transact_write_items(TransactItems=[
                self._put_guard("google", subject, user_id),
                {"Update": {"TableName": self._table, "Key": {"id": {"S": user_id}}, "UpdateExpression": update,
                            "ConditionExpression": "attribute_exists(id)", "ExpressionAttributeValues": values,
                            **({"ExpressionAttributeNames": {"#n": "name"}} if name else {})}},
            ])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                raise IdentityTaken(subject) from exc
            raise

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._db.update_item(TableName=self._table, Key={"id": {"S": user_id}},
                                   UpdateExpression="SET password_hash = :h",
                                   ExpressionAttributeValues={":h": {"S": password_hash}})

    async def clear_password(self, user_id: str) -> None:
        await self._db.update_item(TableName=self._table, Key={"id": {"S": user_id}},
                                   UpdateExpression="REMOVE password_hash DELETE providers :p",
                                   ExpressionAttributeValues={":p": {"SS": ["password"]}})

    async def delete(self, user: StoredUser) -> None:
        writes = [{"Delete": {"TableName": self._table, "Key": {"id": {"S": user.id}}}},
                  self._delete_guard("email", user.email)]
        if user.google_sub:
            writes.append(self._delete_guard("google", user.google_sub))
        await self._db.transact_write_items(TransactItems=writes)


def _user(item: dict[str, Any]) -> StoredUser:
    def text(key: str) -> str | None:
        return item[key]["S"] if key in item else None

    return StoredUser(id=item["id"]["S"], email=item["email"]["S"], name=text("name"),
                      created_at=int(item["created_at"]["N"]),
                      providers=sorted(item.get("providers", {}).get("SS", [])),
                      password_hash=text("password_hash"), google_sub=text("google_sub"))
