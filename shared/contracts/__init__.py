"""The contract every part of LLM Tuner reads: resource names, and the events each producer publishes.

- `resources`: every table, topic, queue, rule and bucket, described once as data. The services' settings take
  their default names from it; deploy/ builds the local cluster, CloudFormation, IAM and the doctor from it.
- `event`: the base of every event payload model.
- `auth_events`, `files_events`, `training_events`: one module per producer, with each event's name (a
  constant) and its payload model. Producers publish only through these models; consumers parse into them.
- `sagemaker_events`: what SageMaker publishes through EventBridge (we only consume it).

Nothing here imports a service or deploy/, and nothing here calls AWS.
"""
