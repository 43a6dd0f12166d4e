"""Deployment recipes parse, and point their probes and ports at what the server serves."""

import dataclasses
import pathlib
import re
import shlex
import sys
from importlib import metadata

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (Docker's rules as far as
    its patterns go)."""
    import fnmatch

    patterns = [
        line.strip()
        for line in (DEPLOY.parent.parent / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, p) or fnmatch.fnmatch(prefix, p.removeprefix("**/"))
        or fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], p.removeprefix("**/"))
        for p in patterns for prefix in prefixes
    )  # fmt: skip


def test_the_build_context_leaves_out_venvs_and_keeps_what_the_image_copies():
    # Without a .dockerignore, `docker build ... .` after the Quick start sent .venv (1.6 GB),
    # .git and every run's checkpoints to the daemon.
    for path in (".venv/lib/x.py", ".git/HEAD", "runs/digits_cnn/checkpoints/600/x",
                 "ann/__pycache__/x.pyc"):  # fmt: skip
        assert ignored(path), path
    copied = [rest.split()[0] for op, rest in dockerfile_instructions(
        (DEPLOY / "Dockerfile").read_text()) if op == "COPY"]  # fmt: skip
    kept = ["pyproject.toml", "registry/artifacts/digits/1/manifest.json",
            "exports/digits_cnn/weights.safetensors", "runs/x_export/manifest.json"]  # fmt: skip
    for path in [*copied, *kept]:
        if "$" not in path:
            assert not ignored(path), path


def test_the_image_installs_pinned_versions():
    """The image installed `jax>=0.7` and the rest unpinned: whatever was newest at build time,
    not the jax/jaxlib an export's manifest records, and two builds could differ. Its pip
    install takes scripts/deploy/constraints.txt (`-c`, copied in first), which pins every
    package the Dockerfile names, and jaxlib, to an exact version (`==`; which versions is the
    environment's business: `python scripts/deploy/constraints.py` writes them)."""
    steps = dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
    [install] = [shlex.split(r) for op, r in steps if op == "RUN" and "jax" in r]
    target = install[install.index("-c") + 1]
    assert ("COPY", f"scripts/deploy/constraints.txt {target}") in steps
    assert steps.index(("COPY", f"scripts/deploy/constraints.txt {target}")) < steps.index(
        ("RUN", next(r for op, r in steps if op == "RUN" and "jax" in r))
    )
    pins = _pins(DEPLOY / "constraints.txt")
    listed = {canonicalize_name(Requirement(r).name) for r in pip_requirements(steps)}
    assert "jax" in listed and listed | {"jaxlib"} <= set(pins), sorted(listed - set(pins))
    assert pins["jax"] == pins["jaxlib"]  # jax needs its own jaxlib


def _pins(path: pathlib.Path) -> dict[str, str]:
    """A constraints file's pins, canonical name -> version: each line one exact version."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            [spec] = req.specifier  # one exact version a line
            assert spec.operator == "==" and "*" not in spec.version, line
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def pip_requirements(steps: list[tuple[str, str]]) -> list[str]:
    """The requirements the Dockerfile's `RUN pip install` steps name: not an option and its
    value (`-c FILE`), nor the path `.`."""
    found = []
    for argv in (shlex.split(r) for op, r in steps if op == "RUN" and "pip install" in r):
        args = iter(argv[2:])
        for arg in args:
            if arg == "-c":
                next(args)
            elif not arg.startswith("-") and arg != ".":
                found.append(arg)
    return found


def _constraints_script():
    """scripts/deploy/constraints.py as a module."""
    sys.path.insert(0, str(DEPLOY))
    try:
        import constraints
    finally:
        sys.path.remove(str(DEPLOY))
    return constraints


def test_the_constraints_script_reads_the_dockerfiles_list():
    # It writes the pins of what the Dockerfile names: the same list, options and `.` left out.
    constraints = _constraints_script()
    text = (DEPLOY / "Dockerfile").read_text()
    assert constraints.dockerfile_requirements(text) == pip_requirements(
        dockerfile_instructions(text)
    )


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
    # The compilation cache is written under a read-only root: on a writable volume of its own.
    assert container["securityContext"]["readOnlyRootFilesystem"]
    [cache] = [
        m for m in container["volumeMounts"] if m["mountPath"] == args["compilation_cache_dir"]
    ]
    assert not cache.get("readOnly")
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == cache["name"]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume, volume

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


def test_the_training_image_and_the_cluster_scripts_fit_together():
    """README's "On a cluster" could not be followed: no training image (the one Dockerfile is
    the server's: no training dependencies, no configs/), the Job's relative --config with no
    workingDir, `image: ann-train:latest` (the kubelet pulls :latest always, so an image built
    or loaded on the nodes never started), and `pip install .` gives the CPU jaxlib, on which
    pods given 8 GPUs train on their CPUs."""
    import subprocess

    from absl import flags

    import ann.main  # noqa: F401  (its flags)

    root = DEPLOY.parent.parent
    steps = dockerfile_instructions((root / "scripts/cluster/Dockerfile.train").read_text())
    assert steps[0][0] == "FROM" and all(op in INSTRUCTIONS and rest for op, rest in steps)
    copied = [rest.split()[0] for op, rest in steps if op == "COPY"]
    assert {"pyproject.toml", "ann", "experiments", "configs"} <= set(copied)
    for path in copied:
        assert (root / path).exists() and not ignored(path), path
    assert ("ARG", "JAX_EXTRA=cuda12") in steps  # the GPUs' jaxlib unless told otherwise
    [install] = [rest for op, rest in steps if op == "RUN" and "pip install" in rest]
    for extra, packages in [("cuda12", [".", "jax[cuda12]"]), ("", ["."])]:
        argv = subprocess.run(  # the RUN line as the build's shell expands it
            ["sh", "-c", install.replace("pip install", "printf '%s\\n'", 1)],
            env={"JAX_EXTRA": extra, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        assert argv == ["--no-cache-dir", "-c", "/tmp/constraints.txt", *packages], argv
    # Pinned as the serving image is: it installed whatever was newest at build time.
    copy = ("COPY", "scripts/cluster/constraints.txt /tmp/constraints.txt")
    assert copy in steps and steps.index(copy) < steps.index(("RUN", install))
    pins = _pins(root / "scripts/cluster/constraints.txt")
    needed = [Requirement(r) for r in metadata.requires("ann")]  # pyproject's, as installed
    listed = {
        canonicalize_name(r.name) for r in needed if not r.marker or "extra" not in str(r.marker)
    }
    assert listed | {"jaxlib"} <= set(pins), sorted(listed - set(pins))
    assert pins["jax"] == pins["jaxlib"]
    [workdir] = [rest for op, rest in steps if op == "WORKDIR"]

    service, job = yaml.safe_load_all((root / "scripts/cluster/k8s_train_job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["workingDir"] == workdir  # where the relative --config is read
    image, tag = container["image"].rsplit(":", 1)
    assert tag != "latest" and container["imagePullPolicy"] == "IfNotPresent", container
    assert container["command"][:3] == ["python", "-m", "ann.main"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["command"][3:])
    for name in args:
        assert name in flags.FLAGS, name  # a real ann train flag
    path = args["config"].split(":")[0]
    assert not path.startswith("/") and (root / path).exists() and path.split("/")[0] in copied
    # What must change together: the processes, the coordinator's pod and Service, the GPUs.
    spec = job["spec"]
    assert spec["completions"] == spec["parallelism"] == int(args["num_processes"])
    host, port = args["coordinator_address"].split(":")
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert pod["subdomain"] == service["metadata"]["name"]
    assert int(port) == service["spec"]["ports"][0]["port"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] > 0  # with jax[cuda12], above

    sbatch = (root / "scripts/cluster/slurm_train.sbatch").read_text()
    for name in re.findall(r"-m ann\.main (.*)", sbatch)[0].replace('"$@"', "").split():
        assert name.removeprefix("--").split("=")[0] in flags.FLAGS, name


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
            kind = fields[name].metadata["kind"]
            settings[name] = value if kind is str else kind(value)
        else:
            assert name in ("model", "registry", "token_file"), arg
    Settings(**settings)  # raises on a value the server would refuse
    return args


def test_the_image_installs_every_package_the_server_imports(digits_export, tmp_path):
    # The image's package list lacked ml-collections (ann.cli imports it): `python -m ann.serve`
    # died on its first line. Every module a server imports, serving and monitoring one infer,
    # must come from a package the Dockerfile installs (or one of their requirements).
    import subprocess
    import time
    from importlib import metadata

    import numpy as np
    from packaging.utils import canonicalize_name
    from test_serve import free_port, infer_body, request

    steps = dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
    # The distributions they install, with what each requires (the constraints script's walk).
    closure = set(_constraints_script().closure(pip_requirements(steps)))
    _, export = digits_export
    port, log = free_port(), tmp_path / "imports.txt"
    argv = [sys.executable, "-X", "importtime", "-m", "ann.serve", f"--port={port}"]
    with open(log, "w") as stderr:
        # One bucket (batch 1) to compile: the imports are the point, not the batching.
        serve = [*argv, f"--model={export}", "--max_batch_size=1"]
        proc = subprocess.Popen(serve, stdout=stderr, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                try:
                    if request(port, "GET", "/v2/health/ready", timeout=2)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            body = infer_body(np.zeros((1, 8, 8, 1), "uint8"), id="a")
            assert request(port, "POST", "/v2/models/digits_cnn/infer", body)[0] == 200
        finally:
            proc.terminate()
            proc.wait(30)
    owners = metadata.packages_distributions()
    imported = {canonicalize_name(d) for m in _imported_by_ann(log.read_text()) for d in owners[m]}
    assert "ml-collections" in imported  # the import log was read
    assert imported <= closure, f"the image lacks {sorted(imported - closure)}"


def _imported_by_ann(importtime: str) -> set[str]:
    """The top-level packages other than ann and experiments that modules of ann or experiments
    import, from `python -X importtime`'s log (post-order, a child indented deeper than its
    parent). Packages that jax and others import only when present (cloudpickle, pygments) are
    theirs to go without; site's own (setuptools' hook) are no one's."""
    ours = {"ann", "experiments"}
    found, stack = set(), []
    rows = [r.split("|")[-1] for r in importtime.splitlines() if r.startswith("import time:")]
    for field in reversed(rows[1:]):  # the header row first
        depth, module = len(field) - len(field.lstrip()), field.strip().split(".")[0]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack and stack[-1][1] in ours and module not in ours:
            found.add(module)
        stack.append((depth, module))
    return {m for m in found if m not in sys.stdlib_module_names}
