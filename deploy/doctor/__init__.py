"""The setup doctor: checks a configured environment the way the setup guide's "Testing the setup" and
"Debug commands" do, and says for each check what is wrong and how to fix it.

`python -m deploy.doctor` (or `make doctor`) reads the same settings the services read (environment and
`.env`), runs every check in `deploy.doctor.checks.CHECKS` with a timeout of its own, prints PASS / FAIL /
WARN / SKIP lines (or `--json`) and exits non-zero when any check fails. Expectations about AWS resources
come from `shared.contracts.resources`, the one description the local cluster and the deployment are built from.
"""
