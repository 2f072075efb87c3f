"""Two things Ray Tune 2.60 does that a search on a cluster must not, changed in one place
(``apply()``, called by the driver before it builds its Tuner); each has a test that would
see it come back.

* Tune copies the driver's cloud credentials into every trial's runtime_env, which Ray's
  runtime-env agent writes to its log in clear ("Creating runtime env: {...}") and the GCS
  keeps: a secret in the logs of every node (tests/cluster/test_s3_search.py greps them).
  Workers take credentials from their node instead (its environment at `ray start`, or the
  instance profile).
* A trial whose process Ray's memory monitor kills fails with ``OutOfMemoryError``, which
  Tune's actor manager does not expect: it raises and the whole search stops
  (tests/cluster/test_oom.py). Handed to Tune as the actor death it is, the trial fails
  alone and starts again from its last checkpoint like any other lost trial.
"""

from __future__ import annotations

SECRET_ENV_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECURITY_TOKEN",
    "AWS_SESSION_TOKEN",
)


def apply() -> None:
    keep_secrets_out_of_runtime_envs()
    oom_killed_trials_fail_alone()


def keep_secrets_out_of_runtime_envs() -> None:
    from ray.tune.execution import class_cache

    propagated = set(class_cache.ENV_VARS_TO_PROPAGATE) - set(SECRET_ENV_VARS)
    class_cache.ENV_VARS_TO_PROPAGATE = propagated


def oom_killed_trials_fail_alone() -> None:
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.exceptions import OutOfMemoryError, RayActorError

    failed = RayActorManager._actor_task_failed
    if getattr(failed, "s2d_fixed", False):
        return

    class KilledForMemory(RayActorError):
        """The trial's actor, killed by Ray's memory monitor; says so in its message."""

        def __str__(self) -> str:
            return self.error_msg

    def actor_task_failed(self, tracked_actor_task, exception):
        if isinstance(exception, OutOfMemoryError):
            exception = KilledForMemory(error_msg=f"OutOfMemoryError: {exception}")
        return failed(self, tracked_actor_task, exception)

    actor_task_failed.s2d_fixed = True
    RayActorManager._actor_task_failed = actor_task_failed
