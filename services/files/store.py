"""The files table (`llm-tuner-files`, GSI `user-files-index` on user_id)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.files.models import FileRecord
from shared.dynamo import items_of_user


class FilesStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def put(self, record: FileRecord) -> None:
        await self._db.put_item(TableName=self._table, Item=record_item(record),
                                ConditionExpression="attribute_not_exists(file_id)")

    async def get(self, file_id: str) -> FileRecord | None:
        item = (await self._db.get_item(TableName=self._table, Key={"file_id": {"S": file_id}},
                                        ConsistentRead=True)).get("Item")
        return _record(item) if item else None

    async def list_for_user(self, user_id: str) -> list[FileRecord]:
        return [_record(i) for i in await items_of_user(self._db, self._table, "user-files-index", user_id)]

    async def delete(self, file_id: str) -> None:
        await self._db.delete_item(TableName=self._table, Key={"file_id": {"S": file_id}})

    async def set_result(self, file_id: str, status: str, details: str | None, examples: int | None,
                         summary: Mapping[str, str | int] | None = None) -> bool:
        """Record the validation outcome once (with the report's summary fields); a repeated validation
        changes nothing."""
        names = {"#s": "status"}
        values: dict[str, Any] = {":s": {"S": status}, ":uploaded": {"S": "uploaded"}}
        update = "SET #s = :s"
        for i, (field, value) in enumerate((summary or {}).items()):
            names[f"#f{i}"] = field
            values[f":f{i}"] = {"N": str(value)} if isinstance(value, int) else {"S": str(value)}
            update += f", #f{i} = :f{i}"
        if details is not None:
            update += ", status_details = :d"
            values[":d"] = {"S": details}
        if examples is not None:
            update += ", examples = :n"
            values[":n"] = {"N": str(examples)}
        try:
            await self._db.update_item(TableName=self._table, Key={"file_id": {"S": file_id}},
                                       UpdateExpression=update, ConditionExpression="#s = :uploaded",
                                       ExpressionAttributeNames=names, ExpressionAttributeValues=values)
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False


def record_item(record: FileRecord) -> dict[str, Any]:
    """The record as a DynamoDB item (a transaction's Put writes it too: services/files/quota.py)."""
    return {k: ({"N": str(v)} if isinstance(v, int) else {"S": str(v)})
            for k, v in record.model_dump().items() if v is not None}


def _record(item: dict[str, Any]) -> FileRecord:
    return FileRecord.model_validate({k: (v["N"] if "N" in v else v["S"]) for k, v in item.items()})

