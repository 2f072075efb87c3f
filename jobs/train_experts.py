"""Train MTT's expert trajectories with a Ray Train farm: `s2d experts`.

`s2d experts --help` lists its flags and their defaults.

    python jobs/train_experts.py --help
"""

import sys

from s2d_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["experts", *sys.argv[1:]]))
