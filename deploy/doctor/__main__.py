"""`python -m deploy.doctor [--json] [--local | --no-local] [--only NAME ...]`: exit status 1 when a check fails."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from pydantic import ValidationError

from deploy.doctor import report
from deploy.doctor.checks import CHECKS
from deploy.doctor.context import apply_local_cluster_env, load_context
from deploy.doctor.model import failed
from deploy.doctor.runner import run_and_close
from shared.settings import ServiceSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.doctor", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", default=None,
                       help="check the local cluster `make up` runs (moto on :4566, the SageMaker emulator on :4567)")
    where.add_argument("--no-local", dest="local", action="store_false",
                       help="check the AWS the environment points at, even in development")
    parser.add_argument("--only", action="append", metavar="NAME", choices=[p.name for p in CHECKS],
                        help="run only this check (repeatable): " + ", ".join(p.name for p in CHECKS))
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds each check may take (default 20)")
    return parser


def _use_local_cluster(flag: bool | None) -> bool:
    """Unless told, development without an AWS_ENDPOINT_URL means the local cluster, as for `make up`."""
    if flag is not None:
        return flag
    try:
        development = ServiceSettings().is_development
    except ValidationError:
        return False
    return development and not os.environ.get("AWS_ENDPOINT_URL")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    local = _use_local_cluster(args.local)
    if local:
        apply_local_cluster_env(os.environ)
    try:
        ctx = load_context()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        checks = [failed("settings", f"the services cannot load their settings: {problems}",
                         "correct the variables named (environment or .env)")]
        print(report.as_json(checks, {}) if args.json else report.text(checks))
        return 1
    probes = [p for p in CHECKS if not args.only or p.name in args.only]
    checks = asyncio.run(run_and_close(ctx, probes, args.timeout))
    target = {"environment": ctx.environment, "region": ctx.region,
              "aws_endpoint": ctx.endpoint("sts") or "AWS", "sagemaker_endpoint": ctx.endpoint("sagemaker") or "AWS",
              "local_cluster": str(local).lower()}
    if args.json:
        print(report.as_json(checks, target))
    else:
        where = "the local cluster (make up); --no-local checks real AWS" if local else target["aws_endpoint"]
        print(report.text(checks, f"LLM Tuner setup doctor: ENVIRONMENT={ctx.environment}, region {ctx.region}, "
                                  f"AWS at {where}\n"))
    return 1 if report.failed_any(checks) else 0


if __name__ == "__main__":
    sys.exit(main())
