"""The cluster examples parse and hold what docs/clusters.md says they hold: the `ray up` YAML passes Ray's own
cluster-config schema (the one `ray up` checks), and the KubeRay RayCluster has a head group holding RUN_DIR on a
ReadWriteOnce volume and GPU workers that may not open a store. Checked for syntax, not deployed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_ray_up_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((EXAMPLES / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(cfg))  # raises on a key the schema does not know or a missing one
    assert cfg["head_node_type"] in cfg["available_node_types"]
    worker_start = " ".join(cfg["worker_start_ray_commands"])
    assert "DIFFCURATE_NO_STORE=1" in worker_start and "RAY_AUTH_TOKEN_PATH=~/.ray_auth_token" in worker_start
    assert "~/.ray_auth_token" in cfg["file_mounts"]  # the token reaches the nodes (the local shell's env does not)
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])
    broken = {**cfg, "available_node_types": {**cfg["available_node_types"], "gpu": {"resources": {}, "typo": 1}}}
    with pytest.raises(Exception, match="typo"):
        validate_config(prepare_config(broken))  # the check can fail


def test_kuberay_raycluster_is_well_formed():
    docs = list(yaml.safe_load_all((EXAMPLES / "kuberay-raycluster.yaml").read_text()))
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    head_pod = head["template"]["spec"]
    claim = head_pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]  # the store's disk belongs to the head alone
    (group,) = cluster["spec"]["workerGroupSpecs"]
    (worker,) = group["template"]["spec"]["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["DIFFCURATE_NO_STORE"]["value"] == "1" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "volumeMounts" not in worker  # workers need no shared filesystem
