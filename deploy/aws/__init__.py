"""Deployment to a real AWS account: the CloudFormation template built from `deploy.resources`, the container
images, and the `make deploy` / `make teardown` commands."""
