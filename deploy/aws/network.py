"""The stack's network: the public load balancer, and security groups by which the load balancer reaches only the
gateway, the gateway the APIs, an API another only where its code calls it, and workers accept nothing.

One group per process. Ingress and egress between groups are their own resources (a group naming another inline,
both ways, would be a cycle); each process may leave the VPC on HTTPS only (AWS APIs, Google, Hugging Face, through
the NAT gateway). Which API a process calls is `Process.calls` (deploy/aws/processes.py), which a unit test checks
against the URL settings each process's code reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy.aws.cfn import Json, ref
from deploy.aws.processes import PROCESSES, Process, api_of

Add = Callable[..., Any]

LOAD_BALANCER_GROUP = "LoadBalancerSecurityGroup"
HTTPS_OUT = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0",
             "Description": "AWS APIs and other HTTPS services, through the NAT gateway"}


def group_of(process: Process) -> str:
    return process.logical_id + "SecurityGroup"


def calls() -> list[tuple[Process, Process]]:
    """(caller, callee API) for every HTTP call between processes."""
    return [(caller, api_of(service)) for caller in PROCESSES for service in caller.calls]


def security_groups(add: Add, tags: list[Json]) -> None:
    gateway = next(p for p in PROCESSES if p.public)
    assert gateway.port is not None
    add(LOAD_BALANCER_GROUP, "AWS::EC2::SecurityGroup", {
        "GroupDescription": "The public load balancer: HTTPS, and HTTP only to redirect to it; out to the gateway only",
        "VpcId": ref("VpcId"), "SecurityGroupIngress": [
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"},
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "0.0.0.0/0"}],
        "SecurityGroupEgress": [{"IpProtocol": "tcp", "FromPort": gateway.port, "ToPort": gateway.port,
                                 "DestinationSecurityGroupId": ref(group_of(gateway)),
                                 "Description": "the gateway's tasks"}],
        "Tags": tags})
    for process in PROCESSES:
        what = "from the load balancer" if process.public else \
            "from the processes that call it" if process.kind == "api" else "no inbound"
        add(group_of(process), "AWS::EC2::SecurityGroup", {
            "GroupDescription": f"{process.name}: {what}; out on HTTPS and to the APIs it calls",
            "VpcId": ref("VpcId"), "SecurityGroupEgress": [HTTPS_OUT], "Tags": tags})
    add(gateway.logical_id + "FromLoadBalancer", "AWS::EC2::SecurityGroupIngress", {
        "GroupId": ref(group_of(gateway)), "SourceSecurityGroupId": ref(LOAD_BALANCER_GROUP),
        "IpProtocol": "tcp", "FromPort": gateway.port, "ToPort": gateway.port,
        "Description": "requests and health checks from the load balancer"})
    for caller, callee in calls():
        assert callee.port is not None
        port = {"IpProtocol": "tcp", "FromPort": callee.port, "ToPort": callee.port}
        add(f"{callee.logical_id}From{caller.logical_id}", "AWS::EC2::SecurityGroupIngress", {
            "GroupId": ref(group_of(callee)), "SourceSecurityGroupId": ref(group_of(caller)), **port,
            "Description": f"{caller.name} calls {callee.name}"})
        add(f"{caller.logical_id}To{callee.logical_id}", "AWS::EC2::SecurityGroupEgress", {
            "GroupId": ref(group_of(caller)), "DestinationSecurityGroupId": ref(group_of(callee)), **port,
            "Description": f"{caller.name} calls {callee.name}"})


def load_balancer(add: Add, prefix: str, tags: list[Json]) -> None:
    """The public load balancer: HTTPS to the gateway's tasks, HTTP only to redirect to HTTPS."""
    gateway = next(p for p in PROCESSES if p.public)
    add("LoadBalancer", "AWS::ElasticLoadBalancingV2::LoadBalancer", {
        "Name": f"{prefix}"[:32], "Type": "application", "Scheme": "internet-facing",
        "Subnets": ref("PublicSubnetIds"), "SecurityGroups": [ref(LOAD_BALANCER_GROUP)],
        "LoadBalancerAttributes": [
            # Live updates (Server-Sent Events) and big uploads hold a connection open.
            {"Key": "idle_timeout.timeout_seconds", "Value": "300"},
            {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"}],
        "Tags": tags})
    add("GatewayTargetGroup", "AWS::ElasticLoadBalancingV2::TargetGroup", {
        "TargetType": "ip", "Protocol": "HTTP", "Port": gateway.port, "VpcId": ref("VpcId"),
        "HealthCheckPath": "/healthz", "HealthCheckIntervalSeconds": 15, "Matcher": {"HttpCode": "200"},
        "TargetGroupAttributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}],
        "Tags": tags})
    add("HttpsListener", "AWS::ElasticLoadBalancingV2::Listener", {
        "LoadBalancerArn": ref("LoadBalancer"), "Protocol": "HTTPS", "Port": 443,
        "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
        "Certificates": [{"CertificateArn": ref("CertificateArn")}],
        "DefaultActions": [{"Type": "forward", "TargetGroupArn": ref("GatewayTargetGroup")}]})
    add("HttpRedirectListener", "AWS::ElasticLoadBalancingV2::Listener", {
        "LoadBalancerArn": ref("LoadBalancer"), "Protocol": "HTTP", "Port": 80,
        "DefaultActions": [{"Type": "redirect", "RedirectConfig": {
            "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}]})
