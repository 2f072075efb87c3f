"""``python -m s2d_ray``: the ``s2d`` command."""

import sys

from s2d_ray.cli import main

sys.exit(main())
