"""Every table shared/contracts/resources.py describes, under its configured name: key schema, GSIs and TTL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from botocore.exceptions import ClientError

from deploy.doctor.context import Context
from deploy.doctor.model import Check, failed, passed
from deploy.doctor.runner import guarded
from deploy.local.provision import table_request
from shared.contracts.resources import Index, Key, Table


def _schema(hash_key: Key, range_key: Key | None) -> list[tuple[str, str]]:
    return [(hash_key.name, "HASH")] + ([(range_key.name, "RANGE")] if range_key else [])


def _actual_schema(key_schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted(((k["AttributeName"], k["KeyType"]) for k in key_schema), key=lambda k: k[1])


def table_problems(expected: Table, description: dict[str, Any], ttl: dict[str, Any]) -> list[str]:
    """What differs between the described table and DescribeTable / DescribeTimeToLive's answers."""
    problems = []
    types = {a["AttributeName"]: a["AttributeType"] for a in description.get("AttributeDefinitions", [])}
    wanted = _schema(expected.hash_key, expected.range_key)
    if _actual_schema(description.get("KeySchema", [])) != wanted:
        problems.append(f"key schema is {_actual_schema(description.get('KeySchema', []))}, expected {wanted}")
    indexes = {i["IndexName"]: _actual_schema(i["KeySchema"]) for i in description.get("GlobalSecondaryIndexes", [])}
    for index in expected.indexes:
        if index.name not in indexes:
            problems.append(f"GSI {index.name} missing")
        elif indexes[index.name] != _schema(index.hash_key, index.range_key):
            problems.append(f"GSI {index.name} keys are {indexes[index.name]}, "
                            f"expected {_schema(index.hash_key, index.range_key)}")
    keys = [expected.hash_key, expected.range_key] + [k for i in expected.indexes for k in (i.hash_key, i.range_key)]
    for key in {k for k in keys if k is not None}:
        if key.name in types and types[key.name] != key.type:
            problems.append(f"attribute {key.name} has type {types[key.name]}, expected {key.type}")
    if expected.ttl_attribute:
        status, attribute = ttl.get("TimeToLiveStatus", "DISABLED"), ttl.get("AttributeName")
        if status not in ("ENABLED", "ENABLING") or attribute != expected.ttl_attribute:
            problems.append(f"TTL is {status} on {attribute or 'no attribute'}, expected ENABLED on "
                            f"{expected.ttl_attribute}")
    return problems


def _create_index_fix(ctx: Context, table: Table, name: str, index: Index) -> str:
    request = table_request(table)
    spec = next(i for i in request["GlobalSecondaryIndexes"] if i["IndexName"] == index.name)
    used = {index.hash_key.name} | ({index.range_key.name} if index.range_key else set())
    attributes = [a for a in request["AttributeDefinitions"] if a["AttributeName"] in used]
    return ctx.aws_cli("dynamodb", f"update-table --table-name {name} --attribute-definitions "
                                   f"'{json.dumps(attributes)}' --global-secondary-index-updates "
                                   f"'{json.dumps([{'Create': spec}])}'")


def _fix(ctx: Context, table: Table, name: str, problems: list[str]) -> str:
    fixes = []
    for index in table.indexes:
        if f"GSI {index.name} missing" in problems:
            fixes.append(_create_index_fix(ctx, table, name, index))
    if any(p.startswith("TTL") for p in problems):
        fixes.append(ctx.aws_cli("dynamodb", f"update-time-to-live --table-name {name} --time-to-live-specification "
                                             f"Enabled=true,AttributeName={table.ttl_attribute}"))
    if len(fixes) < len(problems):  # keys cannot change in place
        fixes.append(f"a table's keys cannot change: back up {name}, delete it and recreate it ({ctx.provision_fix})")
    return "; ".join(fixes)


async def _check_table(ctx: Context, table: Table) -> Check:
    name = ctx.name(table.name)
    check = f"table:{table.name}"
    db = await ctx.client("dynamodb")
    try:
        description = (await db.describe_table(TableName=name))["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        request = {**table_request(table), "TableName": name}
        return failed(check, f"table {name} not found in {ctx.region}",
                      f"{ctx.provision_fix}; or `{ctx.aws_cli('dynamodb', 'create-table --cli-input-json')} "
                      f"'{json.dumps(request)}'`")
    ttl = (await db.describe_time_to_live(TableName=name)).get("TimeToLiveDescription", {})
    problems = table_problems(table, description, ttl)
    if problems:
        return failed(check, f"table {name}: " + "; ".join(problems), _fix(ctx, table, name, problems))
    indexes = ", ".join(i.name for i in table.indexes) or "no GSI"
    ttl_note = f", TTL on {table.ttl_attribute}" if table.ttl_attribute else ""
    return passed(check, f"table {name}: keys {'/'.join(k for k, _ in _schema(table.hash_key, table.range_key))}, "
                         f"{indexes}{ttl_note}")


async def tables(ctx: Context) -> list[Check]:
    return list(await asyncio.gather(*(guarded(ctx, f"table:{t.name}", _check_table(ctx, t))
                                       for t in ctx.resources.tables)))
