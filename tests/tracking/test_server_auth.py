"""The basic-auth settings of a local MLflow server: the admin from the environment only."""

from __future__ import annotations

import pytest

from s2d_ray.tracking.server import auth_env


def test_auth_takes_its_admin_from_the_environment_and_writes_no_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        auth_env(f"sqlite:///{tmp_path / 'mlflow.db'}")

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-never-written")
    env = auth_env(f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = (tmp_path / "mlflow-auth.ini").read_text()
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "mlflow-auth.ini")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "pw-never-written"
    assert "default_permission = NO_PERMISSIONS" in config
    assert f"sqlite:///{tmp_path / 'mlflow-auth.db'}" in config
    assert "pw-never-written" not in config and "admin" not in config.replace("admin_", "")
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    with pytest.raises(ValueError, match="beside an sqlite store"):
        auth_env("postgresql://db/mlflow")
