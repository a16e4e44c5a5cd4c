"""CloudFormation's intrinsic functions, as the template's modules write them."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def sub(text: str) -> Any:
    """Fn::Sub where the text has variables, the text itself where it has none."""
    return {"Fn::Sub": text} if "${" in text else text


def ref(name: str) -> Json:
    return {"Ref": name}


def get_att(logical_id: str, attribute: str) -> Json:
    return {"Fn::GetAtt": [logical_id, attribute]}


def objects_arn(bucket_arn: Any, pattern: str) -> Json:
    """The bucket's objects whose keys match `pattern` (`training-jobs/*`, `*`)."""
    return {"Fn::Join": ["", [bucket_arn, f"/{pattern}"]]}
