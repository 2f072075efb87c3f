"""A Ray worker setup hook for the OOM test: the first search trial to start (across every
worker, by an exclusive marker file) allocates memory until Ray's memory monitor kills it;
every later trial distils as usual."""

from __future__ import annotations

import os
import time

CHUNK = 1 << 28  # 256 MiB, touched page by page


def install() -> None:
    import numpy as np

    import s2d_ray.search.trial as trial

    original = trial.run_distillation

    def hungry(*args, **kwargs):
        try:
            os.close(os.open(os.environ["S2D_HUNGRY_MARKER"], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return original(*args, **kwargs)
        held, cap = [], int(os.environ["S2D_HUNGRY_CAP_BYTES"])
        while True:  # until killed; never past the cap (the test fails by timeout instead)
            if len(held) * CHUNK < cap:
                held.append(np.ones(CHUNK, dtype=np.uint8))
            time.sleep(0.05)

    trial.run_distillation = hungry
