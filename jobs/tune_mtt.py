"""Search S2D-MTT's lr_dynamic, lr_hal and syn_steps (the paper's headline method) with Ray
Tune + Optuna, then judge and export the best set; jobs/tune.py with --method s2d-mtt.

    python jobs/tune_mtt.py                       # the embedded dataset, IPC 1, from scratch
    python jobs/tune_mtt.py --smoke-test          # two tiny trials through every stage
    ray job submit --working-dir . -- python jobs/tune_mtt.py --dataset hmdb51 \
        --storage s3://bucket/hmdb51 --data s3://bucket/hmdb51/data --workdir ~/work \
        --mlflow-uri http://HEAD_IP:5000
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tune import main  # the sibling job

if __name__ == "__main__":
    sys.exit(main(method="s2d-mtt"))
