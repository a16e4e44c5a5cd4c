"""Build every container image and push it to ECR: one per service, and the SageMaker trainer.

    python -m deploy.aws.images --account 123456789012 --region eu-west-1 --tag v1 [--dry-run]

`make deploy` calls this before it deploys the stack. It needs a Docker engine, and was written on machines
that have none: there it was only ever run with `--dry-run` (which prints the commands without running them,
and is what tests/unit/test_cfn_template.py checks). Each command is printed before it runs; the ECR password
goes to `docker login` on stdin and is never printed.

Repositories are `<prefix>/<service>` and `<prefix>/trainer`, created when missing (scan on push, AES256).
Images are built for linux/amd64: Fargate tasks (X86_64 in the template) and SageMaker's instances run it.
The serving container is AWS's own (`serving_image`): nothing to build or push for it.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploy.aws.processes import SERVICES, api_of
from services.inference.settings import Settings as InferenceSettings
from shared.contracts import resources

SERVICE_DOCKERFILE = "deploy/docker/service.Dockerfile"
_ECR_URI = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.(?P<suffix>amazonaws\.com(?:\.cn)?)/"
                      r"(?P<repository>[a-z0-9][a-z0-9._/-]*)(?P<reference>[:@].+)$")


@dataclass(frozen=True)
class EcrImage:
    """An image in an ECR registry: `<account>.dkr.ecr.<region>.<suffix>/<repository>:<tag>` (or `@<digest>`)."""

    account: str
    region: str
    suffix: str  # amazonaws.com, or amazonaws.com.cn in China
    repository: str
    reference: str  # ":<tag>" or "@sha256:<digest>"

    @classmethod
    def parse(cls, uri: str) -> EcrImage:
        match = _ECR_URI.match(uri)
        if match is None:
            raise ValueError(f"{uri!r} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>)")
        return cls(**match.groupdict())

    def in_region(self, region: str) -> EcrImage:
        return EcrImage(self.account, region, self.suffix, self.repository, self.reference)

    @property
    def uri(self) -> str:
        return f"{self.account}.dkr.ecr.{self.region}.{self.suffix}/{self.repository}{self.reference}"

    @property
    def repository_arn(self) -> str:
        partition = "aws-cn" if self.suffix.endswith(".cn") else "aws"
        return f"arn:{partition}:ecr:{self.region}:{self.account}:repository/{self.repository}"


def lmi_image() -> EcrImage:
    """AWS's Large Model Inference container (DJL Serving with vLLM), as the inference service's settings name it
    (SERVING_IMAGE_URI's default, in us-east-1). AWS publishes it from its Deep Learning Containers account in
    most regions under the same name; `in_region` gives the copy next to the endpoints."""
    return EcrImage.parse(str(InferenceSettings.model_fields["serving_image_uri"].default))


def serving_image(configured: str, region: str) -> EcrImage:
    """The image SageMaker endpoints run: the configured one, else AWS's LMI image in the deployment's region."""
    return EcrImage.parse(configured) if configured else lmi_image().in_region(region)


@dataclass(frozen=True)
class Image:
    name: str  # the repository is `<prefix>/<name>`
    dockerfile: str
    context: str
    build_args: dict[str, str] = field(default_factory=dict)


def images() -> list[Image]:
    service_images = [Image(s, SERVICE_DOCKERFILE, ".", {"SERVICE": s, "PORT": str(api_of(s).port)})
                      for s in SERVICES]
    # The trainer's build context is its own folder (trainer_image/Dockerfile says why it has no USER).
    return [*service_images, Image("trainer", "trainer_image/Dockerfile", "trainer_image")]


def registry(account: str, region: str) -> str:
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


def repository(prefix: str, image: Image) -> str:
    return f"{prefix}/{image.name}"


def docker_commands(account: str, region: str, prefix: str, tag: str) -> list[list[str]]:
    """The docker commands, in order: log in once, then build and push each image."""
    host = registry(account, region)
    commands = [["docker", "login", "--username", "AWS", "--password-stdin", host]]
    for image in images():
        uri = f"{host}/{repository(prefix, image)}:{tag}"
        build_args = [arg for k, v in sorted(image.build_args.items()) for arg in ("--build-arg", f"{k}={v}")]
        commands.append(["docker", "build", "--platform", "linux/amd64", "-f", image.dockerfile, *build_args,
                         "-t", uri, image.context])
        commands.append(["docker", "push", uri])
    return commands


class PushFailed(RuntimeError):
    pass


def ensure_repositories(ecr: Any, prefix: str, say: Callable[[str], None]) -> None:
    for image in images():
        name = repository(prefix, image)
        try:
            ecr.describe_repositories(repositoryNames=[name])
            say(f"ECR repository {name}: exists")
        except ecr.exceptions.RepositoryNotFoundException:
            ecr.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": True},
                                  encryptionConfiguration={"encryptionType": "AES256"})
            say(f"ECR repository {name}: created")


def push(account: str, region: str, prefix: str, tag: str, *, dry_run: bool, say: Callable[[str], None] = print,
         run: Callable[..., Any] = subprocess.run, ecr: Any = None) -> None:
    """Create missing repositories, log in, build and push every image. `dry_run` prints and touches nothing."""
    if dry_run:
        say(f"would create the missing ECR repositories: {', '.join(repository(prefix, i) for i in images())}")
    else:
        if ecr is None:
            import boto3
            ecr = boto3.client("ecr", region_name=region)
        ensure_repositories(ecr, prefix, say)
    password = b""
    for command in docker_commands(account, region, prefix, tag):
        login = command[:2] == ["docker", "login"]
        say(("would run: " if dry_run else "$ ") + shlex.join(command)
            + ("   (password: ECR authorization token, on stdin)" if login else ""))
        if dry_run:
            continue
        if login:
            password = _ecr_password(ecr)
        result = run(command, input=password if login else None, check=False)
        if result.returncode != 0:
            raise PushFailed(f"{shlex.join(command)} exited with {result.returncode}")


def _ecr_password(ecr: Any) -> bytes:
    import base64

    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return base64.b64decode(token).split(b":", 1)[1]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--account", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--prefix", default=resources.PREFIX)
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    push(args.account, args.region, args.prefix, args.tag, dry_run=args.dry_run)


if __name__ == "__main__":
    main()
