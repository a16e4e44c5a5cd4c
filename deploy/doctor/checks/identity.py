"""`aws sts get-caller-identity`: who the doctor (and, with the same credentials, the services) acts as."""

from __future__ import annotations

from deploy.doctor.context import Context
from deploy.doctor.model import Check, passed


async def credentials(ctx: Context) -> Check:
    caller = await ctx.identity()
    where = ctx.endpoint("sts") or f"AWS ({ctx.region})"
    return passed("credentials", f"account {caller['Account']} as {caller['Arn']} at {where}")
