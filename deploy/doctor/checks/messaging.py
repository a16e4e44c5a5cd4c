"""The messaging wiring shared/contracts/resources.py describes: topics, queues with their DLQ redrive, filtered raw
subscriptions (and the queue policies that let SNS deliver), and the EventBridge rule for SageMaker's events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from botocore.exceptions import ClientError

from deploy.doctor.context import Context
from deploy.doctor.model import Check, failed, passed, warned
from deploy.doctor.runner import guarded
from shared.contracts.resources import PREFIX, EventRule, Queue, Subscription, Topic

_NO_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def normalise(pattern: Any) -> Any:
    """A filter policy or event pattern, with list order ignored."""
    if isinstance(pattern, dict):
        return {k: normalise(v) for k, v in pattern.items()}
    if isinstance(pattern, list):
        return sorted((normalise(v) for v in pattern), key=json.dumps)
    return pattern


async def _queue_url(ctx: Context, name: str) -> str | None:
    sqs = await ctx.client("sqs")
    try:
        return str((await sqs.get_queue_url(QueueName=name))["QueueUrl"])
    except ClientError as exc:
        if _code(exc) not in _NO_QUEUE:
            raise
        return None


async def _topic(ctx: Context, topic: Topic) -> Check:
    check, name = f"topic:{topic.name}", ctx.name(topic.name)
    sns = await ctx.client("sns")
    arn = await ctx.arn("sns", name)
    try:
        attributes = (await sns.get_topic_attributes(TopicArn=arn)).get("Attributes", {})
    except ClientError as exc:
        if _code(exc) not in ("NotFound", "NotFoundException"):
            raise
        return failed(check, f"topic {name} not found",
                      f"{ctx.provision_fix}; or `{ctx.aws_cli('sns', f'create-topic --name {name}')}`")
    # Events carry personal data (user.created an email): outside development a topic is encrypted (SSE-KMS).
    if not ctx.is_development and not attributes.get("KmsMasterKeyId"):
        set_key = f"set-topic-attributes --topic-arn {arn} --attribute-name KmsMasterKeyId --attribute-value <key>"
        return warned(check, f"topic {name} exists but keeps its messages unencrypted",
                      f"{ctx.provision_fix} (its topics use the stack's KMS key); or `{ctx.aws_cli('sns', set_key)}`")
    return passed(check, f"topic {name} exists ({topic.owner} publishes to it)")


async def _queue(ctx: Context, queue: Queue) -> Check:
    check, name = f"queue:{queue.name}", ctx.name(queue.name)
    url = await _queue_url(ctx, name)
    if url is None:
        return failed(check, f"queue {name} not found", ctx.provision_fix)
    sqs = await ctx.client("sqs")
    attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    dlq_arn = await ctx.arn("sqs", f"{name}-dlq")
    redrive = json.dumps({"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receives)})})
    fix = (f"{ctx.aws_cli('sqs', f'create-queue --queue-name {name}-dlq')}; "
           f"{ctx.aws_cli('sqs', f'set-queue-attributes --queue-url {url} --attributes')} '{redrive}'")
    if "RedrivePolicy" not in attributes:
        return failed(check, f"queue {name} has no DLQ redrive: a poison message is retried for ever", fix)
    policy = json.loads(attributes["RedrivePolicy"])
    target = str(policy.get("deadLetterTargetArn", ""))
    if await _queue_url(ctx, target.rsplit(":", 1)[-1]) is None:
        return failed(check, f"queue {name} redrives to {target}, which does not exist", fix)
    receives = int(policy.get("maxReceiveCount", 0))
    if receives != queue.max_receives:
        return warned(check, f"queue {name} moves messages to its DLQ after {receives} receives; the services "
                      f"expect {queue.max_receives} (shared/contracts/resources.py)", fix)
    return passed(check, f"queue {name}: DLQ {target.rsplit(':', 1)[-1]} after {receives} receives")


async def _find_subscription(ctx: Context, topic_arn: str, queue_arn: str) -> str | None:
    sns = await ctx.client("sns")
    token: str | None = None
    while True:
        page = await sns.list_subscriptions_by_topic(TopicArn=topic_arn, **({"NextToken": token} if token else {}))
        for sub in page.get("Subscriptions", []):
            if sub.get("Endpoint") == queue_arn and sub.get("Protocol") == "sqs":
                return str(sub["SubscriptionArn"])
        token = page.get("NextToken")
        if not token:
            return None


def subscription_check_name(sub: Subscription) -> str:
    short = {name: name.removeprefix(f"{PREFIX}-") for name in (sub.topic, sub.queue)}
    return f"subscription:{short[sub.topic]}->{short[sub.queue]}"


def subscription_problems(sub: Subscription, attributes: dict[str, str]) -> list[str]:
    problems = []
    wanted = {"type": list(sub.event_types)}
    raw_policy = attributes.get("FilterPolicy")
    if not raw_policy:
        problems.append("no filter policy: the queue receives every event on the topic")
    elif normalise(json.loads(raw_policy)) != normalise(wanted):
        problems.append(f"filter policy is {raw_policy}, expected {json.dumps(wanted)}")
    if attributes.get("FilterPolicyScope", "MessageAttributes") != "MessageAttributes":
        problems.append(f"filter policy scope is {attributes['FilterPolicyScope']}, expected MessageAttributes")
    if (attributes.get("RawMessageDelivery", "false").lower() == "true") != sub.raw_delivery:
        problems.append(f"raw message delivery is {attributes.get('RawMessageDelivery', 'false')}, "
                        f"expected {str(sub.raw_delivery).lower()}")
    return problems


async def _subscription(ctx: Context, sub: Subscription) -> Check:
    check = subscription_check_name(sub)
    topic, queue = ctx.name(sub.topic), ctx.name(sub.queue)
    topic_arn, queue_arn = await ctx.arn("sns", topic), await ctx.arn("sqs", queue)
    policy = json.dumps({"type": list(sub.event_types)})
    arn = await _find_subscription(ctx, topic_arn, queue_arn)
    if arn is None:
        attributes = json.dumps({"FilterPolicy": policy, "RawMessageDelivery": str(sub.raw_delivery).lower()})
        return failed(check, f"{queue} is not subscribed to {topic}: it never hears {', '.join(sub.event_types)}",
                      f"{ctx.aws_cli('sns', f'subscribe --topic-arn {topic_arn} --protocol sqs')} "
                      f"--notification-endpoint {queue_arn} --attributes '{attributes}'; the queue's policy must "
                      f"also let the topic send: {ctx.provision_fix}")
    sns = await ctx.client("sns")
    attributes = (await sns.get_subscription_attributes(SubscriptionArn=arn))["Attributes"]
    problems = subscription_problems(sub, attributes)
    if problems:
        set_attribute = ctx.aws_cli("sns", f"set-subscription-attributes --subscription-arn {arn} --attribute-name")
        return failed(check, f"{topic} -> {queue}: " + "; ".join(problems),
                      f"{set_attribute} FilterPolicy --attribute-value '{policy}'; "
                      f"{set_attribute} RawMessageDelivery --attribute-value {str(sub.raw_delivery).lower()}")
    if not await _queue_policy_names(ctx, queue, topic_arn):
        return warned(check, f"{topic} -> {queue} is subscribed, but the queue policy does not name the topic: "
                      "unless it allows SNS some other way, SNS cannot deliver", ctx.provision_fix)
    return passed(check, f"{topic} -> {queue}: {', '.join(sub.event_types)}, raw delivery")


async def _queue_policy_names(ctx: Context, queue: str, source_arn: str) -> bool:
    url = await _queue_url(ctx, queue)
    if url is None:
        return False
    sqs = await ctx.client("sqs")
    attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])).get("Attributes", {})
    return source_arn in attributes.get("Policy", "")


async def _rule(ctx: Context, rule: EventRule) -> Check:
    check, queue = f"rule:{rule.name}", ctx.name(rule.queue)
    queue_arn = await ctx.arn("sqs", queue)
    events = await ctx.client("events")
    put_rule = ctx.aws_cli("events", f"put-rule --name {rule.name} --event-pattern '{json.dumps(rule.pattern)}'")
    put_targets = ctx.aws_cli("events", f"put-targets --rule {rule.name} --targets Id={queue},Arn={queue_arn}")
    try:
        described = await events.describe_rule(Name=rule.name)
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
        return failed(check, f"EventBridge rule {rule.name} not found: SageMaker's job state changes never reach "
                      "training", f"{put_rule}; {put_targets}")
    pattern = json.loads(described.get("EventPattern") or "{}")
    if normalise(pattern) != normalise(rule.pattern):
        return failed(check, f"rule {rule.name} matches {json.dumps(pattern)}, expected {json.dumps(rule.pattern)}",
                      put_rule)
    if described.get("State") != "ENABLED":
        return failed(check, f"rule {rule.name} is {described.get('State')}",
                      ctx.aws_cli("events", f"enable-rule --name {rule.name}"))
    targets = (await events.list_targets_by_rule(Rule=rule.name)).get("Targets", [])
    if queue_arn not in {t.get("Arn") for t in targets}:
        return failed(check, f"rule {rule.name} does not target {queue} "
                      f"(targets: {', '.join(t.get('Arn', '?') for t in targets) or 'none'})", put_targets)
    if not await _queue_policy_names(ctx, queue, str(described.get("Arn", rule.name))):
        return warned(check, f"rule {rule.name} targets {queue}, but the queue policy does not name the rule: "
                      "unless it allows EventBridge some other way, nothing arrives", ctx.provision_fix)
    return passed(check, f"rule {rule.name} sends {rule.pattern.get('detail-type', ['events'])[0]} to {queue}")


async def topics(ctx: Context) -> list[Check]:
    return list(await asyncio.gather(*(guarded(ctx, f"topic:{t.name}", _topic(ctx, t)) for t in ctx.resources.topics)))


async def queues(ctx: Context) -> list[Check]:
    return list(await asyncio.gather(*(guarded(ctx, f"queue:{q.name}", _queue(ctx, q)) for q in ctx.resources.queues)))


async def subscriptions(ctx: Context) -> list[Check]:
    return list(await asyncio.gather(*(guarded(ctx, subscription_check_name(s), _subscription(ctx, s))
                                       for s in ctx.resources.subscriptions)))


async def rules(ctx: Context) -> list[Check]:
    return list(await asyncio.gather(*(guarded(ctx, f"rule:{r.name}", _rule(ctx, r)) for r in ctx.resources.rules)))
