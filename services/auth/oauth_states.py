"""Google sign-ins under way: what the callback needs to finish one (the nonce, the PKCE verifier, where to
land), kept for a few minutes under a hash of its `state` and taken exactly once by a conditional delete,
so a state (and the code that came with it) cannot be played twice."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

Mode = Literal["redirect", "popup"]


@dataclass(frozen=True)
class PendingSignIn:
    nonce: str
    code_verifier: str
    mode: Mode
    next_path: str
    redirect_uri: str
    created_at: int


class OAuthStatesStore:
    def __init__(self, dynamodb: Any, table: str, clock: Any = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    async def put(self, state_key: str, pending: PendingSignIn, ttl_s: int) -> None:
        item = {"state": {"S": state_key}, "nonce": {"S": pending.nonce},
                "code_verifier": {"S": pending.code_verifier}, "mode": {"S": pending.mode},
                "next": {"S": pending.next_path}, "redirect_uri": {"S": pending.redirect_uri},
                "created": {"N": str(pending.created_at)}, "expires_at": {"N": str(pending.created_at + ttl_s)}}
        await self._db.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(#s)",
                                ExpressionAttributeNames={"#s": "state"})

    async def take(self, state_key: str) -> PendingSignIn | None:
        """The pending sign-in, removed; None when it is unknown, already taken or expired (TTL deletion
        lags by up to days, so the expiry is checked here too)."""
        try:
            result = await self._db.delete_item(TableName=self._table, Key={"state": {"S": state_key}},
                                                ConditionExpression="attribute_exists(#s)",
                                                ExpressionAttributeNames={"#s": "state"}, ReturnValues="ALL_OLD")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        item = result.get("Attributes")
        if not item or int(item["expires_at"]["N"]) <= int(self._clock()):
            return None
        mode: Mode = "popup" if item["mode"]["S"] == "popup" else "redirect"
        return PendingSignIn(nonce=item["nonce"]["S"], code_verifier=item["code_verifier"]["S"], mode=mode,
                             next_path=item["next"]["S"], redirect_uri=item["redirect_uri"]["S"],
                             created_at=int(item["created"]["N"]))
