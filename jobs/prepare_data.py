"""Convert a video dataset into Parquet clip shards: `s2d prepare`.

`s2d prepare --help` lists its flags and their defaults.

    python jobs/prepare_data.py --help
"""

import sys

from s2d_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
