"""Search a method's hyperparameters with Ray Tune + Optuna: `s2d tune`.

`s2d tune --help` lists its flags and their defaults.

    python jobs/tune.py --help
"""

import sys

from s2d_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
