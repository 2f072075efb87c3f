"""S2D stage 1: distil the static memory (still images per class): `s2d static`.

`s2d static --help` lists its flags and their defaults.

    python jobs/distill_static.py --help
"""

import sys

from s2d_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["static", *sys.argv[1:]]))
