"""DynamoDB items <-> inference's records: plain attributes, with nested values (lists, objects) kept as JSON
strings so a record reads back exactly as it was written."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_ser, _de = TypeSerializer(), TypeDeserializer()


def attribute(value: Any) -> dict[str, Any]:
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    elif isinstance(value, float):
        value = Decimal(repr(value))
    serialized: dict[str, Any] = _ser.serialize(value)
    return serialized


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: attribute(value) for key, value in values.items() if value is not None}


def from_item(item: dict[str, Any], json_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in item.items():
        value = _de.deserialize(raw)
        if key in json_fields and isinstance(value, str):
            value = json.loads(value)
        elif isinstance(value, Decimal):
            value = int(value) if value == int(value) else float(value)
        values[key] = value
    return values


def update_expression(changes: dict[str, Any], remove: tuple[str, ...] = ()) -> tuple[str, dict[str, str],
                                                                                    dict[str, Any]]:
    """`SET #f0 = :v0, ... [REMOVE #r0 ...]` with its names and values; None values are removed."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    sets: list[str] = []
    removes: list[str] = []
    for i, (key, value) in enumerate(changes.items()):
        names[f"#f{i}"] = key
        if value is None:
            removes.append(f"#f{i}")
        else:
            values[f":v{i}"] = attribute(value)
            sets.append(f"#f{i} = :v{i}")
    for i, key in enumerate(remove):
        names[f"#r{i}"] = key
        removes.append(f"#r{i}")
    expression = ("SET " + ", ".join(sets) if sets else "") + (" REMOVE " + ", ".join(removes) if removes else "")
    return expression.strip(), names, values
