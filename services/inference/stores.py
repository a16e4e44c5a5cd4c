"""inference's tables: its fine-tuned models (projected from training.job.succeeded), deployments (GSI
`user-index`, and the sparse `status-index`: only deployments not yet over carry `active_status`, so the
reconciler queries them instead of scanning) and evaluations.

A deployment's status moves only by a conditional write naming the statuses it may move from (ALLOWED_FROM), so
two workers (or a worker and the reconciler) never both take the same step."""

from __future__ import annotations

from typing import Any

from services.inference.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    Deployment,
    DeploymentStatus,
    Evaluation,
    FileView,
    FineTunedModel,
)
from services.inference.records import from_item, to_item, update_expression
from shared.dynamo import all_items, items_of_user

ACTIVE_ATTRIBUTE = "active_status"
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "creating": (),
    "in_service": ("creating",),
    "deleting": ("creating", "in_service"),
    "failed": ("deleting",),  # a failure first takes down what was built (deployments.py)
    "deleted": ("deleting",),
}


class ModelsStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def put(self, model: FineTunedModel) -> bool:
        """Once per model: a repeated job.succeeded (at-least-once delivery) writes nothing."""
        try:
            await self._db.put_item(TableName=self._table, Item=to_item(model.model_dump()),
                                    ConditionExpression="attribute_not_exists(model_id)")
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    async def get(self, model_id: str) -> FineTunedModel | None:
        item = (await self._db.get_item(TableName=self._table, Key={"model_id": {"S": model_id}},
                                        ConsistentRead=True)).get("Item")
        return FineTunedModel.model_validate(from_item(item)) if item else None

    async def for_user(self, user_id: str) -> list[FineTunedModel]:
        items = await items_of_user(self._db, self._table, "user-index", user_id)
        return sorted((FineTunedModel.model_validate(from_item(i)) for i in items), key=lambda m: -m.created_at)

    async def mark_deleted(self, model_id: str) -> bool:
        """True for the one caller that deleted it."""
        try:
            await self._db.update_item(TableName=self._table, Key={"model_id": {"S": model_id}},
                                       UpdateExpression="SET deleted = :t",
                                       ConditionExpression="attribute_exists(model_id) AND deleted = :f",
                                       ExpressionAttributeValues={":t": {"BOOL": True}, ":f": {"BOOL": False}})
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    async def delete(self, model_id: str) -> None:
        await self._db.delete_item(TableName=self._table, Key={"model_id": {"S": model_id}})


class DeploymentsStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def create(self, deployment: Deployment) -> None:
        item = to_item(deployment.model_dump())
        item[ACTIVE_ATTRIBUTE] = {"S": deployment.status}
        await self._db.put_item(TableName=self._table, Item=item,
                                ConditionExpression="attribute_not_exists(deployment_id)")

    async def get(self, deployment_id: str) -> Deployment | None:
        item = (await self._db.get_item(TableName=self._table, Key={"deployment_id": {"S": deployment_id}},
                                        ConsistentRead=True)).get("Item")
        return Deployment.model_validate(from_item(item)) if item else None

    async def for_user(self, user_id: str) -> list[Deployment]:
        items = await items_of_user(self._db, self._table, "user-index", user_id, ScanIndexForward=False)
        return [Deployment.model_validate(from_item(i)) for i in items]

    async def active(self) -> list[Deployment]:
        found: list[Deployment] = []
        for status in ACTIVE_DEPLOYMENT_STATUSES:
            found += [Deployment.model_validate(from_item(i)) async for i in all_items(
                self._db, TableName=self._table, IndexName="status-index", KeyConditionExpression="#a = :s",
                ExpressionAttributeNames={"#a": ACTIVE_ATTRIBUTE}, ExpressionAttributeValues={":s": {"S": status}})]
        return found

    async def transition(self, deployment_id: str, to: DeploymentStatus, **changes: Any) -> bool:
        """Move to `to` if the deployment is in a status it may come from; False when another writer got there
        first (or it is over)."""
        expected = ALLOWED_FROM[to]
        if not expected:
            return False
        changes = {"status": to, **changes}
        if to in ACTIVE_DEPLOYMENT_STATUSES:
            changes[ACTIVE_ATTRIBUTE] = to
            expression, names, values = update_expression(changes)
        else:
            expression, names, values = update_expression(changes, remove=(ACTIVE_ATTRIBUTE,))
        names["#status"] = "status"
        conditions = []
        for i, state in enumerate(expected):
            values[f":e{i}"] = {"S": state}
            conditions.append(f":e{i}")
        try:
            await self._db.update_item(TableName=self._table, Key={"deployment_id": {"S": deployment_id}},
                                       UpdateExpression=expression, ExpressionAttributeNames=names,
                                       ExpressionAttributeValues=values,
                                       ConditionExpression=f"#status IN ({', '.join(conditions)})")
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    async def touch(self, deployment_id: str, at: int) -> None:
        """The deployment answered a request at `at` (what idle takedown looks at); only moves forward."""
        try:
            await self._db.update_item(
                TableName=self._table, Key={"deployment_id": {"S": deployment_id}},
                UpdateExpression="SET last_used_at = :t",
                ConditionExpression="attribute_exists(deployment_id) AND "
                                    "(attribute_not_exists(last_used_at) OR last_used_at < :t)",
                ExpressionAttributeValues={":t": {"N": str(at)}})
        except self._db.exceptions.ConditionalCheckFailedException:
            pass

    async def delete(self, deployment_id: str) -> None:
        await self._db.delete_item(TableName=self._table, Key={"deployment_id": {"S": deployment_id}})


