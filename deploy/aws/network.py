"""The stack's security groups: the load balancer reaches only the gateway, the gateway the APIs, an API another
only where its code calls it, and workers accept nothing.

One group per process. Ingress and egress between groups are their own resources (a group naming another inline,
both ways, would be a cycle); each process may leave the VPC on HTTPS only (AWS APIs, Google, Hugging Face, through
the NAT gateway). Which API a process calls is `Process.calls` (deploy/aws/processes.py), which a unit test checks
against the URL settings each process's code reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy.aws.processes import PROCESSES, Process, api_of

Json = dict[str, Any]
Add = Callable[..., str]

LOAD_BALANCER_GROUP = "LoadBalancerSecurityGroup"
HTTPS_OUT = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0",
             "Description": "AWS APIs and other HTTPS services, through the NAT gateway"}


def group_of(process: Process) -> str:
    return process.logical_id + "SecurityGroup"


def _ref(name: str) -> Json:
    return {"Ref": name}


def calls() -> list[tuple[Process, Process]]:
    """(caller, callee API) for every HTTP call between processes."""
    return [(caller, api_of(service)) for caller in PROCESSES for service in caller.calls]


def security_groups(add: Add, tags: list[Json]) -> None:
    gateway = next(p for p in PROCESSES if p.public)
    assert gateway.port is not None
    add(LOAD_BALANCER_GROUP, "AWS::EC2::SecurityGroup", {
        "GroupDescription": "The public load balancer: HTTPS, and HTTP only to redirect to it; out to the gateway only",
        "VpcId": _ref("VpcId"), "SecurityGroupIngress": [
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"},
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "0.0.0.0/0"}],
        "SecurityGroupEgress": [{"IpProtocol": "tcp", "FromPort": gateway.port, "ToPort": gateway.port,
                                 "DestinationSecurityGroupId": _ref(group_of(gateway)),
                                 "Description": "the gateway's tasks"}],
        "Tags": tags})
    for process in PROCESSES:
        what = "from the load balancer" if process.public else \
            "from the processes that call it" if process.kind == "api" else "no inbound"
        add(group_of(process), "AWS::EC2::SecurityGroup", {
            "GroupDescription": f"{process.name}: {what}; out on HTTPS and to the APIs it calls",
            "VpcId": _ref("VpcId"), "SecurityGroupEgress": [HTTPS_OUT], "Tags": tags})
    add(gateway.logical_id + "FromLoadBalancer", "AWS::EC2::SecurityGroupIngress", {
        "GroupId": _ref(group_of(gateway)), "SourceSecurityGroupId": _ref(LOAD_BALANCER_GROUP),
        "IpProtocol": "tcp", "FromPort": gateway.port, "ToPort": gateway.port,
        "Description": "requests and health checks from the load balancer"})
    for caller, callee in calls():
        assert callee.port is not None
        port = {"IpProtocol": "tcp", "FromPort": callee.port, "ToPort": callee.port}
        add(f"{callee.logical_id}From{caller.logical_id}", "AWS::EC2::SecurityGroupIngress", {
            "GroupId": _ref(group_of(callee)), "SourceSecurityGroupId": _ref(group_of(caller)), **port,
            "Description": f"{caller.name} calls {callee.name}"})
        add(f"{caller.logical_id}To{callee.logical_id}", "AWS::EC2::SecurityGroupEgress", {
            "GroupId": _ref(group_of(caller)), "DestinationSecurityGroupId": _ref(group_of(callee)), **port,
            "Description": f"{caller.name} calls {callee.name}"})
