"""Distil a video dataset into a tiny synthetic set with any method: `s2d distill`.

`s2d distill --help` lists its flags and their defaults.

    python jobs/distill.py --help
"""

import sys

from s2d_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
