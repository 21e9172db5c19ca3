"""The deployments in deploy/: the Kubernetes StatefulSet and the systemd template unit run
``qqconn run`` with flags the CLI really accepts, one shard per pod / instance, on Redis."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from qqconn import cli
from qqconn.cli.options import parse_shard
from qqconn.redis import check_url

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _parse_run(argv: list[str]) -> Any:
    """``qqconn`` argv → the parsed run arguments (UsageError on any unknown flag)."""
    args = cli.build_parser().parse_args(argv)
    assert args.command == "run"
    return args


def test_statefulset_runs_one_shard_per_pod_ordinal_on_redis() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "statefulset.yaml").read_text()))
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    spec = sts["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    # the shard id is the pod ordinal, from the downward API
    assert (
        env["SHARD_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert int(env["SHARD_COUNT"]["value"]) == spec["replicas"]
    assert env["QQ_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]  # never a literal
    argv = container["command"][1:] + container["args"]
    values = {"SHARD_ID": "3", "SHARD_COUNT": env["SHARD_COUNT"]["value"]}
    values["REDIS_URL"] = env["REDIS_URL"]["value"]
    expanded = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in argv]
    args = _parse_run(expanded)
    assert parse_shard(args.shard) == (3, spec["replicas"])
    assert check_url(args.redis)
    probe = container["livenessProbe"]["exec"]["command"]
    status = cli.build_parser().parse_args(probe[1:])
    assert status.command == "status" and status.state_file == args.state_file


def _unit(path: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


@pytest.mark.parametrize("instance", ["0", "5"])
def test_systemd_template_runs_the_instance_as_its_shard(instance: str) -> None:
    unit = _unit(DEPLOY / "systemd" / "qqconn@.service")
    command = unit["ExecStart"].replace("%i", instance)
    command = command.replace("${SHARD_COUNT}", "8").replace("${REDIS_URL}", "redis://r:6379/0")
    argv = shlex.split(command)
    assert argv[0].endswith("/qqconn")
    args = _parse_run(argv[1:])
    assert parse_shard(args.shard) == (int(instance), 8)
    assert check_url(args.redis)
    assert unit["Restart"] == "on-failure"
    prevented = {int(code) for code in unit["RestartPreventExitStatus"].split()}
    assert prevented == {cli.EXIT_USAGE, cli.EXIT_FATAL_PERMANENT}
    assert "CLIENT_SECRET" not in unit["ExecStart"]
