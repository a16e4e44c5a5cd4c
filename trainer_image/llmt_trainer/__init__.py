"""The LoRA fine-tuning trainer that runs in the SageMaker training container (entry point: finetune.py).

Imported as `llmt_trainer` where SageMaker unpacks the bundle and runs `python finetune.py`, and as
`trainer_image.llmt_trainer` from the repository root (tests, bench): so its modules import each other
relatively, and this file imports none of them.
"""
