"""SageMaker training entry point: LoRA fine-tuning of a causal LM on chat-format JSONL.

The image's ENTRYPOINT, SageMaker script mode's `python finetune.py --name value ...`, or a local run. The
trainer is the llmt_trainer package beside this file; its contract (paths, data, metrics, exit status) is
llmt_trainer/contract.py, printed by `python finetune.py --help`.
"""

import sys

# Run as a script, Python puts this file's folder first on sys.path, so the package beside it imports as the
# top-level `llmt_trainer` wherever the bundle lies (/opt/ml/code in the image, the folder script mode unpacks
# sourcedir.tar.gz into, trainer_image/ here). This file is only ever run, never imported.
from llmt_trainer.main import main

if __name__ == "__main__":
    sys.exit(main())
