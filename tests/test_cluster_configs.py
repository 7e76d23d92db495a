"""The files in cluster/: each parses and validates for the tool that uses it.

No network, no Ray start, no docker/kubectl: the launcher config goes through Ray's own
schema and config preparation (what `ray up` runs before it talks to AWS), the KubeRay
manifests are checked against the field names of KubeRay's `ray.io/v1` types, the Dockerfile
against the installed Ray and the pyproject pins. What these tests cannot show (an image
build, a cloud or Kubernetes run) is listed in docs/cluster.md.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import requires
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from pipeline.infer.spec import load_jobspec

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "aws-gpu.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
PVC = CLUSTER / "kuberay" / "shared-pvc.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
APP_DIR = "/app"  # WORKDIR of cluster/Dockerfile: /app/<path> in the image is <path> here

# Field names of KubeRay's ray.io/v1 Go types (ray-operator/apis/ray/v1/*_types.go, plus
# authOptions from KubeRay 1.5.1); a misspelt key would be dropped or refused by the API server.
RAYCLUSTER_SPEC_KEYS = {
    "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
    "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
    "workerGroupSpecs", "authOptions",
}
HEAD_GROUP_KEYS = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP_KEYS = {
    "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
    "rayStartParams", "template", "scaleStrategy", "numOfHosts",
}
AUTOSCALER_KEYS = {
    "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
    "upscalingMode", "env", "envFrom", "volumeMounts",
}
RAYJOB_SPEC_KEYS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
    "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionPolicy",
    "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
    "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes", "suspend",
}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict:
    found = [d for d in _docs(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


@pytest.fixture(scope="module")
def ray_start_help() -> str:
    ray_cli = Path(sys.executable).with_name("ray")
    done = subprocess.run([str(ray_cli), "start", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


# ----------------------------------------------------------------- Ray cluster launcher


def test_launcher_config_validates_against_rays_schema(launcher):
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)
    # The schema forbids unknown keys, so this check can fail.
    misspelt = copy.deepcopy(launcher)
    misspelt["head_start_ray_command"] = misspelt.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, schema)


def test_launcher_config_survives_ray_up_preparation(launcher):
    # What `ray up` does before it calls the cloud provider.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(launcher))
    validate_config(prepared)
    assert prepared["available_node_types"]["ray.worker.gpu"]["max_workers"] >= 1


def test_launcher_head_binds_dashboard_to_localhost_and_uses_token_auth(launcher):
    head = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in LAUNCHER.read_text()
    options = " ".join(launcher["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in options
    token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", options).group(1)
    assert any(token_path.startswith(remote + "/") for remote in launcher["file_mounts"])


def test_launcher_has_a_cpu_head_and_gpu_workers(launcher):
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    gpu = types["ray.worker.gpu"]
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p3.", "p4"))
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= launcher["max_workers"]


def test_launcher_workers_read_the_weights_cache_only(launcher):
    docker = launcher["docker"]
    assert "--volume /mnt/shared/torch:/mnt/shared/torch:ro" in docker["worker_run_options"]
    assert "--env TORCH_HOME=/mnt/shared/torch" in " ".join(docker["run_options"])


def test_launcher_file_mounts_point_at_repo_files(launcher):
    for remote, local in launcher["file_mounts"].items():
        if local.startswith("~"):
            continue  # the user's token directory, created by the steps in the header
        assert (REPO / local).is_dir(), f"file_mounts {remote}: {local} is not in the repo"


def test_ray_start_flags_used_exist(launcher, ray_start_help):
    commands = launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
    flags = set(re.findall(r"(--[a-z][a-z-]+)=", " ".join(commands)))
    assert "--dashboard-host" in flags
    for flag in flags:
        assert flag in ray_start_help, f"`ray start` has no {flag}"


# ---------------------------------------------------------------------------- KubeRay


def _cluster_specs() -> list[tuple[str, dict]]:
    return [("raycluster", _one(RAYCLUSTER, "RayCluster")["spec"]),
            ("rayjob", _one(RAYJOB, "RayJob")["spec"]["rayClusterSpec"])]


def test_kuberay_manifests_have_expected_kinds():
    for path, kind in [(RAYCLUSTER, "RayCluster"), (RAYJOB, "RayJob")]:
        doc = _one(path, kind)
        assert doc["apiVersion"] == "ray.io/v1"
        assert doc["metadata"]["name"]
    assert _one(PVC, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("name,spec", _cluster_specs())
def test_kuberay_cluster_spec_uses_known_fields(name, spec):
    assert set(spec) <= RAYCLUSTER_SPEC_KEYS, set(spec) - RAYCLUSTER_SPEC_KEYS
    assert set(spec["headGroupSpec"]) <= HEAD_GROUP_KEYS
    assert set(spec.get("autoscalerOptions", {})) <= AUTOSCALER_KEYS
    for group in spec["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP_KEYS, set(group) - WORKER_GROUP_KEYS
        assert {"groupName", "minReplicas", "maxReplicas", "template"} <= set(group)
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}


@pytest.mark.parametrize("name,spec", _cluster_specs())
def test_kuberay_gpu_workers_and_private_head(name, spec):
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert not head.get("enableIngress", False)
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        resources = container["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]


def test_raycluster_dashboard_binds_to_localhost():
    spec = _one(RAYCLUSTER, "RayCluster")["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    policy = _one(RAYCLUSTER, "NetworkPolicy")
    cluster_label = {"ray.io/cluster": _one(RAYCLUSTER, "RayCluster")["metadata"]["name"]}
    assert policy["spec"]["podSelector"]["matchLabels"] == cluster_label


@pytest.mark.parametrize("name,spec", _cluster_specs())
def test_kuberay_pods_mount_the_shared_claim(name, spec):
    claim = _one(PVC, "PersistentVolumeClaim")["metadata"]["name"]
    images = set()
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims == {claim}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert "/mnt/shared" in mounts
        if group is not spec["headGroupSpec"]:  # workers read the weights cache only
            assert mounts["/mnt/shared/torch"].get("readOnly") is True
        images.add(container["image"])
    assert len(images) == 1 and next(iter(images)).endswith("/vidbatch:0.1")


def test_rayjob_runs_vidbatch_submit_on_a_spec_in_the_image():
    spec = _one(RAYJOB, "RayJob")["spec"]
    assert set(spec) <= RAYJOB_SPEC_KEYS, set(spec) - RAYJOB_SPEC_KEYS
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["vidbatch", "submit", "--address", "auto"]
    (job_path,) = [a for a in argv[4:] if a.endswith(".yaml")]
    assert job_path.startswith(APP_DIR + "/")
    local = REPO / job_path.removeprefix(APP_DIR + "/")
    assert local.is_file(), f"{job_path} is {local} in the repo, which does not exist"
    job = load_jobspec(local)  # parses offline: no manifest read, no weights download
    assert str(job.output.path).startswith("/mnt/shared/")
    assert job.resources.gpus_per_replica == 1


# ------------------------------------------------------------------------- Dockerfile


def _dockerfile() -> tuple[str, dict[str, str]]:
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    return text, args


def test_dockerfile_base_image_matches_installed_ray():
    text, args = _dockerfile()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    base, digest = base.split("@")
    assert digest == "${RAY_IMAGE_DIGEST}" and re.search(r"^ARG RAY_IMAGE_DIGEST$", text, re.M)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    repo, tag = base.split(":")
    assert repo == "rayproject/ray"
    version, python, *variant = tag.split("-")
    assert version == ray.__version__ == args["RAY_VERSION"]
    assert python == "py311"
    assert variant and (variant[0] == "gpu" or variant[0].startswith("cu"))


def test_dockerfile_installs_the_project_with_admitted_pins():
    text, args = _dockerfile()
    (pip,) = re.findall(r"^RUN pip install (?:.*\\\n)*.*", text, re.M)
    assert "." in pip.replace("\\", " ").split(), "the image must `pip install .` the project"
    for copied in ["pyproject.toml", "pipeline", "jobs", "cluster/jobs"]:
        assert re.search(rf"^COPY .*\b{re.escape(copied)}\b", text, re.M), copied
    deps = [d for d in requires("vidbatch") or [] if "extra ==" not in d]  # from pyproject
    pins = {"torch": args["TORCH_VERSION"], "torchvision": args["TORCHVISION_VERSION"],
            "ray": args["RAY_VERSION"]}
    for dep in map(Requirement, deps):
        if dep.name in pins:
            assert Version(pins[dep.name]) in dep.specifier, (dep, pins[dep.name])
    assert re.findall(r"^USER (\S+)", text, re.M)[-1] == "ray"  # non-root, as in Ray's image


def test_pip_install_dot_ships_every_subpackage(tmp_path):
    """The image installs the project with `pip install .` (not editable): the wheel must
    hold every subpackage of pipeline/, not only its top level. Built from a copy of what
    the image copies, so that no earlier build/ folder can fill the gaps."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "pipeline", src / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path), str(src)],
                           check=True, capture_output=True, text=True)
    assert "deprecat" not in (built.stdout + built.stderr).lower(), built.stderr[-2000:]
    (wheel,) = tmp_path.glob("vidbatch-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("pipeline/")}
    here = {p.relative_to(REPO).as_posix() for p in (REPO / "pipeline").rglob("*.py")}
    assert here <= shipped, sorted(here - shipped)


def test_dockerignore_keeps_what_the_image_copies():
    ignored = [line.strip() for line in (CLUSTER / "Dockerfile.dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")]
    for needed in ["pyproject.toml", "README.md", "pipeline", "jobs", "cluster"]:
        assert needed not in ignored


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB])
def test_kuberay_pods_run_unprivileged_on_a_read_only_root(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = next(d for d in docs if d["kind"] in ("RayCluster", "RayJob"))["spec"]
    spec = spec.get("rayClusterSpec", spec)
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            mounted = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounted["/tmp"] in scratch  # Ray's session directory


def test_the_rayjob_ships_a_network_policy_for_its_pods():
    docs = list(yaml.safe_load_all(RAYJOB.read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    groups = [job["spec"]["rayClusterSpec"]["headGroupSpec"],
              *job["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    for group in groups:  # the policy selects every Ray pod of the job
        assert selected.items() <= group["template"]["metadata"]["labels"].items()
    ingress = policy["spec"]["ingress"]
    assert ingress[0]["from"] == [{"podSelector": {"matchLabels": selected}}]
    jobs_api = ingress[1]
    assert jobs_api["ports"] == [{"port": 8265, "protocol": "TCP"}]
    assert {"job-name": job["metadata"]["name"]} in [
        p["podSelector"]["matchLabels"] for p in jobs_api["from"]]


def test_launcher_nodes_use_their_own_roles_and_imdsv2(launcher):
    for name, node in launcher["available_node_types"].items():
        config = node["node_config"]
        assert config["MetadataOptions"]["HttpTokens"] == "required", name
        assert config["IamInstanceProfile"]["Arn"].endswith(
            "vidbatch-head" if name == launcher["head_node_type"] else "vidbatch-worker")
