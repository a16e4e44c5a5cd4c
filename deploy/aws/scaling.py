"""Per-process scaling: APIs on CPU, queue workers on their queue's depth. Singletons (the reconcilers) do not scale."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy.aws.cfn import Json, get_att, ref
from deploy.aws.processes import Process

Add = Callable[..., Any]


def scaling(add: Add, prefix: str, process: Process, queue_name: Json | None) -> None:
    """APIs track CPU; a worker scales on its queue (`queue_name`, a QueueName attribute): out on a backlog, in
    once nothing has waited or been in flight for a while."""
    pid = process.logical_id
    target = add(pid + "ScalableTarget", "AWS::ApplicationAutoScaling::ScalableTarget", {
        "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
        "ResourceId": {"Fn::Join": ["/", ["service", ref("Cluster"), get_att(pid + "Service", "Name")]]},
        "MinCapacity": process.min_tasks, "MaxCapacity": process.max_tasks})
    if process.kind == "api":
        add(pid + "CpuScaling", "AWS::ApplicationAutoScaling::ScalingPolicy", {
            "PolicyName": f"{prefix}-{process.name}-cpu", "PolicyType": "TargetTrackingScaling",
            "ScalingTargetId": ref(target), "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                "TargetValue": 60, "ScaleOutCooldown": 60, "ScaleInCooldown": 300}})
        return
    assert queue_name is not None, f"{process.name} scales on a queue"
    # Out: a backlog of visible messages adds workers, more of them for a bigger backlog.
    add(pid + "ScaleOut", "AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyName": f"{prefix}-{process.name}-backlog-out", "PolicyType": "StepScaling",
        "ScalingTargetId": ref(target), "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ChangeInCapacity", "Cooldown": 60, "MetricAggregationType": "Maximum",
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 100,
                                 "ScalingAdjustment": 1},
                                {"MetricIntervalLowerBound": 100, "ScalingAdjustment": 3}]}})
    add(pid + "BacklogAlarm", "AWS::CloudWatch::Alarm", {
        "AlarmDescription": f"{process.name}: messages waiting in its queue",
        "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
        "Dimensions": [{"Name": "QueueName", "Value": queue_name}], "Statistic": "Maximum", "Period": 60,
        "EvaluationPeriods": 2, "Threshold": 10, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching", "AlarmActions": [ref(pid + "ScaleOut")]})
    # In: one worker fewer once nothing has waited or been in flight for 15 minutes, so a scale-in never
    # interrupts work in hand (which would only be redelivered, but late).
    add(pid + "ScaleIn", "AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyName": f"{prefix}-{process.name}-idle-in", "PolicyType": "StepScaling",
        "ScalingTargetId": ref(target), "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ChangeInCapacity", "Cooldown": 300, "MetricAggregationType": "Maximum",
            "StepAdjustments": [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": -1}]}})

    def metric(metric_id: str, name: str) -> Json:
        dimensions = [{"Name": "QueueName", "Value": queue_name}]
        return {"Id": metric_id, "ReturnData": False, "MetricStat": {"Stat": "Maximum", "Period": 300, "Metric": {
            "Namespace": "AWS/SQS", "MetricName": name, "Dimensions": dimensions}}}

    add(pid + "IdleAlarm", "AWS::CloudWatch::Alarm", {
        "AlarmDescription": f"{process.name}: nothing waiting or in flight",
        "Metrics": [metric("visible", "ApproximateNumberOfMessagesVisible"),
                    metric("inflight", "ApproximateNumberOfMessagesNotVisible"),
                    {"Id": "work", "Expression": "visible + inflight", "Label": "messages", "ReturnData": True}],
        "EvaluationPeriods": 3, "Threshold": 0, "ComparisonOperator": "LessThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching", "AlarmActions": [ref(pid + "ScaleIn")]})