class EvaluationsStore:
    _JSON = ("models", "summary")

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def create(self, evaluation: Evaluation) -> None:
        await self._db.put_item(TableName=self._table, Item=to_item(evaluation.model_dump()),
                                ConditionExpression="attribute_not_exists(evaluation_id)")

    async def get(self, evaluation_id: str) -> Evaluation | None:
        item = (await self._db.get_item(TableName=self._table, Key={"evaluation_id": {"S": evaluation_id}},
                                        ConsistentRead=True)).get("Item")
        return Evaluation.model_validate(from_item(item, self._JSON)) if item else None

    async def for_user(self, user_id: str) -> list[Evaluation]:
        items = await items_of_user(self._db, self._table, "user-index", user_id, ScanIndexForward=False)
        return [Evaluation.model_validate(from_item(i, self._JSON)) for i in items]

    async def update(self, evaluation_id: str, only_from: tuple[str, ...], **changes: Any) -> bool:
        expression, names, values = update_expression(changes)
        names["#status"] = "status"
        for i, state in enumerate(only_from):
            values[f":e{i}"] = {"S": state}
        condition = f"#status IN ({', '.join(f':e{i}' for i in range(len(only_from)))})"
        try:
            await self._db.update_item(TableName=self._table, Key={"evaluation_id": {"S": evaluation_id}},
                                       UpdateExpression=expression, ExpressionAttributeNames=names,
                                       ExpressionAttributeValues=values, ConditionExpression=condition)
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    async def delete(self, evaluation_id: str) -> None:
        await self._db.delete_item(TableName=self._table, Key={"evaluation_id": {"S": evaluation_id}})


_FILE_STATUS_RANK = {"uploaded": 0, "processed": 1, "error": 1, "deleted": 2}


class FilesStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def put(self, view: FileView) -> None:
        """A file's state never goes back (events may arrive out of order): written only over a lower rank."""
        item = to_item(view.model_dump())
        item["rank"] = {"N": str(_FILE_STATUS_RANK[view.status])}
        try:
            await self._db.put_item(TableName=self._table, Item=item,
                                    ConditionExpression="attribute_not_exists(file_id) OR #r <= :r",
                                    ExpressionAttributeNames={"#r": "rank"},
                                    ExpressionAttributeValues={":r": item["rank"]})
        except self._db.exceptions.ConditionalCheckFailedException:
            pass

    async def get(self, file_id: str) -> FileView | None:
        item = (await self._db.get_item(TableName=self._table, Key={"file_id": {"S": file_id}},
                                        ConsistentRead=True)).get("Item")
        return FileView.model_validate(from_item(item)) if item else None

    async def delete_of(self, user_id: str) -> None:
        async for item in all_items(self._db, "scan", TableName=self._table, FilterExpression="user_id = :u",
                                    ExpressionAttributeValues={":u": {"S": user_id}}, ProjectionExpression="file_id"):
            await self._db.delete_item(TableName=self._table, Key={"file_id": item["file_id"]})
