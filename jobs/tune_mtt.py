"""Search S2D-MTT's lr_dynamic, lr_hal and syn_steps (the paper's headline method) with Ray
Tune + Optuna, then judge and export the best set: `s2d tune --method s2d-mtt`.

    python jobs/tune_mtt.py --smoke-test            # two tiny trials through every stage
    ray job submit --working-dir . -- python jobs/tune_mtt.py --data s3://bucket/hmdb51/data \\
        --storage s3://bucket/hmdb51 --mlflow-uri http://HEAD_IP:5000
"""

import sys

from s2d_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", "--method", "s2d-mtt", *sys.argv[1:]]))
