"""Deployment to a real AWS account: the CloudFormation template built from `shared.contracts.resources`, the container
images, and the `make deploy` / `make teardown` commands."""
