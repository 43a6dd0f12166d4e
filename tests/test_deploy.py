"""Deployment recipes parse, and point their probes and ports at what the server serves."""

import dataclasses
import pathlib
import re
import shlex

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "deploy"
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_dockerfile():
    steps = dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
    assert steps[0][0] == "FROM"
    assert all(op in INSTRUCTIONS and rest for op, rest in steps), steps
    entry = next(rest for op, rest in steps if op == "ENTRYPOINT")
    argv = yaml.safe_load(entry)  # exec form is a JSON array
    assert argv[:3] == ["python", "-m", "ann.serve"] and "--host=0.0.0.0" in argv
    assert "--port=8080" in argv and next(r for op, r in steps if op == "EXPOSE") == "8080"
    user = next(rest for op, rest in steps if op == "USER")
    assert not user.startswith("0") and user != "root"
    health = next(rest for op, rest in steps if op == "HEALTHCHECK")
    assert "/v2/health/ready" in health
    for op, rest in steps:
        if op == "RUN":
            shlex.split(rest)  # balanced quotes


def test_kubernetes_manifests():
    docs = list(yaml.safe_load_all((DEPLOY / "deployment.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment = by_kind["Deployment"]
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    [container] = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["ports"][0]["containerPort"] == 8080
    assert pod["spec"]["terminationGracePeriodSeconds"] > 30  # above --shutdown_timeout
    hpa = by_kind["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    service = by_kind["Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    # Prometheus scrapes the metrics port (no token there); infer stays behind the token.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = server_args(container["args"])
    annotations = pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"] != ports["http"]
    assert int(args["metrics_port"]) == ports["metrics"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]  # not the metrics
    # The token is required and read from a mounted Secret file, never the command line.
    assert "token" not in args
    [mount] = [
        m for m in container["volumeMounts"] if args["token_file"].startswith(m["mountPath"])
    ]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "ann-serve" and not volume["secret"].get("optional")
    assert args["token_file"] == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"

    [isvc] = yaml.safe_load_all((DEPLOY / "kserve.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    [kc] = isvc["spec"]["predictor"]["containers"]
    assert kc["name"] == "kserve-container" and kc["image"] == container["image"]
    assert kc["ports"][0]["containerPort"] == 8080
    assert kc["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    kargs = server_args(kc["args"])
    assert int(isvc["metadata"]["annotations"]["prometheus.io/port"]) == int(kargs["metrics_port"])
    assert "token" not in kargs
    [token] = [e for e in kc["env"] if e["name"] == "ANN_SERVE_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["optional"] is False  # required


def server_args(argv: list[str]) -> dict[str, str]:
    """`--name=value` arguments of a manifest, each a real server flag whose value the server
    accepts (the manifests' numbers are checked as the server checks them at start)."""
    from ann.serve.settings import Settings

    fields = {f.name: f for f in dataclasses.fields(Settings)}
    args, settings = {}, {}
    for arg in argv:
        name, _, value = arg.removeprefix("--").partition("=")
        assert arg.startswith("--") and value, arg
        args[name] = value
        if name in fields:
            kind = type(getattr(Settings(), name) or 0)
            settings[name] = value if kind is str else kind(value)
        else:
            assert name in ("model", "registry", "token_file"), arg
    Settings(**settings)  # raises on a value the server would refuse
    return args
