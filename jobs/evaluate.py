"""Judge distilled sets beside random real clips of the same size: `s2d evaluate`.

`s2d evaluate --help` lists its flags and their defaults.

    python jobs/evaluate.py --help
"""

import sys

from s2d_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
