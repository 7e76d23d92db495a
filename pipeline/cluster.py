"""Talking to a Ray cluster from the outside: the Ray Jobs API and a persistent local head.

``vidbatch submit --address http://HEAD:8265 job.yaml`` validates the spec here, then
ships the *resolved* spec (absolute paths, overrides applied) and this package to the
cluster through ``JobSubmissionClient``; on the cluster the entrypoint is the same
``vidbatch submit``, attached to that cluster with ``--address auto``. Paths in the spec must
therefore be valid on the cluster's nodes (a shared mount or URIs).

Authentication: Ray >= 2.52 clusters use token auth; ``JobSubmissionClient`` reads the
token from ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token`` itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pipeline
from pipeline.dashboard import protect_token, token_path
from pipeline.errors import ConfigError, VidbatchError
from pipeline.infer.spec import spec_yaml
from pipeline.spec import JobSpec

FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
AGENT_WAIT_S = 120


def is_jobs_api(address: str | None) -> bool:
    return bool(address) and address.startswith(("http://", "https://"))


def _use_token_if_present() -> None:
    """Ray's CLI and ``ray.init`` switch token auth on when a token exists and
    ``RAY_AUTH_MODE`` is unset; a bare ``JobSubmissionClient`` (2.60) does not, and then
    every request gets 401. Do what the CLI does, through the documented variable."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or token_path().is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def client(address: str):
    _use_token_if_present()  # before Ray is imported: it reads the mode at import time
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:
        raise VidbatchError(f"cannot reach the Ray Jobs API at {address}: {e}. Check --address"
                            " (the dashboard URL, e.g. http://127.0.0.1:8265) and that the "
                            "cluster is up (`vidbatch up` for a local one).") from None


def submit_remote(spec: JobSpec, address: str, policy: str | None = None) -> str:
    """Submit the job to a cluster's Jobs API; return the submission id."""
    jobs = client(address)
    staging = Path(tempfile.mkdtemp(prefix="vidbatch-submit-"))
    try:
        # Only the spec goes in the working dir: a folder holding a directory named `ray`
        # would shadow the real package on the cluster.
        (staging / "job.yaml").write_text(spec_yaml(spec))
        flag = {"resume": " --resume", "overwrite": " --overwrite"}.get(policy or "", "")
        submission_id = f"vidbatch-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        request = dict(
            entrypoint=f"python -m pipeline.bootstrap submit job.yaml --address auto{flag}",
            submission_id=submission_id,
            runtime_env={"working_dir": str(staging),
                         "py_modules": [str(Path(pipeline.__file__).parent)]},
            metadata={"vidbatch_job": spec.name, "vidbatch_version": pipeline.__version__},
        )
        # A head that has just started answers "No available agent ... try again later"
        # until its job agent is up: retry that (only that) for a while.
        deadline = time.time() + AGENT_WAIT_S
        while True:
            try:
                return jobs.submit_job(**request)
            except RuntimeError as e:
                if "try again later" not in str(e) or time.time() > deadline:
                    raise
                time.sleep(1)
    except VidbatchError:
        raise
    except Exception as e:
        hint = (" The head's dashboard agent is not up: another Ray on the head machine may "
                "hold its port (52365); give this one --dashboard-agent-listen-port."
                if "No available agent" in str(e) else "")
        raise VidbatchError(f"the Jobs API at {address} refused the job: {e}.{hint}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def follow(address: str, submission_id: str, echo: Callable[[str], None]) -> str:
    """Stream a job's logs until it ends; return its final status."""
    jobs = client(address)

    async def _tail() -> None:
        async for chunk in jobs.tail_job_logs(submission_id):
            echo(chunk.rstrip("\n"))

    asyncio.run(_tail())
    status = str(jobs.get_job_status(submission_id).value)
    while status not in FINAL:  # logs can end a moment before the status is final
        time.sleep(0.5)
        status = str(jobs.get_job_status(submission_id).value)
    return status


def job_info(address: str, submission_id: str) -> dict[str, Any]:
    info = client(address).get_job_info(submission_id)
    return {"id": submission_id, "status": str(info.status.value), "message": info.message,
            "entrypoint": info.entrypoint, "start_time": info.start_time,
            "end_time": info.end_time, "metadata": info.metadata}


def list_jobs(address: str) -> list[dict[str, Any]]:
    return [{"id": j.submission_id, "status": str(j.status.value), "entrypoint": j.entrypoint,
             "job": (j.metadata or {}).get("vidbatch_job", "")}
            for j in client(address).list_jobs() if j.submission_id]


def logs(address: str, submission_id: str) -> str:
    return client(address).get_job_logs(submission_id)


def stop(address: str, submission_id: str) -> bool:
    return client(address).stop_job(submission_id)


# ---------------------------------------------------------------- a persistent local head


def _own_environment() -> dict[str, str]:
    """This process's environment with its interpreter's directory first on ``PATH``.

    ``ray`` is then the one installed beside vidbatch, and the head it starts, whose
    environment the Jobs API entrypoints (``python -m pipeline.cli ...``) inherit, runs
    this interpreter too: without it, ``.venv/bin/vidbatch up`` from a shell whose
    virtual environment is not activated would start (or miss) another Python's Ray.
    """
    bin_dir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def up(num_cpus: int | None, dashboard_port: int = 8265, insecure: bool = False) -> str:
    """Start a local Ray head whose dashboard binds to 127.0.0.1 only, with token auth.

    Ray 2.60's ``ray start`` enables token auth only when a token already exists or
    ``RAY_AUTH_MODE=token`` is set, so both are arranged here; an inherited
    ``RAY_AUTH_MODE=disabled`` is refused unless ``insecure`` says it is meant.
    """
    env = _own_environment()
    if env.get("RAY_AUTH_MODE", "token") != "token" and not insecure:
        raise ConfigError(f"RAY_AUTH_MODE={env['RAY_AUTH_MODE']} is set in this environment: "
                          "the head would run code for anyone who reaches its ports. Unset "
                          "it (or set it to token), or pass --insecure-no-auth if that is "
                          "really meant.")
    env.setdefault("RAY_AUTH_MODE", "token")
    if env["RAY_AUTH_MODE"] == "token":
        subprocess.run(["ray", "get-auth-token", "--generate"], capture_output=True, env=env,
                       check=False)
        protect_token()
    cmd = ["ray", "start", "--head", "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dashboard_port), "--node-ip-address", "127.0.0.1"]
    if num_cpus:
        cmd += ["--num-cpus", str(num_cpus)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise ConfigError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")
    return f"http://127.0.0.1:{dashboard_port}"


def down() -> None:
    subprocess.run(["ray", "stop"], capture_output=True, text=True, check=False,
                   env=_own_environment())
