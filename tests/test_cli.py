"""The `ann` command and the wrapper every job shares (ann/__main__.py, ann/cli.py), run as a
user runs them: in a subprocess."""

import ast
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, one_line_error
from ml_collections.config_flags import config_flags

from ann import cli, config_file, console, models
from ann import config as config_lib
from ann.__main__ import JOBS

# A flag of each job's own that its --help must show (`--config` where the job takes one).
OWN_FLAGS = {
    "train": ["--config", "--workdir"],
    "export": ["--workdir", "--out", "--platforms"],
    "generate": ["--workdir", "--prompt", "--beam_size"],
    "registry": ["--registry", "--mlflow_uri"],
    "serve": ["--model", "--port", "--monitor", "--monitor_window_rows"],
    "sweep": ["--config", "--trials", "--emit"],
    "transfer": ["--config"],
    "report": ["--workdir", "--model", "--split"],
    "observability": ["--out", "--slo", "--alert", "--runbook_base"],
    "monitor": ["--model", "--requests", "--out", "--labels", "--url"],
}


def ann(*args: str, cwd=ROOT, **kw) -> subprocess.CompletedProcess:
    """`ann ARGS` as `python -m ann ARGS` (the console script calls the same function)."""
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.run(
        [sys.executable, "-m", "ann", *args], text=True, cwd=cwd, timeout=300, **kw
    )


def test_every_python_m_entry_point_is_a_job():
    # Every module of ann/ that runs as a program is reachable as `ann JOB`, and only those.
    programs = set()
    for path in (ROOT / "ann").rglob("*.py"):
        if path.name == "__main__.py" and path.parent == ROOT / "ann":
            continue
        if 'if __name__ == "__main__"' in path.read_text():
            parts = path.relative_to(ROOT).with_suffix("").parts
            programs.add(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
    assert programs == {module for module, _ in JOBS.values()}
    assert OWN_FLAGS.keys() == JOBS.keys()


def test_ann_help_lists_the_jobs_without_importing_jax():
    result = ann("--help")
    assert result.returncode == 0 and not result.stderr, result.stderr
    for job, (_, line) in JOBS.items():
        assert f"  {job}" in result.stdout and line in result.stdout
    probe = (
        "import sys; from ann.__main__ import main; main(['ann', '--help']); print(*sys.modules)"
    )
    loaded = (
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        .stdout.split("\n")[-2]
        .split()
    )
    assert "jax" not in loaded and "ann.main" not in loaded and "ann.cli" not in loaded


# Answered before JAX is imported (a second and more of a start here): help, a mistyped flag or
# config key, a missing run.
WITHOUT_JAX = [
    ("train", "--help"),
    ("train", "--config=configs/digits_mlp.py", "--workdir=W", "--config.optimizer.b2=1.0"),
    ("train", "--config=configs/digits_mlp.py", "--workdir=W", "--config.optimzer.b2=0.9"),
    # Its fix names the experiment's logged metrics without importing the experiment.
    ("train", "--config=configs/digits_mlp.py", "--workdir=W", "--config.best_metric=nope"),
    ("export", "--help"),
    ("export", "--workdir=W", "--out=OUT"),
    ("generate", "--help"),
    ("generate", "--workdir=W", "--num_tokens=0"),
    ("report", "--help"),
    ("report", "--workdir=W"),
    ("sweep", "--help"),
    ("sweep", "--config=configs/digits_mlp.py", "--workdir=W", "--trials=0"),
    # These answered after importing JAX (1.5-4 s).
    ("sweep", "--config=configs/digits_mlp.py", "--workdir=W", "--metric=eval/accuracy"),
    ("train", "--config=configs/digits_mlp.py", "--workdir="),
    ("train", "--config=configs/digits_mlp.py", "--workdir=README.md/run"),
    ("registry", "--help"),
    ("serve", "--help"),
    ("observability", "--help"),
    ("monitor", "--help"),
    ("monitor", "performance", "--help"),
    ("transfer", "--help"),
    ("transfer", "--config=configs/digits_mlp.py", "--config.optimizer.b2=1.0"),
    # A key `ann train` refuses as having no effect: refused by transfer too.
    ("transfer", "--config=configs/digits_mlp.py", "--config.optimizer.momentum=0.5"),
    ("monitor", "drift", "--model=OUT", "--requests=OUT", "--method=kss"),
    # A registry that is not there: said after 9 s of imports and loading.
    ("report", "--model=models:/digits@champion", "--split=test", "--registry=OUT/nosuchreg"),
]


@pytest.mark.parametrize("args", WITHOUT_JAX, ids=" ".join)
def test_help_and_mistakes_answer_without_importing_jax(args, tmp_path):
    probe = (
        "import sys\nfrom ann.__main__ import main\ntry:\n    main(['ann', *sys.argv[1:]])\n"
        "except SystemExit as e:\n    code = e.code\nprint('jax' in sys.modules, code)\n"
    )
    args = [a.replace("=W", f"={tmp_path / 'run'}").replace("OUT", str(tmp_path)) for a in args]
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    jax_loaded, code = result.stdout.split("\n")[-2].split()
    assert jax_loaded == "False", (args, result.stderr[-2000:])
    if "--help" in args:
        assert code in ("0", "None") and not result.stderr, result.stderr[-2000:]
    else:  # the mistake's one line
        assert code == "1" and result.stderr.startswith("error: "), result.stderr[-2000:]
        assert result.stderr.count("\n") == 1, result.stderr


def test_errors_named_by_module_resolve_only_once_imported():
    from ann.artifact import IntegrityError

    # A job names the errors of modules it imports late; a module not imported yet cannot have
    # raised its error, and looking it up must not import it.
    named = ["ann.artifact:IntegrityError", KeyError, "ann_not_imported_yet:Error"]
    assert cli.error_classes(named) == [IntegrityError, KeyError]
    assert "ann_not_imported_yet" not in sys.modules


@pytest.mark.parametrize("job", list(JOBS))
def test_every_job_help_shows_its_flags_and_exits_0(job):
    # absl's --help exited 1 and left out --config (defined in ann/cli.py, not the job).
    result = ann(job, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in OWN_FLAGS[job]:
        assert f"  {flag}:" in result.stdout, (flag, result.stdout)
    # A docstring's example ending in a lone "\" joined its lines ("--search=tpe   --trials").
    assert not re.search(r"\S {3,}--", result.stdout), result.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("bench_*.py")))
def test_every_benchmark_script_help_exits_0_without_importing_jax(script):
    # The scripts run through the same wrapper (cli.run): --help is theirs to show too. Four of
    # them imported JAX (and flax, the loop) before reading a flag: 3-9 s for --help.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", f"scripts/{script}", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0 and "flags:" in result.stdout, result.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    heavy = sorted({name for name in imported if name in ("jax", "flax", "optax")})
    assert not heavy, f"{script} --help imported {', '.join(heavy)}"


def test_the_scripts_for_other_machines_answer_help_in_one_line(tmp_path):
    # A trial: gpu_check.sh --help ran the whole GPU suite on a CPU machine (10 minutes, data
    # written to /tmp); mlserver_runtime.py and torch_peer.py printed ModuleNotFoundError.
    def run(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60,
                              env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})  # fmt: skip

    shown = run("bash", "scripts/gpu_check.sh", "--help")
    assert shown.returncode == 0 and "tokens/s and MFU" in shown.stdout, shown.stderr
    if shutil.which("nvidia-smi", path="/usr/bin:/bin") is None:  # else it would run the suite
        assert one_line_error(run("bash", "scripts/gpu_check.sh", str(tmp_path / "out"))) == (
            "error: no nvidia-smi here; scripts/gpu_check.sh is for a machine with an NVIDIA GPU"
        )
        assert not (tmp_path / "out").exists()
    shown = run(sys.executable, "scripts/mlserver_runtime.py", "--help")
    assert shown.returncode == 0 and "Seldon MLServer runtime" in shown.stdout, shown.stderr
    if importlib.util.find_spec("torch") is None:
        line = one_line_error(run(sys.executable, "scripts/torch_peer.py", "--help"))
        assert line.startswith("error: scripts/torch_peer.py needs PyTorch;"), line


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.learning_rte=0.01", "did you mean 'optimizer.learning_rate'?"),
        ("optimizer.learning_rate=-0.01", "'optimizer.learning_rate' must be > 0"),
        ("optimizer.momentum=0.5", "'optimizer.momentum'=0.5 has no effect"),
        # Checked on the warm run's own command line (--steps=2, then the override): it was
        # checked with the warmup fitted to --steps afterwards, passed, and the warm run
        # refused it after the cold run.
        ("optimizer.warmup_steps=100", "'optimizer.warmup_steps' must be in [0, 2)"),
    ],
)
def test_bench_startup_checks_its_warm_override_before_any_run(override, message):
    # It had failed after the whole cold run (17 s), quoting the subprocess's command line.
    result = subprocess.run(
        [sys.executable, "scripts/bench_startup.py", f"--warm_override={override}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    line = one_line_error(result)
    assert line.startswith("error: --warm_override: ") and message in line, line
    assert "load average" not in result.stdout  # nothing ran


def test_bench_startup_passes_on_an_override_spelt_with_a_space():
    # `--config.total_steps 3` was passed on as `--config.total_steps`, its value left behind.
    code = (
        "import sys; sys.path.insert(0, 'scripts'); import bench_startup as b; "
        "b.FLAGS(['b']); print(b._config_args(['--config.total_steps', '3', "
        "'--config.data.shuffle', '--steps=4']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.strip().endswith("'--config.total_steps=3', '--config.data.shuffle']"), (
        result.stdout + result.stderr
    )


@pytest.mark.slow
def test_bench_startup_times_serve_without_a_cache_cold_and_warm(digits_export):
    _, out = digits_export
    result = subprocess.run(
        [sys.executable, "scripts/bench_startup.py", "--serve_cache", f"--serve_export={out}",
         "--rounds=1"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"round 0: ready off [0-9.]+ s, cold [0-9.]+ s, warm [0-9.]+ s", result.stdout)
    for name in ("off", "cold", "warm"):
        assert f"{name:>5}: median ready " in result.stdout, result.stdout
    assert re.search(r"warm / off, ready: median of the rounds' ratios [0-9.]+", result.stdout)


def test_python_m_help_is_the_same_as_ann():
    result = subprocess.run(
        [sys.executable, "-m", "ann.main", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "  --config:" in result.stdout and "  --workdir:" in result.stdout


def test_the_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    module, _, function = scripts["ann"].partition(":")
    assert (module, function) == ("ann.__main__", "main")
    script = pathlib.Path(sys.executable).parent / "ann"
    if script.exists():  # installed (pip install -e .): the script itself
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "jobs:" in result.stdout


def test_an_unknown_job_lists_the_jobs_in_helps_order(capsys):
    from ann.__main__ import describe, main

    with pytest.raises(SystemExit):
        main(["ann", "tarin"])
    said = capsys.readouterr().err.split("; jobs: ")[1].removesuffix(" (ann --help)\n")
    listed = [
        line.split()[0] for line in describe().split("jobs:\n")[1].split("\n\n")[0].splitlines()
    ]
    assert said.split(", ") == listed


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "error: no job given; jobs: train, export,"),
        (["trian"], "error: unknown job 'trian' (did you mean 'train'?); jobs: train,"),
        # A missing --config was absl's "flag --config=None: Flag --config must have a value
        # other than None."
        (["train", "--workdir=W"], "error: missing --config: config file"),
        (["transfer"], "error: missing --config: config file"),
        (["export"], "error: missing --workdir: the run to export"),
        (["serve"], "error: missing --model: registry URI or export directory (repeatable);"),
        # The help continues the line: it read "missing --workdir (A trained run (...))".
        (
            ["generate", "--prompt=x"],
            "error: missing --workdir: a trained run (language_modell"
            "ing or seq2seq); --help lists every flag",
        ),
        (["train"], "error: missing --config: config file"),
        # An unknown variant of a config file was a traceback from the config file.
        (
            ["train", "--config=configs/digits_cnn.py:nosuch", "--workdir=W"],
            "error: --config=configs/digits_cnn.py:nosuch: digits_cnn.py has no variant "
            "'nosuch'; use :writers or no variant",
        ),
        (
            ["sweep", "--config=configs/digits_mlp.py:nosuch", "--workdir=W"],
            "error: --config=configs/digits_mlp.py:nosuch: digits_mlp.py has no variant 'nosuch'",
        ),
        (
            ["train", "--config=configs/pydoc_lm.py:big", "--workdir=W"],
            "error: --config=configs/pydoc_lm.py:big: pydoc_lm.py has no variant 'big'; it ",
        ),
        # Flags and overrides a user gets nearly right: each answer names what to type.
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--total_steps=5"],
            "error: unknown flag --total_steps; config keys are set as --config.total_steps=",
        ),
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--learning_rate=1"],
            "error: unknown flag --learning_rate; config keys are set as "
            "--config.optimizer.learning_rate=",
        ),
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--totl_steps=5"],
            "error: unknown flag --totl_steps; did you mean --config.total_steps=5?",
        ),
        # A misspelt override: the flag meant, with the value typed (it named the key only).
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.totl_steps=5"],
            "error: config key 'totl_steps' is unknown (did you mean 'total_steps'?); e.g. "
            "--config.total_steps=5",
        ),
        (  # a value the key meant refuses: its default (it offered total_steps=abc)
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.totl_steps=x"],
            "error: config key 'totl_steps' is unknown (did you mean 'total_steps'?); e.g. "
            "--config.total_steps=0",
        ),
        (  # a tuple's one number, as it takes it (features=64 was refused once pasted)
            ["train", "--config=configs/digits_mlp.py", "--workdir=W", "--config.model.featurs=64"],
            "error: config key 'model.featurs' is not an argument of model 'mlp' (did you mean "
            "'model.features'?); it accepts: features, dropout, norm, linear_skip; e.g. "
            '--config.model.features="(64,)"',
        ),
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.optimzer.lr=.1"],
            "error: config key 'optimzer.lr' is unknown (did you mean 'optimizer.learning_rate'?)"
            "; e.g. --config.optimizer.learning_rate=.1",
        ),
        # A name several sections hold: each of their keys (it named only model.name); another
        # framework's name for a key (it named none); a misspelt section and key, the key meant.
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--name=x"],
            "error: unknown flag --name; config keys are set as --config.data.name=x, "
            "--config.model.name=x or --config.optimizer.name=x",
        ),
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--lr=0.1"],
            "error: unknown flag --lr; config keys are set as --config.optimizer.learning_rate=",
        ),
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--optimzer.lr=0.1"],
            "error: unknown flag --optimzer.lr; did you mean --config.optimizer.learning_rate=0.1?",
        ),
        (
            ["export", "--workdir=W", "--output=x"],
            "error: unknown flag --output; did you mean --out?",
        ),
        (  # no near miss: it said "did you mean --out?" (difflib's ratio 0.5)
            ["export", "--workdir=W", "--bogus=x"],
            "error: unknown flag --bogus (--help lists this job's flags)",
        ),
        (  # the README's slices override, given to the report instead of the training run
            ["report", "--workdir=W", "--config.report.slice_min=0.99"],
            "error: unknown flag --config.report.slice_min: config keys are set where a run is "
            "made (ann train, ann transfer, ann sweep: --config.KEY=VALUE); this job reads what "
            "the run's config.json recorded",
        ),
        (  # it suggested the first key of the section, optimizer.accumulate_steps
            ["train", "--config=configs/digits_mlp.py", "--workdir=W", "--config.optimizer=sgd"],
            "error: --config.optimizer=sgd: 'optimizer' is a section, not a value; set its keys, "
            "e.g. --config.optimizer.name=sgd",
        ),
        (  # it said --config.model.NAME=V
            ["train", "--config=configs/digits_mlp.py", "--workdir=W", "--config.model=cnn"],
            "error: --config.model=cnn: 'model' is a section, not a value; set its keys, e.g. "
            "--config.model.name=cnn",
        ),
        (  # each of a launcher's processes said it, unnamed: the same line N times
            ["train", "--process_id=1", "--num_processes=2", "--confg=x"],
            "error: process 1 of 2: unknown flag --confg; did you mean --config?",
        ),
        # As typed: absl's name drops the dashes, so -1 (a negative version) read as "--1".
        (
            ["export", "--workdir=W", "-ouput=x"],
            "error: unknown flag -ouput; did you mean --out?",
        ),
        (
            ["registry", "--registry=R", "delete", "m", "-1"],
            "error: unknown flag -1: an argument that starts with '-' is read as a flag; give a "
            "negative value as --flag=-1, or positional arguments after '--'",
        ),
        (
            ["train", "--config=configs/digit_cnn.py", "--workdir=W"],
            "error: --config=configs/digit_cnn.py: no such file; did you mean "
            "configs/digits_cnn.py?",
        ),
        # It said "did you mean --config?" of an override given without its config file.
        (
            ["train", "--workdir=W", "--config.total_steps=5"],
            "error: unknown flag --config.total_steps: --config.total_steps overrides a key of "
            "--config=FILE; give the config file too",
        ),
        # An override loads the file first: it was ml_collections' "Configuration is not
        # available because of an earlier failure to load: ...", without the near name.
        (
            ["train", "--config=configs/digit_cnn.py", "--workdir=W", "--config.total_steps=5"],
            "error: --config=configs/digit_cnn.py: no such file; did you mean "
            "configs/digits_cnn.py?",
        ),
        # An empty --config was read as the directory `.`: "no such file; it is a directory".
        (
            ["train", "--config=", "--workdir=W"],
            "error: --config='' names no file; give a config file, e.g. "
            "--config=configs/digits_cnn.py",
        ),
        (
            ["transfer", "--config=:writers"],
            "error: --config=:writers names no file; give a config file, e.g. "
            "--config=configs/digits_cnn.py",
        ),
        # `configs/` left out or misspelt, the likeliest slip: no suggestion at all.
        (
            ["train", "--config=digits_cnn.py", "--workdir=W"],
            "error: --config=digits_cnn.py: no such file; did you mean configs/digits_cnn.py?",
        ),
        (
            ["train", "--config=config/digits_cnn.py:writers", "--workdir=W"],
            "error: --config=config/digits_cnn.py: no such file; did you mean "
            "configs/digits_cnn.py:writers?",
        ),
        # The suggestion dropped the variant: `did you mean configs/digits_autoencoder.py?`
        # trains the plain config, not `:dense`.
        (
            ["train", "--config=configs/digits_autoencoder:dense", "--workdir=W"],
            "error: --config=configs/digits_autoencoder: no such file; did you mean "
            "configs/digits_autoencoder.py:dense?",
        ),
        (
            ["train", "--config=configs/digit_cnn.py:writers", "--workdir=W", "--config.seed=1"],
            "error: --config=configs/digit_cnn.py: no such file; did you mean "
            "configs/digits_cnn.py:writers?",
        ),
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.total_steps=abc"],
            # The config file's value as the example (the default, 0, means "unset").
            "error: --config.total_steps=abc must be an integer (the key's type in the config); "
            "e.g. --config.total_steps=600",
        ),
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.model.dropout=x"],
            "error: --config.model.dropout=x must be a number (the key's type in the config); "
            "e.g. --config.model.dropout=0.5",
        ),
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.batch_size=abc"],
            "error: --config.batch_size=abc must be an integer (the key's type in the config); "
            "e.g. --config.batch_size=128",
        ),
        # adamw ignores momentum: an override to the value the file holds changes nothing.
        (
            [
                "train",
                "--config=configs/digits_cnn.py",
                "--workdir=W",
                "--config.optimizer.momentum=0.9",
            ],
            "error: config key 'optimizer.momentum'=0.9 has no effect with optimizer.name="
            "'adamw' (read only by sgd); drop --config.optimizer.momentum or set "
            "--config.optimizer.name=sgd",
        ),
        (
            [
                "train",
                "--config=configs/digits_cnn.py",
                "--workdir=W",
                "--config.data.eval_splits=3",
            ],
            "error: config key 'data.eval_splits' holds 3 (int); every element must be a string",
        ),
        # A sweep workdir under a file was a NotADirectoryError traceback.
        (
            ["sweep", "--config=configs/digits_mlp.py", "--workdir=README.md/sweep"],
            "error: --workdir=README.md/sweep cannot be created: ",
        ),
        (
            ["monitor", "drfit"],
            "error: unknown command 'drfit' (did you mean 'drift'?); commands: drift, feedback, "
            "performance",
        ),
        (
            ["registry", "lst"],
            "error: unknown registry command 'lst'; did you mean `ann registry list`?",
        ),
        # From a fresh-user trial: each of these was a traceback (JAX's TypeError, a
        # ZeroDivisionError, grain's ValueError, TFDS's parser, a wrapped ValueError that left
        # config.json behind) or absl/ml_collections wording.
        *[
            (["train", "--config=configs/digits_cnn.py", "--workdir=W", override], message)
            for override, message in [
                (  # a lone 0 is refused as a number for a tuple (below): this is the range
                    "--config.model.features=(0,)",
                    "error: config key 'model.features' must be one or more elements, each >= 1, "
                    "got (0,); e.g. --config.model.features='(32, 64)'",
                ),
                (
                    "--config.model.features=()",
                    "error: config key 'model.features' must be one or more elements, each >= 1, "
                    "got ();",
                ),
                (
                    "--config.mesh.model=2",
                    "error: config key 'mesh.model' is unknown; keys under 'mesh': data, fsdp, "
                    "tensor",
                ),
                (  # it ran as the 1-tuple (3,), unsaid
                    "--config.model.features=3",
                    "error: --config.model.features=3 gives the tuple key 'model.features' one "
                    "number, which ml_collections would take as (3,); give a tuple of integers: "
                    "--config.model.features='(3,)' (or =3,) for one element; for more, "
                    "--config.model.features='(3, N)' or the flag once per element "
                    "(--config.model.features=3 --config.model.features=N)",
                ),
                (
                    "--config.model.features=abc",
                    "error: config key 'model.features' must be a "
                    "tuple of integers, got 'abc'; e.g. --config.model.features='(32, 64)'",
                ),
                (  # it said "got ('(256,abc)',)", the text wrapped in a tuple by ml_collections
                    "--config.model.features=(256,abc)",
                    "error: config key 'model.features' must be a "
                    "tuple of integers, got '(256,abc)'; e.g. --config.model.features='(32, 64)'",
                ),
                (
                    "--config.model.dense=-4",
                    "error: config key 'model.dense' must be >= 1, got -4;"
                    " e.g. --config.model.dense=128",
                ),
                (
                    "--config.seed=-1",
                    "error: config key 'seed' must be in [0, 4294967296), got "
                    "-1; e.g. --config.seed=0",
                ),
                (
                    "--config.data.name=3",
                    "error: config key 'data.name': unknown data set '3': not one",
                ),
                (
                    "--config.batch_size=100000",
                    "error: split digits/train has 1221 rows, fewer "
                    "than a batch of 100000; lower --config.batch_size",
                ),
                (
                    "--config.data.shuffle=yes",
                    "error: --config.data.shuffle=yes must be true or "
                    "false, or 1 or 0 (the key's type in the config)",
                ),
                (
                    "--config.mesh=abc",
                    "error: --config.mesh=abc: 'mesh' is a section, not a "
                    "value; set its keys, e.g. --config.mesh.tensor=1",
                ),
                (
                    "--config.model.features=(32,",
                    "error: --config.model.features=(32, must be a "
                    "tuple such as '(32, 64)', quoted for the shell",
                ),
                # A tuple of strings was shown the integer example, or taken as one string.
                (
                    "--config.freeze=(convs/.*, dense/.*)",
                    "error: --config.freeze=(convs/.*, dense/.*) must be a tuple of quoted "
                    "strings, the whole quoted for the shell: "
                    "--config.freeze=\"('convs/.*', 'dense/.*')\"",
                ),
                (
                    "--config.data.eval_splits=(test, test_writers)",
                    "error: config key 'data.eval_splits' got the one string '(test, "
                    "test_writers)'; a tuple of strings quotes each one; e.g. "
                    "--config.data.eval_splits=\"('test', 'test_writers')\"",
                ),
                (
                    "--config.data.eval_splits=test,test_writers",
                    "error: config key 'data.eval_splits' got the one string "
                    "'test,test_writers'; a tuple of strings quotes each one; e.g. "
                    "--config.data.eval_splits=\"('test', 'test_writers')\"",
                ),
            ]
        ],  # fmt: skip
        (
            [
                "train",
                "--config=configs/digits_vit.py",
                "--workdir=W",
                "--config.model.num_heads=3",
                "--config.total_steps=2",
                "--config.optimizer.warmup_steps=0",
            ],
            "error: model 'vit' cannot be built for the data's input_shape=(8, 8, 1) from its "
            "model.* settings: model dim 64 is not divisible by num_heads 3; use num_heads in 1, "
            "2, 4, 8, 16, 32, 64, or a dim that 3 divides; fix the setting, or choose a model "
            "for this data",
        ),  # fmt: skip
        # A job's own flag given the wrong type was Python's "invalid literal for int() with
        # base 10: 'abc'".
        (
            ["serve", "--model=W", "--port=abc"],
            "error: --port=abc must be an integer in [1, 65535]; e.g. --port=8000",
        ),
        (  # absl: "Missing value for flag --config.total_steps"
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.total_steps"],
            "error: --config.total_steps needs a value: --config.total_steps=VALUE",
        ),
        (
            ["train", "--config=configs", "--workdir=W"],
            "error: --config=configs is a directory; give a config file (configs/NAME.py)",
        ),
        (
            ["train", "--config=README.json", "--workdir=W"],
            "error: --config=README.json: a config is a Python file with get_config() "
            "(configs/NAME.py); a run's config.json records a run",
        ),
        # A leading zero: "must be an integer" for digits said nothing of what was wrong.
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.total_steps=08"],
            "error: --config.total_steps=08 must be an integer without a leading zero; e.g. "
            "--config.total_steps=8",
        ),
        (
            ["serve", "--model=W", "--port=08000"],
            "error: --port=08000 must be an integer in [1, 65535] without a leading zero; e.g. "
            "--port=8000",
        ),
        # The value as typed, quoted where a shell needs it: `--port=80 ` hid its space, and
        # `--top_p=NaN` read `--top_p=nan`.
        (
            ["serve", "--model=W", "--port=80 "],
            "error: --port='80 ' must be an integer in [1, 65535]; e.g. --port=8000",
        ),
        (
            ["generate", "--workdir=W", "--top_p=NaN"],
            "error: --top_p=NaN must be a number in [0, 1] (1: all ids, 0: the likeliest); e.g. "
            "--top_p=1.0",
        ),
        # absl's booleans take 1 and 0 too (`=0` was taken while `=1.5` said "true or false").
        (
            ["train", "--config=configs/digits_cnn.py", "--workdir=W", "--config.data.shuffle=2"],
            "error: --config.data.shuffle=2 must be true or false, or 1 or 0 (the key's type "
            "in the config); e.g. --config.data.shuffle=True",
        ),
        # A stray word (the rest of an unquoted value) printed the whole help page.
        (
            ["generate", "--workdir=W", "--prompt=Return", "the"],
            "error: unexpected argument 'the': this command takes flags only (--name=value); "
            'quote a value that has spaces: --name="two words"',
        ),
        (
            ["export", "--workdir=W", "--out=W", "a", "b"],
            "error: unexpected arguments 'a' 'b': this command takes flags only",
        ),
    ],
)
def test_mistakes_on_the_command_line_are_one_line(tmp_path, args, message):
    from ann import data

    data.load("digits", "train")  # built here, not by the run: its build says so on stderr
    args = [a.replace("=W", f"={tmp_path / 'run'}") for a in args]
    line = one_line_error(ann(*args))
    assert line.startswith(message), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("job", ["train", "sweep"])
def test_a_config_name_outside_the_checkout_is_pointed_at_anns_configs(tmp_path, job):
    # From another directory `--config=digits_cnn.py` got no suggestion: only ./configs was
    # looked in.
    line = one_line_error(ann(job, "--config=digits_cnn.py", "--workdir=W", cwd=tmp_path))
    assert line == (
        f"error: --config=digits_cnn.py: no such file; did you mean {ROOT}/configs/digits_cnn.py?"
    ), line


def test_a_scalar_override_given_twice_is_warned_and_the_last_taken(tmp_path):
    # It trained with the last value without a word. Warned, not refused: a wrapper's defaults
    # followed by the user's own flags is how they are overridden (the tests' helpers do it).
    # A tuple key's repeats add elements: nothing said.
    args = ["--config.total_steps=100", "--config.total_steps", "200"]
    result = ann(
        "train", "--config=configs/digits_cnn.py", f"--workdir={tmp_path / 'w'}", *args,
        "--config.model.features=32", "--config.model.features=64", "--config.batch_size=64",
        "--config.batch_size=32",  # a second repeated key: it was not warned of
        "--config.optimizer.learning_rate=-1",  # refused after the flags are read: ends it
    )  # fmt: skip
    assert result.stderr.splitlines() == [
        "warning: --config.total_steps is given 2 times (--config.total_steps=100 "
        "--config.total_steps 200): the last, 200, is taken (a key that is not a tuple takes "
        "one value)",
        "warning: --config.batch_size is given 2 times (--config.batch_size=64 "
        "--config.batch_size=32): the last, 32, is taken (a key that is not a tuple takes one "
        "value)",
        "error: config key 'optimizer.learning_rate' must be > 0, got -1.0; e.g. "
        "--config.optimizer.learning_rate=0.001",
    ]
    from ml_collections import ConfigDict

    config = ConfigDict({"total_steps": 200, "model": {"features": (32, 64)}})
    assert cli.repeated_values(["train", *args[:1], "--config.total_steps=200"], config)
    assert cli.repeated_values(["train", "--config.total_steps=200"], config) == []


def test_a_run_given_as_the_config_is_answered_with_the_config_it_was_made_from(
    tmp_path, monkeypatch
):
    """`--config=RUN` (or its config.json) was told to give "the one the run was made from"
    without naming it, though the run's config.json records it."""
    run, old = tmp_path / "run", tmp_path / "old"  # `old`: from before the record was kept
    monkeypatch.chdir(tmp_path)  # the run's start and the command's: named as given
    config_lib.write(config_lib.base(), str(run), "configs/digits_mlp.py")
    config_lib.write(config_lib.base(), str(old))
    workdir = f"--workdir={tmp_path / 'new'}"
    for config, said in [
        ("run", "--config=run is a run directory; give a config file (configs/NAME.py), the one "
         "the run was made from: --config=configs/digits_mlp.py"),
        ("run/config.json", "--config=run/config.json: a config is a Python file with "
         "get_config() (configs/NAME.py); a run's config.json records a run: give the file it "
         "was made from (--config=configs/digits_mlp.py), with --config.KEY=VALUE for what "
         "differs"),
        ("old", "--config=old is a run directory; give a config file (configs/NAME.py), the one "
         "the run was made from"),
    ]:  # fmt: skip
        result = ann("train", f"--config={config}", workdir, cwd=tmp_path)
        assert one_line_error(result) == f"error: {said}", config
    assert sorted(os.listdir(tmp_path)) == ["old", "run"]


def test_config_given_with_a_space_or_a_run_step_is_read_as_with_an_equals_sign(
    tmp_path, monkeypatch
):
    """absl's `--config FILE` was missed by the checks that read argv ("--config=?", ml_collections'
    "earlier failure to load: Is a directory"), and `--config=RUN:best` (init_from's spelling)
    said "no such file"."""
    monkeypatch.chdir(tmp_path)  # the run's start and the command's: named as given
    config_lib.write(config_lib.base(), str(tmp_path / "run"), "configs/digits_mlp.py")
    mlp = ROOT / "configs" / "digits_mlp.py"
    made = "give a config file (configs/NAME.py), the one the run was made from: " \
        "--config=configs/digits_mlp.py"  # fmt: skip
    for args, said in [
        (["--config", "run", "--config.total_steps=3"], f"--config=run is a run directory; {made}"),
        (["--config=run:best"], f"--config=run:best: run is a run directory; {made}"),
        (["--config", "nope.py", "--config.total_steps=3"], "--config=nope.py: no such file"),
        (["--config", f"{mlp}:bad"], f"--config={mlp}:bad: digits_mlp.py has no variant 'bad'"),
    ]:
        result = ann("train", *args, f"--workdir={tmp_path / 'new'}", cwd=tmp_path)
        assert one_line_error(result).startswith(f"error: {said}"), args
    assert os.listdir(tmp_path) == ["run"]


def test_a_config_file_whose_code_fails_is_one_line_naming_its_line(tmp_path):
    # Each printed a traceback of 50-60 lines; a file without get_config named ml_collections'
    # internal module ("module 'config_config' has no attribute 'get_config'").
    files = {
        "syntax.py": ("def get_config(:\n", "line 1: SyntaxError: invalid syntax"),
        "name.py": (
            "def get_config():\n    return undefined\n",
            "line 2: NameError: name 'undefined' is not defined",
        ),
        "value.py": (
            "import ml_collections\n\ndef get_config():\n    raise ValueError('no data')\n",
            "line 4: ValueError: no data",
        ),
        "imports.py": ("import not_a_module_xyz\n", "line 1: ModuleNotFoundError: No module"),
        "empty.py": ("X = 1\n", "has no get_config(); define get_config() returning the"),
        # Not Python at all (a README): "fix the config file" told the user to edit it.
        "notes.md": (
            "# Notes\n\nIt's a list:\n",
            "line 3: SyntaxError: unterminated string literal (detected at line 3); --config "
            "takes a Python file with get_config() (configs/NAME.py), not this one",
        ),
    }
    for name, (code, message) in files.items():
        path = tmp_path / name
        path.write_text(code)
        line = one_line_error(ann("train", f"--config={path}", f"--workdir={tmp_path / 'run'}"))
        assert line.startswith(f"error: --config={path} {message}"), line
    assert not (tmp_path / "run").exists()


def test_a_config_file_importing_a_module_beside_it_names_its_directory(tmp_path):
    """ml_collections loads a config file by its path, its directory not on sys.path: `import
    mybase` beside mychild.py failed with the hint for ann's configs/ ("PYTHONPATH=. from the
    repository's root"), which does not fit; the line names the directory to put there."""
    mine = tmp_path / "my configs"
    mine.mkdir()
    (mine / "mybase.py").write_text("from ann import config\nget_config = config.base\n")
    (mine / "mychild.py").write_text("import mybase\n\ndef get_config(arg=None):\n    return 1\n")
    child = mine / "mychild.py"
    line = one_line_error(ann("train", f"--config={child}", f"--workdir={tmp_path / 'run'}"))
    assert line.startswith(f"error: --config={child} line 1: ModuleNotFoundError: "), line
    assert "'mybase' is beside the config file" in line, line
    assert f"PYTHONPATH='{mine}'" in line and "repository's root" not in line, line
    # A module elsewhere: the directory that holds it, without the configs/ words.
    (mine / "other.py").write_text("import not_a_module_xyz\n")
    line = one_line_error(ann("train", f"--config={mine / 'other.py'}", f"--workdir={tmp_path}"))
    assert line.endswith("put the directory that holds 'not_a_module_xyz' on PYTHONPATH"), line
    assert not (tmp_path / "run").exists()


def test_a_binary_file_given_as_the_config_is_one_line(tmp_path):
    # An export's weights.safetensors or /bin/ls as --config printed 67 lines of traceback
    # ending "SyntaxError: source code string cannot contain null bytes" (train, sweep,
    # transfer: every job that reads --config).
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)))
    for job in ("train", "sweep", "transfer"):
        line = one_line_error(ann(job, f"--config={path}", f"--workdir={tmp_path / 'run'}"))
        assert line == (
            f"error: --config={path}: {path} is not a Python config file (it holds null bytes: "
            "a binary file); give a config file with get_config() (configs/NAME.py)"
        ), line
    assert not (tmp_path / "run").exists()


def test_a_device_or_a_pipe_given_as_the_config_is_one_line(tmp_path):
    # --config=/dev/zero grew to 8.8 GB in 8 s (read whole), a FIFO blocked for good, and
    # /dev/null said "no such file".
    fifo = tmp_path / "f.py"
    os.mkfifo(fifo)
    for path in ("/dev/zero", "/dev/null", str(fifo)):
        line = one_line_error(ann("train", f"--config={path}", f"--workdir={tmp_path / 'run'}"))
        assert line == (
            f"error: --config={path}: {path} is not a regular file (a device, a pipe or a "
            "socket); give a config file (configs/NAME.py)"
        ), line
    assert not (tmp_path / "run").exists()


# `ann ARGS` with a full disk: os.fsync (what every atomic write ends with) or matplotlib's
# savefig raises ENOSPC, as a full file system's write does (naming no file).
_FULL_DISK = """
import errno, os, runpy, sys
def full(*args, **kw):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
if sys.argv[1] == "fsync":
    os.fsync = full
else:
    import matplotlib.figure
    matplotlib.figure.Figure.savefig = full
sys.argv = ["ann", *sys.argv[2:]]
runpy.run_module("ann", run_name="__main__", alter_sys=True)
"""


def test_a_full_disk_is_one_line_naming_the_file_and_the_fix(digits_export, tmp_path):
    # `ann report --out` on a nearly full disk printed a 57-line traceback ending "OSError:
    # [Errno 28] No space left on device", `ann export` 31 lines, `ann sweep` one from
    # ann/atomic.py. cli.run says it for every job, naming the file, the flag and the fix;
    # nothing is left half-written.
    workdir, export = digits_export
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        ("fsync", ["export", f"--workdir={workdir}", f"--out={out / 'e'}"], "e/function.jaxexport",
         "--out"),
        ("savefig", ["report", f"--workdir={workdir}", f"--out={out / 'r'}"],
         "r/validation_confusion_matrix_heatmap.png", "--out"),
        ("fsync", ["sweep", "--config=configs/digits_mlp.py", f"--workdir={out / 's'}"],
         "s/sweep.json", "--workdir"),
        ("fsync", ["registry", f"--registry={out / 'g'}", "register", str(export), "--name=d"],
         "g/artifacts/d/1/registry.json", "--registry"),  # the version's
    ]  # fmt: skip
    for patch, args, file_name, flag in cases:
        result = subprocess.run(
            [sys.executable, "-c", _FULL_DISK, patch, *args],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
        line = one_line_error(result)
        given = next(a for a in args if a.startswith(f"{flag}="))
        assert line == (
            f"error: {out / file_name}: no space left on device ({given}); free space on its "
            f"file system, or choose another {flag}, then rerun"
        ), line
    # No file half-written, no temporary; nor the sweep's workdir holding only its lock, nor
    # the registry's database that the rolled-back first register left without a version
    # (both were left, and read as a sweep and a registry).
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == [], left


def test_a_file_too_large_is_one_line_naming_the_limit(digits_export, tmp_path):
    # Under `ulimit -f 300` (EFBIG, errno 27; Python ignores the SIGXFSZ that comes with it)
    # `ann export` was a traceback ending "OSError: [Errno 27] File too large", and `ann
    # registry register` "error: [Errno 27] File too large: ..." naming no fix.
    workdir, export = digits_export
    out = tmp_path / "out"
    out.mkdir()

    cases = [
        (["export", f"--workdir={workdir}", f"--out={out / 'e'}"], "--out"),
        (["registry", f"--registry={out / 'g'}", "register", str(export), "--name=d"],
         "--registry"),
    ]  # fmt: skip
    for args, flag in cases:
        result = subprocess.run(
            ["bash", "-c", 'ulimit -f 4 && exec "$0" "$@"', sys.executable, "-m", "ann", *args],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
        line = one_line_error(result)
        given = next(a for a in args if a.startswith(f"{flag}="))
        assert line.startswith(f"error: {out}{os.sep}") and line.endswith(
            f": file too large ({given}); raise this process's file size limit (ulimit -f, "
            "now 4 KiB), then rerun"
        ), line
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == [], left


def test_a_file_too_large_or_a_quota_without_a_ulimit_names_the_file_system(monkeypatch):
    # With no `ulimit -f`, a file too large is the file system's cap (FAT32's 4 GiB, a quota):
    # another --out on the same file system would fail the same way.
    import errno

    from ann import atomic, cli

    monkeypatch.setattr(atomic, "file_size_limit", lambda: None)
    big = OSError(errno.EFBIG, os.strerror(errno.EFBIG), "/mnt/usb/x/weights.safetensors")
    assert cli.storage_error(big) == (
        "/mnt/usb/x/weights.safetensors: file too large; its file system caps a file's size "
        "(its format, e.g. FAT32 at 4 GiB, or a quota): write elsewhere on a file system "
        "without that cap, then rerun"
    )
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/home/u/x/weights.safetensors")
    assert cli.storage_error(quota) == (
        "/home/u/x/weights.safetensors: disk quota exceeded; free space within your disk "
        "quota, or write elsewhere, then rerun"
    )


def test_a_read_the_permissions_refuse_is_worded_as_a_read(tmp_path, monkeypatch):
    # EACCES on a file ann reads said a write's fix: "permission denied (--workdir=W); fix its
    # permissions, or choose another --workdir", as if the file were to be written elsewhere.
    import errno
    import os

    from ann import cli

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    denied = str(run / "config.json")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: p != denied and real_access(p, m))
    read = PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied)
    assert cli.storage_error(read) == (
        f"{denied}: permission denied reading it; give your user read permission (chmod u+r "
        f"{denied}) or ask its owner to, then rerun"
    )
    # Creating a file the directory refuses is still a write, with a write's fix.
    new = str(run / "new.json")
    write = PermissionError(errno.EACCES, os.strerror(errno.EACCES), new)
    assert cli.storage_error(write) == (
        f"{new}: permission denied; fix its permissions, or write elsewhere, then rerun"
    )


def test_every_config_file_refuses_an_unknown_variant():
    # The config files with no variant took any `:ARG` silently (`del arg`).
    from conftest import load_config

    from ann.config import ConfigError

    for path in sorted((ROOT / "configs").glob("*.py")):
        with pytest.raises(ConfigError, match=f"{path.name} has no variant 'nosuch'"):
            load_config(path.stem, "nosuch")


def _shipped_variants() -> list[tuple[str, str | None]]:
    """(config, variant) of every shipped config file and each variant it names
    (`ann.config.variant(__file__, arg, "NAME", ...)`), None the plain one."""
    found = []
    for path in sorted((ROOT / "configs").glob("*.py")):
        named = re.search(r"variant\(__file__, arg((?:, \"\w+\")*)\)", path.read_text())
        found += [(path.stem, None), *((path.stem, v) for v in re.findall(r"\w+", named[1]))]
    return found


@pytest.mark.parametrize("name, arg", _shipped_variants())
def test_every_shipped_config_and_variant_passes_its_own_lines_check(name, arg):
    # digits_finetune.py:scratch sets init_from_skip back to () after its fine-tune's
    # ('head/.*',): refused as an ignored setting the file's line states (trial 46c), where
    # a line setting a key back to its default is a change. With the experiment's task keys.
    from conftest import load_config

    from ann import experiment

    values = load_config(name, arg)
    config = f"{ROOT / 'configs' / name}.py" + (f":{arg}" if arg else "")
    unchanged = config_file.set_in_file(config, values)
    experiment.check_config(values, num_devices=1, unchanged=unchanged)


def test_a_file_line_setting_an_ignored_key_to_what_it_held_is_refused_a_reset_is_not(tmp_path):
    # momentum = 0.9 (its default) with adam trained silently; the same line after a
    # `momentum = 0.5` is a reset to the default, which passes.
    stated = _mlp_config(tmp_path / "stated.py", "c.optimizer.momentum = 0.9")
    reset = _mlp_config(
        tmp_path / "reset.py", "c.optimizer.momentum = 0.5; c.optimizer.momentum = 0.9"
    )
    # Set in another variant's branch: this variant states nothing; a line that runs is judged
    # though another variant's comes after it (review 46).
    branch = _mlp_config(tmp_path / "branch.py", "if False:\n        c.optimizer.momentum = 0.9")
    both = _mlp_config(
        tmp_path / "both.py",
        "c.optimizer.momentum = 0.9\n    if False:\n        c.optimizer.momentum = 0.9",
    )
    # Another key of the same last name (a model's momentum) is not this key's line.
    other = _mlp_config(tmp_path / "other.py", "c.model.momentum = 0.9")
    cases = (
        (stated, {"optimizer.momentum"}), (reset, set()), (branch, set()),
        (both, {"optimizer.momentum"}), (other, set()),
    )  # fmt: skip
    for path, refused in cases:
        assert config_file.set_in_file(str(path), module_config(path)) == refused, path
    # An override of what decides it (the optimizer) leaves the file's line alone: no flag
    # could undo it (digits_resnet's momentum = 0.9 under --config.optimizer.name=adamw was
    # refused, told to drop a --config.optimizer.momentum never given; review 46).
    values = module_config(stated)
    values.optimizer.name = "adamw"  # as --config.optimizer.name=adamw sets it
    assert config_file.set_in_file(str(stated), values) == {"optimizer.momentum"}
    assert config_file.set_in_file(str(stated), values, {"optimizer.name"}) == set()


def module_config(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_a_variant_the_config_file_does_not_read_is_refused(tmp_path):
    # A get_config(arg=None) that never reads its arg trained (and swept) the plain config as
    # if no `:ARG` were given.
    path = tmp_path / "plain.py"
    path.write_text(
        "from ann import config\n\n\ndef get_config(arg=None):\n    return config.base()\n"
    )
    for job in ("train", "sweep"):
        line = one_line_error(ann(job, f"--config={path}:big", f"--workdir={tmp_path / 'w'}"))
        assert line == (
            f"error: --config={path}:big: plain.py has no variant 'big': its get_config() returns "
            "the same config with ':big' as without it (drop ':big', or offer it: "
            "ann.config.variant(__file__, arg, 'big'))"
        ), (job, line)
    assert not (tmp_path / "w").exists()
    # A get_config that reads its arg by hand (ml_collections' own examples do) is kept.
    by_hand = tmp_path / "by_hand.py"
    by_hand.write_text(
        "from ann import config\n\n\ndef get_config(arg=None):\n    c = config.base()\n"
        "    c.batch_size = 64 if arg == 'big' else c.batch_size\n    return c\n"
    )
    parser = config_flags._ConfigFileParser(name="config")
    assert config_lib.load_variant(f"{by_hand}:big", parser.parse).batch_size == 64
    same = "returns the same config with ':small' as without it"  # a variant it does not read
    with pytest.raises(config_lib.ConfigError, match=same):
        config_lib.load_variant(f"{by_hand}:small", parser.parse)
    # One that reads it with a default (`arg or "cnn"`) is kept for the default's own name:
    # `:cnn` gives the plain config, and was refused as a variant it does not read.
    named = tmp_path / "named.py"
    named.write_text(
        "from ann import config\n\n\ndef get_config(arg=None):\n    c = config.base()\n"
        "    c.model.name = arg or 'cnn'\n    return c\n"
    )
    assert config_lib.load_variant(f"{named}:cnn", parser.parse).model.name == "cnn"


def test_an_empty_variant_is_refused(tmp_path):
    # `--config=FILE:` ran get_config("") as the plain config, and config.json recorded "FILE:".
    path = tmp_path / "plain.py"
    path.write_text(
        "from ann import config\n\n\ndef get_config(arg=None):\n    return config.base()\n"
    )
    for job in ("train", "sweep", "transfer"):
        line = one_line_error(ann(job, f"--config={path}:", f"--workdir={tmp_path / 'w'}"))
        assert line == (
            f"error: --config='{path}:': the variant after ':' is empty; drop the ':' or give one "
            f"({path}:ARG)"
        ), (job, line)
    assert not (tmp_path / "w").exists()


def _job(tmp_path, body: str) -> pathlib.Path:
    """A job script run through cli.run, as every entry point is."""
    script = tmp_path / "job.py"
    script.write_text(
        "from absl import logging\nfrom ann import cli\n\n"
        + textwrap.dedent(body)
        + "\n\nif __name__ == '__main__':\n    cli.run(main)\n"
    )
    return script


@pytest.mark.parametrize("args", [["--help"], ["registry", "--help"]])
def test_help_into_a_closed_pipe_is_quiet(args):
    # `ann --help | head -3` printed a BrokenPipeError traceback.
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        result = ann(*args, stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_reader_that_goes_away_ends_a_job_quietly(tmp_path):
    # `ann registry show ... | head` printed a BrokenPipeError traceback.
    script = _job(tmp_path, "def main(argv):\n    for i in range(100_000):\n        print(i)")
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline() == "0\n"
    proc.stdout.close()  # what `head -1` does: 100,000 lines do not fit in the pipe
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == ""


def test_libraries_info_logging_is_dropped_in_every_job(tmp_path):
    # generate printed ~37 lines of Orbax INFO on its normal path; export silenced them itself.
    library = tmp_path / "chatty"
    library.mkdir()
    (library / "__init__.py").write_text(
        "from absl import logging\n\ndef work():\n    logging.info('library detail')\n"
        "    logging.warning('library warning')\n"
    )
    script = _job(
        tmp_path,
        """
        import os
        import chatty
        import ann

        # A line logged from a file of ann (what a record's pathname says).
        OWN = compile(
            "logging.info(\\"ann's own line\\")\\n"
            "logging.warning(\\"ann's own %s\\", \\"warning\\")",
            ann.__path__[0] + "/x.py",
            "exec",
        )

        def main(argv):
            chatty.work()
            logging.info("the job's own line")
            exec(OWN)
        """,
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "library detail" not in result.stderr
    for kept in ("library warning", "the job's own line", "ann's own line"):
        assert kept in result.stderr, result.stderr
    # ann's own warnings are `warning:` lines, as cli.warn's (a user read `W1202 21:22:57.165131
    # 139850074315648 resume.py:122] the run's length changed ...`); a library's keeps absl's
    # prefix, which names where it came from.
    lines = result.stderr.splitlines()
    assert "warning: ann's own warning" in lines, result.stderr
    assert re.search(
        r"^W\d{4} [\d:.]+ +\d+ __init__.py:\d+\] library warning$", result.stderr, re.M
    )


def test_each_process_of_a_multi_process_run_names_itself_in_its_lines(capsys):
    # Every process writes its own warnings and errors, often to one merged log: whose was it?
    import logging

    record = logging.LogRecord(
        "absl", logging.WARNING, cli.__file__, 1, "the run's length changed", None, None
    )
    formatter = cli._ConsoleFormatter(cli._LibraryInfoFilter())
    cli.name_process(1, 2)
    try:
        cli.warn("careful")
        assert formatter.format(record) == "warning: process 1 of 2: the run's length changed"
        with pytest.raises(SystemExit):
            cli.fail("a mistake")
    finally:
        cli.name_process(0, 1)  # one process: no name
    cli.warn("alone")
    assert capsys.readouterr().err.splitlines() == [
        "warning: process 1 of 2: careful",
        "error: process 1 of 2: a mistake",
        "warning: alone",
    ]


def test_no_job_catches_what_the_shared_wrapper_handles():
    # export, generate and transfer each caught ConfigError (or ValueError) and printed it
    # themselves, and each set absl's verbosity: cli.run does both, once.
    for path in (ROOT / "ann").rglob("*.py"):
        if path.name == "cli.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = ast.unparse(node.type)
                body = ast.unparse(node)
                assert not ("ConfigError" in caught and "sys.exit" in body), (path, body)
                assert not (caught == "ValueError" and 'print(f"error:' in body), (path, body)
        assert "logging.set_verbosity(logging.WARNING)  # Orbax" not in path.read_text(), path


def test_only_train_and_serve_log_in_absls_format():
    # As the README says: `ann sweep --dry_run` on a fresh data directory printed `I1205
    # 03:40:32.987024 139857001384832 sources.py:203] building data set digits ...`.
    for job, (module, _) in JOBS.items():
        spec = importlib.util.find_spec(module)
        path = spec.origin if not spec.submodule_search_locations else None
        path = path or os.path.join(spec.submodule_search_locations[0], "__main__.py")
        runs = [
            node
            for node in ast.walk(ast.parse(pathlib.Path(path).read_text()))
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "cli.run"
        ]
        assert len(runs) == 1, (job, path)
        quiet = {k.arg: ast.unparse(k.value) for k in runs[0].keywords}.get("quiet", "False")
        assert quiet == str(job not in ("train", "serve")), (job, path)


@pytest.mark.parametrize("job", ["export", "report"])
def test_an_out_that_cannot_be_created_is_refused_before_any_work(tmp_path, job):
    # It was a traceback (FileExistsError) after the whole report had been computed.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")  # only the flag checks run
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    line = one_line_error(ann(job, f"--workdir={tmp_path / 'run'}", f"--out={out}"))
    blocked = tmp_path / "file"
    assert line == (
        f"error: --out={out} cannot be created: {blocked} is a file, so nothing can be below "
        "it; choose another --out"
    )
    # A file system that refuses what permission bits allow (here /proc, for root too) is found
    # before any work too: it was "[Errno 2] ... '/proc/.export-7dknqkvw'" after restoring.
    line = one_line_error(ann(job, f"--workdir={tmp_path / 'run'}", "--out=/proc/nope"))
    assert line.startswith("error: --out=/proc/nope cannot be created in /proc ("), line
    assert line.endswith("); choose another --out"), line
    assert set(os.listdir(tmp_path)) == {"run", "file"}  # the probe left nothing


def test_the_writability_probe_leaves_nothing_behind(tmp_path):
    from ann import atomic

    assert atomic.why_not_creatable(str(tmp_path / "a" / "b")) is None
    assert atomic.why_not_creatable(str(tmp_path)) is None
    assert os.listdir(tmp_path) == []
    # A dangling link: `ann train` failed with a traceback ending "FileExistsError".
    (tmp_path / "gone").symlink_to("/nonexistent/x")
    said = atomic.why_not_creatable(str(tmp_path / "gone"))
    assert said == "is a symbolic link to /nonexistent/x, which does not exist"


@pytest.mark.parametrize(
    "assignment, said",
    [
        ('c.batch_size = "128"', "'batch_size' must be an integer, got '128' (a str); "
         "e.g. c.batch_size = 128"),
        ("c.total_steps = 100.0", "'total_steps' must be an integer, got 100.0 (a float); "
         "e.g. c.total_steps = 100"),
        ('o = c.optimizer; o.learning_rate = "fast"', "'optimizer.learning_rate' must be a "
         "number, got 'fast' (a str); e.g. o.learning_rate = 0.001"),
        ('c.optimizer = "sgd"', "'optimizer' is a section, not a value; set its keys, e.g. "
         "c.optimizer.name = 'sgd'"),
        # One number for a tuple: the number in one (it was offered the key's value, ()).
        ("c.optimizer.step_boundaries = 500", "'optimizer.step_boundaries' must be a tuple, got "
         "500 (an int); e.g. c.optimizer.step_boundaries = (500,)"),
    ],
)  # fmt: skip
def test_a_config_file_value_of_another_type_is_refused_in_anns_words(tmp_path, assignment, said):
    # It was ml_collections' backwards wording: "line 4: TypeError: Could not override field
    # 'batch_size' (reference). 128 is of original type <class 'str'> and cannot be casted to
    # type <class 'int'>; fix the config file" (the dotted key not named at all).
    path = tmp_path / "typed.py"
    path.write_text(
        f"import ann.config\n\n\ndef get_config():\n    c = ann.config.base()\n"
        f"    {assignment}\n    return c\n"
    )
    line = one_line_error(ann("train", f"--config={path}", "--workdir=W"))
    assert line == f"error: --config={path} line 6: config key {said}", line


_TOP_KEYS = ", ".join(sorted(config_lib.SCHEMA))


def _mlp_config(path, line: str, after: str = ""):
    """`path`, a config file of ann's MLP on digits for 50 steps whose line 9 is `line`, then
    `after` (a get_sweep); the path."""
    path.write_text(
        "import ann.config\n\n\ndef get_config():\n    c = ann.config.base()\n"
        "    c.model.name = 'mlp'\n    c.data.name = 'digits'\n    c.total_steps = 50\n"
        f"    {line}\n    return c\n{after}"
    )
    return path


@pytest.mark.parametrize(
    "assignment, said",
    [
        ("c.optimizer.lerning_rate = 0.01", "config key 'optimizer.lerning_rate' is unknown (did "
         "you mean 'optimizer.learning_rate'?); fix the line: c.optimizer.learning_rate = 0.01"),
        ("o = c.optimizer; o.lerning_rate = 0.01", "config key 'optimizer.lerning_rate' is "
         "unknown (did you mean 'optimizer.learning_rate'?); fix the line: o.learning_rate = 0.01"),
        # A section misspelt, read before its key is set: an AttributeError, "fix the config
        # file" (trial 47a); worded as the rest, the line respelt.
        ("c.optimzer.learning_rate = 0.1", "config key 'optimzer' is unknown (did you mean "
         "'optimizer'?); fix the line: c.optimizer.learning_rate = 0.1"),
        ("c.mystuff = 3", f"config key 'mystuff' is unknown; top-level keys: {_TOP_KEYS}; drop "
         "the line (c.mystuff = 3), or set a key ann reads"),
        ("c.optimizer.learning_rate = None", "config key 'optimizer.learning_rate' must be float "
         "or int, got NoneType None; e.g. c.optimizer.learning_rate = 0.001"),
        # A model's argument, checked once the model is looked up.
        ("c.model.featurs = (64,)", "config key 'model.featurs' is not an argument of model "
         "'mlp' (did you mean 'model.features'?); fix the line: c.model.features = (64,)"),
    ],
)  # fmt: skip
def test_a_config_file_key_of_a_wrong_name_or_type_names_the_file_and_line(
    tmp_path, assignment, said
):
    # They were worded as typed on the command line, without the file ("config key
    # 'optimizer.lerning_rate' is unknown ...", "...; set --config.optimizer.learning_rate=<float
    # or int>"), where a wrong type in a file named it ("--config=FILE line 6: ...").
    path = _mlp_config(tmp_path / "keys.py", assignment)
    line = one_line_error(ann("train", f"--config={path}", f"--workdir={tmp_path / 'run'}"))
    assert line == f"error: --config={path} line 9: {said}", line
    assert not (tmp_path / "run").exists()
    # `ann transfer` worded a model key the file set as typed on the command line.
    if assignment.startswith("c.model"):
        line = one_line_error(ann("transfer", f"--config={path}"))
        assert line == f"error: --config={path} line 9: {said}", line


@pytest.mark.parametrize(
    "assignment, said",
    [
        ("c.optimizer.learning_rate = -1.0", "config key 'optimizer.learning_rate' must be > 0, "
         "got -1.0; e.g. c.optimizer.learning_rate = 0.001"),
        ("c.optimizer.name = 'adamW'", "config key 'optimizer.name' is 'adamW' (did you mean "
         "'adamw'?); choose one of sgd, adam, adamw; e.g. c.optimizer.name = 'adamw'"),
        ("c.optimizer.name = 'lion'", "config key 'optimizer.name' is 'lion'; choose one of sgd, "
         "adam, adamw"),
        ("c.data.eval_splits = ('test', 3)", "config key 'data.eval_splits' holds 3 (int); every "
         "element must be a string; e.g. c.data.eval_splits = ('test',)"),
        ("c.data.eval_splits = ('test', 'test')", "config key 'data.eval_splits' names 'test' "
         "twice; name each split once; e.g. c.data.eval_splits = ('test',)"),
        ("c.data.eval_splits = ()", "config key 'data.eval_splits' is empty; name at least one "
         "split"),
        ("c.init_from = 'None'", "config key 'init_from' is 'None', which a string key reads as "
         "text (a name or path 'None'); e.g. c.init_from = ''"),
        ("c.report.slices = 'label'", "config key 'report.slices' must be a tuple, got 'label' (a "
         "str); e.g. c.report.slices = ('label',)"),
        ("c.optimizer.momentum = 0.5", "config key 'optimizer.momentum'=0.5 has no effect with "
         "optimizer.name='adam' (read only by sgd); drop the line, or set optimizer.name to "
         "'sgd'"),
        ("c.model.name = 'mlpp'", "config key 'model.name': unknown model 'mlpp' (did you mean "
         "'mlp'?); use one of " + ", ".join(models.names())
         + " or package.module:ClassName; e.g. c.model.name = 'mlp'"),
        # A model's argument and an experiment's setting, checked once each is looked up.
        ("c.model.dropout = 1.5", "config key 'model.dropout' must be in [0, 1), got 1.5; e.g. "
         "c.model.dropout = 0.5"),
        ("c.task.temprature = 0.5", "config key 'task.temprature' is unknown to experiment "
         "'classification'; it reads none; drop the line (c.task.temprature = 0.5), or set a key "
         "ann reads"),
        # Refusals that weigh several keys together (session 46: worded as flags).
        ("c.num_epochs = 3", "set exactly one of config keys 'total_steps' and 'num_epochs' to "
         "a positive value (got total_steps=50, num_epochs=3); to train by epochs, set "
         "total_steps to 0 too; by steps, drop the line"),
        ("c.best_metric = 'val/acuracy'", "config key 'best_metric': 'val/acuracy' is not a "
         "validation metric of this run (did you mean 'val/accuracy'?); choose one of "
         "val/accuracy, val/auroc, val/f1, val/loss, val/precision, val/recall"),
        ("c.best_metric = 'val/loss'; c.best_mode = 'max'", "config key 'best_metric' is "
         "'val/loss', better lower, with best_mode='max': it would keep the worst value; e.g. "
         "c.best_mode = 'min'"),
        ("c.early_stopping.metric = 'eval/loss'", "config key 'early_stopping.metric' is "
         "'eval/loss', which is not a validation metric; choosing on 'eval/loss' would select on "
         "the reported split: use 'val/loss' with early_stopping.mode='min' (metrics of "
         "data.validation_split)"),
        ("c.data.eval_splits = ('validation', 'test')", "config key 'data.validation_split' is "
         "'validation', which is also in data.eval_splits: the split that chooses must be one "
         "of its own; e.g. c.data.eval_splits = ('test',)"),
        ("c.optimizer.schedule = 'step'", "config key 'optimizer.schedule'='step' has no effect "
         "without optimizer.step_boundaries (no boundary: the learning rate stays constant); set "
         "optimizer.step_boundaries too (e.g. (25, 37): steps in (0, total_steps), at each of "
         "which the rate is multiplied by optimizer.step_factor), or schedule to 'constant'"),
        ("c.param_dtype = 'float16'", "config key 'param_dtype' is 'float16' with optimizer "
         "'adam': its second moments and eps (1e-8) underflow in float16 (measured: the state "
         "turns non-finite at step 2); keep parameters in float32 or bfloat16 (dtype float16 "
         "computes in float16 with float32 parameters); e.g. c.param_dtype = 'bfloat16'"),
        # Set to its default, which --config.optimizer.momentum=0.9 is refused for: it trained.
        ("c.optimizer.momentum = 0.9", "config key 'optimizer.momentum'=0.9 has no effect with "
         "optimizer.name='adam' (read only by sgd); drop the line, or set optimizer.name to "
         "'sgd'"),
        # Every ignored setting at once, each with its line.
        ("c.optimizer.momentum = 0.5; c.optimizer.nesterov = True", "config key "
         "'optimizer.momentum'=0.5 has no effect with optimizer.name='adam' (read only by sgd); "
         "drop the line, or set optimizer.name to 'sgd'; also line 9: config key "
         "'optimizer.nesterov'=True has no effect with optimizer.name='adam' (read only by sgd); "
         "drop the line, or set optimizer.name to 'sgd'"),
        # An experiment's own: a task key another makes unread.
        ("c.experiment = 'retrieval'; c.best_metric = 'val/map'; c.task.loss = 'infonce'; "
         "c.task.margin = 0.5", "config "
         "key 'task.margin'=0.5 has no effect with task.loss='infonce' (read only by triplet); "
         "drop the line, or set task.loss to 'triplet'"),
        # At its default too (it trained): the line says a margin is wanted.
        ("c.experiment = 'retrieval'; c.best_metric = 'val/map'; c.task.loss = 'infonce'; "
         "c.task.margin = 0.2", "config "
         "key 'task.margin'=0.2 has no effect with task.loss='infonce' (read only by triplet); "
         "drop the line, or set task.loss to 'triplet'"),
    ],
)  # fmt: skip
def test_a_config_file_value_refused_names_the_file_and_line(tmp_path, assignment, said):
    # Out-of-range values, choices, elements and task keys a config file set were worded as
    # typed on the command line, without the file ("config key 'optimizer.learning_rate' must be
    # > 0, got -1.0; e.g. --config.optimizer.learning_rate=0.001"), as names and types were.
    path = _mlp_config(tmp_path / "values.py", assignment)
    line = one_line_error(ann("train", f"--config={path}", f"--workdir={tmp_path / 'run'}"))
    assert line == f"error: --config={path} line 9: {said}", line
    assert not (tmp_path / "run").exists()


def test_ignored_settings_of_the_file_and_of_an_override_are_each_said_their_way(tmp_path):
    # The override's with its flag, the file's with its file and line (named, though second).
    path = _mlp_config(tmp_path / "values.py", "c.optimizer.nesterov = True")
    run = f"--workdir={tmp_path / 'run'}"
    line = one_line_error(ann("train", f"--config={path}", run, "--config.optimizer.momentum=0.5"))
    assert line == (
        "error: config key 'optimizer.momentum'=0.5 has no effect with optimizer.name='adam' "
        "(read only by sgd); drop --config.optimizer.momentum or set "
        f"--config.optimizer.name=sgd; also --config={path} line 9: config key "
        "'optimizer.nesterov'=True has no effect with optimizer.name='adam' (read only by sgd); "
        "drop the line, or set optimizer.name to 'sgd'"
    ), line


def test_an_ignored_settings_fix_is_the_flags_or_the_files_as_each_set_it(tmp_path):
    # A flag's value: "set --config.task.margin=0.2 (its default)" was refused next, as a flag
    # at the default that changes nothing is (trial 47d): it is dropped.
    run = f"--workdir={tmp_path / 'run'}"
    line = one_line_error(ann("train", "--config=configs/digits_retrieval.py", run,
                              "--config.task.margin=0.5"))  # fmt: skip
    assert line.endswith("; drop --config.task.margin or set --config.task.loss=triplet"), line
    # The file's value, made ignored by a flag: set back to its default by a flag (a change of
    # the file's, which passes), the file's line named.
    line = one_line_error(ann("train", "--config=configs/digits_resnet.py", run,
                              "--config.optimizer.name=adam"))  # fmt: skip
    assert line == (
        "error: config key 'optimizer.nesterov'=True has no effect with optimizer.name='adam' "
        "(read only by sgd); set --config.optimizer.nesterov=False (its default) or "
        "--config.optimizer.name=sgd; optimizer.nesterov comes from "
        "--config=configs/digits_resnet.py line 18 (c.optimizer.nesterov = True)"
    ), line


def test_a_data_set_made_for_another_experiment_names_the_config_files_line(tmp_path):
    # The refusal comes once the data set is read; it was worded as a flag, without the file.
    path = _mlp_config(tmp_path / "values.py", "c.data.name = 'diabetes'")
    proc = ann("train", f"--config={path}", f"--workdir={tmp_path / 'run'}")
    assert proc.stderr.splitlines()[-1] == (
        f"error: --config={path} line 9 (c.data.name = 'diabetes'): feature 'target' of "
        "'diabetes' is not a ClassLabel; data set 'diabetes' is made for experiment "
        "'regression', as in configs/diabetes_mlp.py; that config also sets "
        "best_metric='val/rmse', best_mode='min'; experiment comes from a module the file "
        "imports: set it in the file too (e.g. c.experiment = 'regression'; c.best_metric = "
        "'val/rmse'; c.best_mode = 'min'), or change that line"
    ), proc.stderr
    # (Each of those took a failed run after the experiment was fixed, trial 46a; the example
    # set the experiment alone, and the next run was refused for its best_metric, 46d.)
    # The same data set given on the command line: the flag that fixes it.
    proc = ann(
        "train", f"--config={path}", f"--workdir={tmp_path / 'run'}", "--config.data.name=diabetes"
    )
    assert proc.stderr.splitlines()[-1].endswith(
        "as in configs/diabetes_mlp.py; that config also sets best_metric='val/rmse', "
        "best_mode='min'; e.g. --config.experiment=regression --config.best_metric=val/rmse "
        "--config.best_mode=min"
    ), proc.stderr


def test_a_selection_metric_the_experiment_does_not_log_is_refused_with_the_files_line(tmp_path):
    # val/accuracy, digits_mlp's, in a regression run: refused only at the run's start, after
    # the data set was read, and with no word of the config file.
    lines = "c.data.name = 'diabetes'\n    c.experiment = 'regression'"
    path = _mlp_config(tmp_path / "values.py", lines)
    run = f"--workdir={tmp_path / 'run'}"
    metrics = "val/baseline_rmse, val/loss, val/mae, val/r2, val/rmse, val/rmse_ratio"
    line = one_line_error(ann("train", f"--config={path}", run))
    assert line == (
        f"error: --config={path}: config key 'best_metric': 'val/accuracy' is not a validation "
        f"metric of this run; choose one of {metrics}; the file does not set best_metric (a "
        "module it imports or the default does): set it in the file"
    ), line
    # The file's own line, named where it sets one.
    lines += "\n    c.early_stopping.metric = 'val/top5'\n    c.best_metric = 'val/rmse'"
    path = _mlp_config(tmp_path / "own.py", lines + "\n    c.best_mode = 'min'")
    line = one_line_error(ann("train", f"--config={path}", run))
    assert line == (
        f"error: --config={path} line 11: config key 'early_stopping.metric': 'val/top5' is not "
        f"a validation metric of this run; choose one of {metrics}"
    ), line
    assert not (tmp_path / "run").exists()


def test_a_config_file_value_refused_for_a_bound_an_override_set_keeps_the_flags_words(tmp_path):
    # The file's warmup_steps=10 against --config.total_steps=5: the command line made it
    # wrong, and the fix is the flag's (it was told to edit the file's line); the file's line
    # it was weighed against is named too (it was not: where did 10 come from?).
    path = _mlp_config(tmp_path / "values.py", "c.optimizer.warmup_steps = 10")
    run = f"--workdir={tmp_path / 'run'}"
    line = one_line_error(ann("train", f"--config={path}", run, "--config.total_steps=5"))
    assert line == (
        "error: config key 'optimizer.warmup_steps' must be in [0, 5) (total_steps=5; lower this "
        "or raise total_steps), got 10; e.g. --config.optimizer.warmup_steps=0; "
        f"optimizer.warmup_steps comes from --config={path} line 9 (c.optimizer.warmup_steps = 10)"
    ), line
    # The file's epochs beside the command line's steps: told to "add --config.total_steps=0",
    # a flag it had given as 40.
    epochs = _mlp_config(tmp_path / "epochs.py", "c.total_steps = 0; c.num_epochs = 3")
    line = one_line_error(ann("train", f"--config={epochs}", run, "--config.total_steps=40"))
    assert line == (
        "error: set exactly one of config keys 'total_steps' and 'num_epochs' to a positive "
        "value (got total_steps=40, num_epochs=3); to train by epochs, set "
        "--config.total_steps=0 (or by steps, --config.num_epochs=0); num_epochs comes from "
        f"--config={epochs} line 9 (c.num_epochs = 3)"
    ), line
    # num_epochs, set so, comes to total_steps once the data set is read (its line is last).
    proc = ann(
        "train", f"--config={path}", run, "--config.total_steps=0", "--config.num_epochs=0.01"
    )
    line = proc.stderr.splitlines()[-1]
    assert line.startswith("error: config key 'optimizer.warmup_steps' must be in [0, 1) "), line


def _on_digits_cnn(path, line: str):
    """`path`, a config file of digits_cnn's config whose line 5 then runs `line`; the path."""
    path.write_text(
        "from configs import digits_cnn\n\n\ndef get_config():\n"
        f"    c = digits_cnn.get_config(); {line}\n    return c\n"
    )
    return path


def test_a_value_from_an_imported_config_made_wrong_by_the_files_line_names_that_line(tmp_path):
    # The imported digits_cnn's warmup_steps=50 against the file's c.total_steps = 20: it said
    # "fix the config file (or a module it imports)", with no line, though line 5 made it wrong.
    path = _on_digits_cnn(tmp_path / "short.py", "c.total_steps = 20")
    line = one_line_error(ann("train", f"--config={path}", f"--workdir={tmp_path / 'run'}"))
    assert line == (
        f"error: --config={path} line 5 (c.total_steps = 20): config key "
        "'optimizer.warmup_steps' must be in [0, 20) (total_steps=20; lower this or raise "
        "total_steps), got 50; optimizer.warmup_steps comes from a module the file imports: set "
        "it in the file too (e.g. c.optimizer.warmup_steps = 0), or change that line"
    ), line


def test_another_models_arguments_from_an_imported_config_are_named_at_once(tmp_path):
    # digits_cnn's model.dense, model.dropout and model.features under the file's resnet: one
    # run each, "fix the config file (or a module it imports)", no line, no fix (trial 47a).
    path = _on_digits_cnn(tmp_path / "switch.py", "c.model.name = 'resnet'")
    line = one_line_error(ann("train", f"--config={path}", f"--workdir={tmp_path / 'run'}"))
    keys = "model.dense, model.dropout, model.features"
    assert line == (
        f"error: --config={path} line 5 (c.model.name = 'resnet'): config keys 'model.dense', "
        f"'model.dropout', 'model.features' are not arguments of model 'resnet'; {keys} come "
        "from a module the file imports: delete them after that line (del c.model.dense, "
        "c.model.dropout, c.model.features)"
    ), line
    # The same keys given on the command line, a flag's words.
    line = one_line_error(
        ann("train", "--config=configs/digits_mlp.py", f"--workdir={tmp_path / 'run'}",
            "--config.model.dense=3", "--config.model.zzzz=1")
    )  # fmt: skip
    assert line == (
        "error: config keys 'model.dense', 'model.zzzz' are not arguments of model 'mlp'; it "
        "accepts: features, dropout, norm, linear_skip (drop them from the config or the "
        "command line)"
    ), line


@pytest.mark.parametrize(
    "line, said",
    [
        ("c.optimizer.lerning_rate = 0.1", "config key 'optimizer.lerning_rate' is unknown (did "
         "you mean 'optimizer.learning_rate'?); fix the line: c.optimizer.learning_rate = 0.1"),
        # `ann train` refuses the line; the sweep's own check passed it, and every trial failed.
        ("c.optimizer.momentum = 0.9", "config key 'optimizer.momentum'=0.9 has no effect with "
         "optimizer.name='adam' (read only by sgd); drop the line, or set optimizer.name to "
         "'sgd'"),
    ],
)  # fmt: skip
def test_a_sweeps_config_file_refusal_names_the_file_and_line_as_train_does(tmp_path, line, said):
    path = _mlp_config(
        tmp_path / "keys.py", line, "\n\ndef get_sweep(h):\n    return h.sweep('seed', [0, 1])\n"
    )
    workdir = f"--workdir={tmp_path / 'sweep'}"
    error = one_line_error(ann("sweep", f"--config={path}", workdir, "--dry_run"))
    assert error == f"error: --config={path} line 9: {said}", error
    assert not (tmp_path / "sweep").exists()


def test_a_wrong_key_on_the_command_line_keeps_the_flags_words(tmp_path):
    path = _mlp_config(tmp_path / "keys.py", "c.mystuff = 3")
    workdir = f"--workdir={tmp_path / 'run'}"
    line = one_line_error(ann("train", f"--config={path}", workdir, "--config.mystuff=4"))
    assert line == f"error: config key 'mystuff' is unknown; top-level keys: {_TOP_KEYS}", line


@pytest.mark.parametrize("returned", ["{'model': {'name': 'cnn'}}", "None"])
def test_a_config_file_that_returns_no_configdict_is_one_line(tmp_path, returned):
    # (and one whose get_config raises what no flag parser expects: a RuntimeError traceback)
    (tmp_path / "raises.py").write_text("def get_config():\n    raise RuntimeError('boom')\n")
    line = one_line_error(ann("train", f"--config={tmp_path / 'raises.py'}", "--workdir=W"))
    assert line.endswith("raises.py line 2: RuntimeError: boom; fix the config file"), line
    # Building on a shipped config without the repository on PYTHONPATH: the fix is the path.
    # An error in a module the config imports was blamed on the config file's import line.
    (tmp_path / "broken_nets.py").write_text(
        "import ann\n\n\n@ann.models.register('w')\nclass W:\n    pass\n"
    )
    (tmp_path / "uses_it.py").write_text("import broken_nets\n")
    line = one_line_error(ann("train", "--config=uses_it.py", "--workdir=W", cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)}))  # fmt: skip
    assert line.endswith(
        f"uses_it.py line 1 (in {tmp_path / 'broken_nets.py'} line 4): AttributeError: module "
        "'ann' has no attribute 'models'; fix broken_nets.py"
    ), line
    (tmp_path / "builds_on.py").write_text("from configs import digits_cnn\n")
    line = one_line_error(ann("train", "--config=builds_on.py", "--workdir=W", cwd=tmp_path))
    assert line.endswith(
        "builds_on.py line 1: ModuleNotFoundError: No module named 'configs'; put ann's "
        f"repository root, which holds configs/, on PYTHONPATH: PYTHONPATH={ROOT}"
    ), line
    # Its path, to add to a PYTHONPATH that names the user's own modules: "PYTHONPATH=. from the
    # repository's root" lost those (trial 47a).
    env = {**os.environ, "PYTHONPATH": "."}
    line = one_line_error(
        ann("train", "--config=builds_on.py", "--workdir=W", cwd=tmp_path, env=env)
    )
    assert line.endswith(f"on PYTHONPATH: PYTHONPATH={ROOT}:$PYTHONPATH"), line
    # A variant given to a get_config() that takes none: ml_collections' traceback, flattened
    # into the one line (383 characters).
    line = one_line_error(ann("train", f"--config={tmp_path / 'raises.py'}:foo", "--workdir=W"))
    assert line == (
        # The file by its bare name, as the other variant errors name it (it named its path).
        f"error: --config={tmp_path / 'raises.py'}:foo: raises.py's get_config() "
        "takes no argument (get_config() takes 0 positional arguments but 1 was given); drop "
        "':foo', or give it one: def get_config(arg=None)"
    )
    # A dict was an AttributeError traceback ('dict' object has no attribute 'to_dict'); None
    # was "missing --config".
    (tmp_path / "mine.py").write_text(f"def get_config():\n    return {returned}\n")
    line = one_line_error(ann("train", f"--config={tmp_path / 'mine.py'}", "--workdir=W"))
    what = "a dict" if returned != "None" else "None"
    assert line == (
        f"error: --config={tmp_path / 'mine.py'}: get_config() returned {what}; return an "
        "ml_collections.ConfigDict (start from ann.config.base(), as configs/digits_cnn.py does)"
    )


def test_an_export_given_where_a_run_or_an_output_goes_is_named(tmp_path):
    # ann train trained into it (checkpoints beside manifest.json); report and export said
    # "holds no config.json"; observability render wrote into it.
    export = tmp_path / "exp"
    export.mkdir()
    (export / "manifest.json").write_text('{"source": {"workdir": "/runs/digits"}}')
    run = "give the run's directory (its run: --workdir=/runs/digits)"
    for args, message in [
        (["train", "--config=configs/digits_mlp.py", f"--workdir={export}"],
         f"--workdir={export} holds an export (manifest.json); choose another --workdir"),
        (["report", f"--workdir={export}"],
         f"--workdir={export} is an export, not a training run; {run}, or give the export as "
         f"--model={export}"),
        (["export", f"--workdir={export}", f"--out={tmp_path / 'out'}"],
         f"--workdir={export} is an export, not a training run; {run}"),
        (["observability", "render", f"--out={export}"],
         f"--out={export} holds an export (manifest.json); choose another --out"),
    ]:  # fmt: skip
        assert one_line_error(ann(*args)) == f"error: {message}", args
    assert sorted(os.listdir(tmp_path)) == ["exp"] and os.listdir(export) == ["manifest.json"]


def test_a_registry_a_report_or_a_directory_of_runs_given_as_the_run_is_named(tmp_path):
    # ann generate/export/report said only "holds no config.json" of a registry or a report.
    from ann import cli

    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "registry.db").write_text("")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text("{}")
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "config.json").write_text("{}")
    give = "give the directory of a trained run"
    for where, what in [
        ("registry", "is a model registry (registry.db), not a training run"),
        ("report", "is a report (report.json), not a training run"),
        ("runs", "holds runs (a)"),
    ]:
        with pytest.raises(cli.FlagError) as e:
            cli.check_trained_run(str(tmp_path / where), "best")
        assert str(e.value) == f"--workdir={tmp_path / where} {what}; {give}"
    # A mistyped run beside it: the one meant (it was "does not exist", nothing more: 47d).
    (tmp_path / "runs" / "pydoc_lm").mkdir()
    (tmp_path / "runs" / "pydoc_lm" / "config.json").write_text("{}")
    for typed, said in [("pydoc_llm", " (did you mean RUNS/pydoc_lm?)"), ("zz", "")]:
        with pytest.raises(cli.FlagError) as e:
            cli.check_trained_run(str(tmp_path / "runs" / typed), "best")
        said = said.replace("RUNS", str(tmp_path / "runs"))
        assert str(e.value) == f"--workdir={tmp_path / 'runs' / typed} does not exist{said}; {give}"


def test_a_run_given_to_report_as_model_is_pointed_at_workdir(tmp_path):
    # A trial: ann report --model=RUN said to export it first, but a report reads runs too.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    run = tmp_path / "run"
    assert one_line_error(ann("report", f"--model={run}")) == (
        f"error: --model={run} is a training run; give it as --workdir={run}"
    )


def test_train_and_sweep_write_only_into_their_own_kind_of_directory(tmp_path):
    # A second trial trained into a registry, a sweep, the parent of all runs, and swept into a
    # training run: each mixed two kinds of files in one directory.
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "registry.db").write_text("")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "config.json").write_text(RUN_CONFIG)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("")
    train = ["train", "--config=configs/digits_mlp.py"]
    for args, message in [
        ([*train, f"--workdir={tmp_path / 'registry'}"], "holds a model registry (registry.db)"),
        ([*train, f"--workdir={tmp_path / 'sweep'}"], "holds a sweep (sweep.json)"),
        ([*train, f"--workdir={tmp_path / 'runs'}"], "holds other runs (a)"),
        ([*train, f"--workdir={tmp_path / 'notes'}"], "holds files that are not a training "
         f"run's (todo.txt); give a new or empty directory, e.g. --workdir={tmp_path}/notes/NAME"),
        (["sweep", "--config=configs/digits_mlp.py", f"--workdir={tmp_path / 'runs' / 'a'}"],
         "holds a training run (config.json); choose another --workdir"),
        # Nor inside one (a third trial trained into a run's checkpoints/ and a registry's
        # artifacts/, as the message for a non-empty directory had suggested).
        ([*train, f"--workdir={tmp_path / 'runs' / 'a' / 'checkpoints'}"],
         f"is inside a training run at {tmp_path / 'runs' / 'a'}; choose a directory outside it"),
        ([*train, f"--workdir={tmp_path / 'registry' / 'artifacts' / 'x'}"],
         f"is inside a model registry at {tmp_path / 'registry'}"),
    ]:  # fmt: skip
        line = one_line_error(ann(*args))
        assert message in line, (args, line)
    assert sorted(os.listdir(tmp_path / "runs")) == ["a"] and os.listdir(tmp_path / "notes") == [
        "todo.txt"
    ]


# The keys that make a config.json ann's run and a manifest.json ann's export
# (ann.directory_kind), as ann writes them.
RUN_CONFIG = '{"experiment": "classification", "total_steps": 10}'
EXPORT_MANIFEST = '{"format": "ann.export/1", "files": {}}'


def test_another_tools_config_json_above_a_workdir_is_not_a_run(tmp_path):
    """A stray config.json (an editor's, another tool's) in a parent directory refused every
    `ann train` below it as "inside a training run" (a fresh-user trial's /tmp/config.json);
    one that cannot be parsed still counts, so a damaged real run stays closed to writes."""
    from ann import directory_kind

    (tmp_path / "config.json").write_text('{"theme": "dark"}')
    (tmp_path / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    assert directory_kind.inside(str(tmp_path / "runs" / "x")) is None
    (tmp_path / "config.json").write_text('{"experiment": "classif')  # damaged
    assert directory_kind.inside(str(tmp_path / "runs" / "x")) == ("run", str(tmp_path))
    (tmp_path / "config.json").write_text(RUN_CONFIG)
    assert directory_kind.inside(str(tmp_path / "runs" / "x")) == ("run", str(tmp_path))


def test_outputs_and_new_registries_stay_out_of_runs_exports_and_registries(tmp_path):
    # A fourth trial: `ann registry --registry=RUN register ...` put registry.db into a run,
    # which ann train then refused to resume; export and drift wrote into a run's checkpoints/
    # and into a registered version's directory.
    from ann.registry import Registry
    from ann.registry.core import RegistryError

    run, export, registry = tmp_path / "run", tmp_path / "export", tmp_path / "registry"
    for directory, marker, text in ((run, "config.json", RUN_CONFIG),
                                    (export, "manifest.json", EXPORT_MANIFEST),
                                    (registry, "registry.db", "")):  # fmt: skip
        directory.mkdir()
        (directory / marker).write_text(text)
    for out, where in [
        # The managed folder, not the run, is what is named (its report/ is fine), and a place
        # beside it to use instead: "inside a training run" read as if no --out there would do.
        (run / "checkpoints" / "x", f"inside {run / 'checkpoints'}, which the training run at "
         f"{run} manages (its checkpoints); choose a directory outside it, e.g. --out={run / 'x'}"),
        (run / "checkpoints_best", f"inside {run / 'checkpoints_best'}, which the training run "
         f"at {run} manages (its checkpoints); choose a directory outside it, e.g. "
         f"--out={run / 'out'}"),
        (export / "drift", f"inside an export at {export}; choose"),
        (
            registry / "artifacts" / "digits" / "1" / "drift",
            f"inside a model registry at {registry}; choose",
        ),
    ]:  # fmt: skip
        with pytest.raises(cli.FlagError, match=re.escape(f"--out={out} is {where}")):
            cli.check_out("out", str(out))
    cli.check_out("out", str(run / "report"))  # a run's own report/ is where report writes
    for root, place in [
        (run, "a training run"),
        (export, "an export"),
        (run / "registry", f"inside a training run at {run}"),
    ]:
        with pytest.raises(RegistryError, match=re.escape(f"--registry={root} is {place}; a new")):
            Registry.at(str(root))._check_root()  # as `ann registry register` opens it
    assert sorted(os.listdir(run)) == ["config.json"] and os.listdir(export) == ["manifest.json"]
    # A new registry in the directory of runs (or of exports) made every run under it "inside
    # a model registry": resumes, new runs and exports under it refused (a fifth trial).
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "config.json").write_text(RUN_CONFIG)
    (runs / "notes.txt").write_text("")
    with pytest.raises(RegistryError, match=re.escape(
        f"--registry={runs} holds other files (a, notes.txt); a new registry goes in a new or "
        "empty directory of its own (e.g. --registry=registry)"
    )):  # fmt: skip
        Registry.at(str(runs))._check_root()
    assert sorted(os.listdir(runs)) == ["a", "notes.txt"]
    (tmp_path / "empty").mkdir()
    Registry(str(tmp_path / "empty"))._check_root()  # an empty directory takes one


def test_ctrl_c_while_the_job_module_imports_ann_cli_is_one_line(monkeypatch, capsys):
    # A Ctrl-C in a job's first 0.2 s stopped `import ann.cli` halfway; the handler imported it
    # again and raised from the half-made module: 52 lines of traceback, exit 1 (a trial).
    import runpy
    import signal

    from ann import __main__ as entry

    def interrupted_import(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runpy, "run_module", interrupted_import)
    monkeypatch.setitem(sys.modules, "ann.cli", None)  # importing it now raises ImportError
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_:
            entry.main(["ann", "registry", "list"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exit_.value.code == 130 and capsys.readouterr().err == "interrupted (Ctrl-C)\n"


def test_a_tuple_key_takes_a_comma_or_a_repeated_flag_not_a_lone_number():
    import ml_collections

    # The config as parsed: each override below made features (3,) or (3, 4).
    config = ml_collections.ConfigDict(
        {"model": {"features": (3,)}, "data": {"eval_splits": ("test",)}, "total_steps": 3}
    )
    said = cli.number_for_a_tuple(["ann", "--config.model.features=3"], config)
    assert said is not None and said.startswith("--config.model.features=3 gives the tuple key")
    for given in (
        ["--config.model.features=3,"],
        ["--config.model.features=(3,)"],
        ["--config.model.features=3", "--config.model.features=4"],  # ml_collections' spelling
        ["--config.total_steps=3"],
        ["--config.data.eval_splits=test"],  # one split: a string names one thing
    ):
        assert cli.number_for_a_tuple(["ann", *given], config) is None, given


def test_a_lone_number_for_a_tuple_is_refused_in_absls_spelling_with_a_space_too():
    """`--config.model.features 3` (absl reads the next argument as the value) trained with
    (3,): only `--config.KEY=3` was read."""
    import ml_collections

    config = ml_collections.ConfigDict(
        {"model": {"features": (3,)}, "data": {"shuffle": True}, "total_steps": 3}
    )
    flag = "--config.model.features"
    spaced = [flag, "3"], ["--config.data.shuffle", flag, "3"], ["-config.model.features", "3"]
    for given in spaced:  # a boolean takes no value: the next argument is a flag of its own
        said = cli.number_for_a_tuple(["ann", *given], config)
        assert said is not None and said.startswith(f"{given[-2]} 3 gives the tuple key"), given
    for given in (
        [flag, "3", flag, "4"],  # a tuple, as with `=`
        [flag, "3", f"{flag}=4"],
        [flag, "3,"],
        ["--", flag, "3"],  # after `--`: not a flag
        [flag, "--", "3"],  # absl takes "--" as the value: not a number
        ["--config.total_steps", "3"],
    ):
        assert cli.number_for_a_tuple(["ann", *given], config) is None, given


def test_a_lone_number_for_a_tuple_is_answered_with_spellings_its_check_accepts():
    """`--config.model.features=3.5` was answered with '(3.5,)', itself refused ("must be a
    tuple of integers"); the message named '(3,)' and '(3, ...)' where the README promised
    `=3,` and the repeated flag too; in a sweep it gave the command line's spelling."""
    import ml_collections

    from ann import models

    config = ml_collections.ConfigDict({"model": {"name": "mlp", "features": (3.5,)}})
    said = cli.number_for_a_tuple(["ann", "--config.model.features=3.5"], config)
    example = models.argument_default("mlp", "features")[0]
    assert "'(3.5,)'" not in said and "give a tuple of integers: " in said
    assert f"--config.model.features='({example},)' (or ={example},) for one element" in said
    assert f"(--config.model.features={example} --config.model.features=N)" in said
    config.model.features = (3,)
    said = cli.number_for_a_tuple(["ann", "--config.model.features=3"], config)
    assert "--config.model.features='(3,)' (or =3,) for one element; for more, " in said
    assert "(--config.model.features=3 --config.model.features=N)" in said
    config.optimizer = {"step_boundaries": (2.5,)}
    said = cli.number_for_a_tuple(["ann", "--config.optimizer.step_boundaries=2.5"], config)
    assert "--config.optimizer.step_boundaries='(1000,)'" in said and "'(2.5,)'" not in said
    # Swept: spelt as get_sweep writes it.
    said = cli.number_for_a_tuple(["ann", "--config.model.features=3"], config, {"model.features"})
    assert said.startswith("model.features=3 gives the tuple key 'model.features' one number")
    assert "h.sweep('model.features', [(3,), (3, N), ...])" in said and "--config" not in said


def test_a_lone_number_for_a_pair_key_is_answered_with_a_pair():
    """`--config.profile_steps=20` was told to give '(20,)', which the key's check refused in
    turn ("use (first_step, num_steps)")."""
    import ml_collections

    config = ml_collections.ConfigDict({"profile_steps": (20,)})
    said = cli.number_for_a_tuple(["ann", "--config.profile_steps=20"], config)
    assert said == (
        "--config.profile_steps=20 gives the key 'profile_steps' one number; it takes "
        "(first_step, num_steps), e.g. --config.profile_steps='(20, 5)'"
    )
    said = cli.number_for_a_tuple(["ann", "--config.profile_steps=2.5"], config)
    assert said.endswith("--config.profile_steps='(10, 5)'"), said
    said = cli.number_for_a_tuple(["ann", "--config.profile_steps=20"], config, {"profile_steps"})
    assert said.endswith("h.sweep('profile_steps', [(20, 5), ...])"), said


def test_a_near_miss_split_is_named():
    line = one_line_error(ann("report", "--workdir=nowhere", "--split=val"))
    assert line.startswith("error: --split=val: unknown split 'val'; did you mean 'validation'?")


def test_the_last_line_of_a_run_reports_the_kept_checkpoint_not_the_last_eval():
    """A run keeps (and exports) its best checkpoint: the `done:` line gave the last eval's
    test accuracy (0.9917 at step 600) where the kept step-400 checkpoint scores 0.9889."""
    last = {"val/loss": 0.0629, "val/accuracy": 0.9861, "eval/accuracy": 0.9917}
    best = {"step": 400, "val/accuracy": 0.9861, "eval/accuracy": 0.9889, "eval/seconds": 1.0}
    assert cli.run_summary(600, last, best) == (
        "done: step 600 | best checkpoint: step 400 | val/accuracy 0.9861 | eval/accuracy 0.9889"
    )
    assert cli.run_summary(60, last, best, "early_stopped").startswith(
        "early stopped: step 60 | best checkpoint: step 400 | "
    )
    # No checkpoint chosen (no val/ metric to choose on): the last eval.
    assert cli.run_summary(600, last, {}) == (
        "done: step 600 | val/loss 0.0629 | val/accuracy 0.9861 | eval/accuracy 0.9917"
    )


def test_every_summary_line_lists_validation_metrics_first_in_logged_order():
    """The `done:` line, `ann export`'s line and `ann registry list` share this order, so the
    same run reads the same everywhere (export's had been alphabetical: eval/ before val/)."""
    logged = ["eval/loss", "val/loss", "eval/accuracy", "val/accuracy", "eval_test_seen/loss"]
    assert cli.metric_order(logged) == [
        "val/loss",
        "val/accuracy",
        "eval/loss",
        "eval/accuracy",
        "eval_test_seen/loss",
    ]


class _Stream:
    def __init__(self, tty: bool):
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_progress_is_shown_on_a_terminal_only(monkeypatch, tty):
    """`ann export` and `ann report` say what they do through their silent seconds, but a
    script reading their stderr through a pipe sees only warnings and the error line."""
    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    cli.progress("restoring the best checkpoint of runs/x")
    assert stream.text == ("restoring the best checkpoint of runs/x...\n" if tty else "")


def test_a_run_still_training_or_ended_early_is_noted_when_restored(tmp_path, capsys):
    # Exporting or reporting a run that is still training (its best checkpoint may change) or
    # was interrupted said nothing; only a checkpoint warning with the wrong cause.
    import socket

    from ann import cli
    from ann.train import run_status

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"status": "running", "step": 200, "total_steps": 3000, "pid": writer.pid}
        (run / run_status.FILENAME).write_text(json.dumps({**record, "host": socket.gethostname()}))
        cli.check_trained_run(str(run), "best")
        assert capsys.readouterr().err == (
            # Not "started at": the record moves with each save (it named step 1000 of a run
            # started at 0).
            f"note: {run} is still training (pid {writer.pid}; step 200 of 3000 when last "
            "recorded (its start or its last checkpoint begun)); its checkpoints so far are "
            "used\n"
        )
    finally:
        writer.kill()
        writer.wait()
    # Its writer is gone without recording an end (SIGKILL, out of memory): said, not silent.
    cli.check_trained_run(str(run), "best")
    assert capsys.readouterr().err == (
        f"note: {run} stopped without recording its end (step 200 of 3000 when last recorded "
        f"(its start or its last checkpoint begun); its process, pid {writer.pid}, is gone: "
        "killed, or out of memory?); its checkpoints so far are used\n"
    )
    # Another machine's record: it may be training there; nothing is claimed.
    (run / run_status.FILENAME).write_text(json.dumps({**record, "host": "another-host"}))
    cli.check_trained_run(str(run), "best")
    assert capsys.readouterr().err == ""
    run_status.write(str(run), "interrupted", 1151, total_steps=3000)
    cli.check_trained_run(str(run), "best")
    assert capsys.readouterr().err == (
        f"note: {run} ended interrupted at step 1151 of 3000; its checkpoints so far are used\n"
    )
    # A save that failed in the background ends the run steps later: the last complete
    # checkpoint is named (the note read as if step 80 were saved).
    run_status.write(str(run), "failed", 80, total_steps=3000, last_checkpoint=40)
    cli.check_trained_run(str(run), "best")
    assert capsys.readouterr().err == (
        f"note: {run} ended failed at step 80 of 3000 (its last complete checkpoint: step 40); "
        "its checkpoints so far are used\n"
    )
    run_status.write(str(run), "done", 3000, total_steps=3000)
    cli.check_trained_run(str(run), "best")
    assert capsys.readouterr().err == ""


def test_an_unprepared_tfds_set_is_one_line_without_tfds_warning(tmp_path):
    # An empty variant folder (a build that never ran) made TFDS warn "Variant folder ... has no
    # dataset_info.json" above ann's own line, which says what to do.
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
    line = one_line_error(
        ann("train", "--config=configs/digits_cnn.py", f"--workdir={tmp_path / 'run'}",
            "--config.data.name=mnist", f"--config.data.data_dir={tmp_path}")
    )  # fmt: skip
    assert line.startswith(f"error: data set 'mnist' is not prepared in {tmp_path}; prepare it")
    # A set of one's own, prepared in another directory, was just "unknown": the one searched is
    # named, with the fix.
    line = one_line_error(
        ann("train", "--config=configs/digits_cnn.py", f"--workdir={tmp_path / 'run'}",
            "--config.data.name=mysynth", f"--config.data.data_dir={tmp_path}")
    )  # fmt: skip
    assert "unknown data set 'mysynth': not one of ann's offline sets" in line, line
    assert line.endswith(
        f"or a set prepared in {tmp_path} (data.data_dir, else $TFDS_DATA_DIR, else "
        "~/tensorflow_datasets), which holds mnist; if it was prepared elsewhere, set "
        "--config.data.data_dir to that directory"  # given, it overrides TFDS_DATA_DIR
    ), line


def test_a_model_too_large_for_memory_is_one_line_naming_what_to_lower(tmp_path):
    # A dense layer of 10^8 units (381 GiB of weights) was a 58-line JaxRuntimeError traceback.
    result = ann(
        "train", "--config=configs/digits_cnn.py", f"--workdir={tmp_path / 'run'}",
        "--config.model.dense=100000000", "--config.total_steps=2",
        "--config.optimizer.warmup_steps=0",
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == (
        "error: the run does not fit in the device's memory (one allocation of 381.5 GiB); lower "
        "batch_size or the model's sizes (the workdir's parameters.tsv lists every parameter "
        "array), or split it over devices (config.mesh, config.sharding_rules)"
    )


def test_a_file_as_the_compilation_cache_is_one_line(tmp_path):
    # JAX warned once per executable ("Error reading persistent compilation cache entry") and
    # the run went on uncached. The tests' own cache (environment) would win: without it here.
    from conftest import without_compilation_cache

    done = ann("train", "--config=configs/digits_mlp.py", f"--workdir={tmp_path / 'run'}",
               "--config.total_steps=5", "--config.compilation_cache_dir=configs/digits_cnn.py",
               env=without_compilation_cache())  # fmt: skip
    assert one_line_error(done) == (
        "error: config key 'compilation_cache_dir'='configs/digits_cnn.py' is a file, not a "
        "directory; give a directory, or 'off'"
    )
    assert not (tmp_path / "run").exists()


def test_outputs_inside_a_report_or_into_one_are_refused(tmp_path):
    # A report is replaced whole on its next run: `ann report --out=RUN/report/sub` was
    # accepted, then deleted by the next `ann report`; `ann observability render --out=` a
    # drift report's directory was accepted, and the next drift report deleted its files.
    from ann.cli import FlagError, check_out

    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text('{"schema_version": 1, "splits": {}}')
    with pytest.raises(FlagError) as e:
        check_out("out", str(report / "sub"), report=True)
    assert str(e.value) == (
        f"--out={report / 'sub'} is inside the report at {report}, which its next run replaces "
        "whole; choose a directory outside it"
    )
    with pytest.raises(FlagError, match=r"holds a report \(report.json\); choose another --out"):
        check_out("out", str(report))
    check_out("out", str(report), report=True)  # a report's own command: its write decides


def test_a_request_log_inside_an_export_is_refused(tmp_path):
    # It was written into the export, whose files are fixed (its manifest lists them).
    from ann.serve.settings import Settings

    export = tmp_path / "export"
    export.mkdir()
    (export / "manifest.json").write_text('{"format": "ann-export", "files": {}}')
    with pytest.raises(ValueError) as e:
        Settings(request_log=str(export / "r.jsonl"))
    assert str(e.value) == (
        f"--request_log={export / 'r.jsonl'} is inside an export at {export}, whose files are "
        "fixed; give a path outside it"
    )
    Settings(request_log=str(tmp_path / "r.jsonl"))  # beside it: accepted
    # Inside a report, which its next run replaces whole (as every --out is refused there).
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is inside the report at .*, which its next run"):
        Settings(request_log=str(report / "r.jsonl"))


def test_bench_serve_refuses_to_time_a_server_that_answers_wrong():
    """bench_serve.py checks each served label against the export's own before it times a
    server: a fast wrong answer must not become a throughput number."""
    code = textwrap.dedent("""
        import http.server, json, sys, threading
        import numpy as np
        sys.argv = ["bench_serve.py"]
        sys.path.insert(0, "scripts")
        import bench_serve

        class Wrong(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                body = json.dumps({"outputs": [{"name": "label", "data": [7]}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Wrong)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        images = np.zeros((3, 8, 8, 1), np.uint8)
        port = server.server_address[1]
        print(bench_serve.check_answers(port, "/infer", images, [7, 7, 7]))
        try:
            bench_serve.check_answers(port, "/infer", images, [7, 3, 7])
        except RuntimeError as e:
            print("refused:", e)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "answers checked: 3 test rows" in proc.stdout, proc.stdout
    assert "refused: test row 1: the server answered label [7], the export computes 3" in (
        proc.stdout
    ), proc.stdout


def test_the_flags_of_a_command_line_are_read_as_absl_reads_them():
    """One reader of argv's flags (`ann.arguments.flags_in`) for every check that reads what
    was typed: `--NAME=V`, `-NAME=V`, `--NAME V` (the next argument, `--` too), a boolean
    alone, nothing after `--`."""
    from ann.arguments import Flag, flags_in

    args = ["pos", "--a=1", "-b=x=y", "--c", "2", "--on", "--d", "--", "--e", "-", "--", "--f"]
    assert list(flags_in(args, boolean=lambda name: name == "on")) == [
        Flag("a", "1", "--a=1"),
        Flag("b", "x=y", "-b=x=y"),
        Flag("c", "2", "--c 2"),
        Flag("on", None, "--on"),
        Flag("d", "--", "--d --"),  # absl takes "--" as the value
        Flag("e", "-", "--e -"),  # then "--": what follows are arguments
    ]
    assert list(flags_in(["-", "--last"])) == [Flag("last", None, "--last")]  # none left
    # ann's readers know its booleans: a boolean config key takes no value, before the
    # config file is read too (the schema's type), so the --config after it is read as one.
    argv = ["ann", "--config.data.shuffle", "--config", "x.py", "--config.total_steps", "3"]
    assert cli._config_given(argv) == ["x.py"]


def test_a_process_is_named_from_flags_in_absls_spelling_with_a_space_too():
    """`--process_id 1 --num_processes 2` (absl's other spelling) left the process unnamed:
    only `--process_id=1` was read."""
    try:
        for argv in (
            ["ann", "--process_id", "1", "--num_processes", "2"],
            ["ann", "-process_id=1", "--num_processes", "2"],
        ):
            cli.name_process(0, 1)
            cli._name_from_argv(argv)
            assert console.process_name() == "process 1 of 2: ", argv
        cli.name_process(0, 1)
        cli._name_from_argv(["ann", "--", "--process_id=1", "--num_processes=2"])  # arguments
        assert console.process_name() == ""
    finally:
        cli.name_process(0, 1)


def test_a_projects_own_experiments_package_is_named_where_it_hides_anns(tmp_path, monkeypatch):
    # A project's experiments/classification.py, first on sys.path (PYTHONPATH=., a notebook in
    # that directory), was run, then "has no 'Classification'; name a class it defines" pointed
    # at the user's own file (trial 48a).
    from ann import experiment as experiment_lib
    from ann.config import ConfigError

    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "classification.py").write_text("ran = True\n")
    for name in [m for m in sys.modules if m == "experiments" or m.startswith("experiments.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        experiment_lib.get("classification")
    assert str(e.value) == (
        "config key 'experiment': 'experiments.classification' would be imported from "
        f"{os.path.realpath(tmp_path / 'experiments')}, not ann's experiments "
        f"({os.path.realpath(ROOT / 'experiments')}): a directory named experiments in the "
        "working directory or on PYTHONPATH hides ann's shipped experiments; rename yours (e.g. "
        "my_experiments), or run from another directory"
    )
    assert "experiments.classification" not in sys.modules  # the user's module never ran


def test_a_directory_named_ann_on_sys_path_is_one_line_naming_the_cause(tmp_path):
    """`PYTHONPATH=.` (or `python -m`) in the directory above a clone named `ann` made its root the
    package `ann` (a namespace package) while an editable install found ann's modules: every
    job died in a traceback, "FileNotFoundError: ... '.../ann/data'"."""
    (tmp_path / "ann").mkdir()  # the clone's root: no __init__.py
    # As setuptools' editable install finds them: ann's modules apart from the package `ann`.
    code = textwrap.dedent(f"""
        import importlib.machinery, sys

        class Editable:
            @staticmethod
            def find_spec(name, path=None, target=None):
                if name.startswith("ann.") and name.count(".") == 1:
                    return importlib.machinery.PathFinder.find_spec(name, [{str(ROOT / "ann")!r}])

        sys.meta_path.insert(0, Editable)  # before the venv's own, if any
        from ann.__main__ import main
        main(sys.argv)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code, "train", f"--config={ROOT / 'configs' / 'digits_mlp.py'}",
         f"--workdir={tmp_path / 'run'}", "--config.total_steps=1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": ".", "TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert one_line_error(result) == (
        f"error: 'ann' was imported from {tmp_path / 'ann'}, a directory that is not ann's "
        f"package ({os.path.realpath(ROOT / 'ann')}); PYTHONPATH=. puts {tmp_path}, the "
        "directory above a clone, on sys.path: unset PYTHONPATH, or run from the clone's root"
    )
    assert not (tmp_path / "run").exists()
    # No PYTHONPATH: `python -m ann.main` (here `-c`) put the working directory first on
    # sys.path, and the line blamed "PYTHONPATH=. ...: unset PYTHONPATH", which was not set.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code, "train", f"--config={ROOT / 'configs' / 'digits_mlp.py'}",
         f"--workdir={tmp_path / 'run'}", "--config.total_steps=1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**env, "TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )  # fmt: skip
    assert one_line_error(result) == (
        f"error: 'ann' was imported from {tmp_path / 'ann'}, a directory that is not ann's "
        f"package ({os.path.realpath(ROOT / 'ann')}); `python -m` run from the directory above "
        "a clone does this (it puts the working directory first on sys.path): cd into the "
        "clone, or use the `ann` command"
    )
    assert not (tmp_path / "run").exists()
    # The Python API, from a script in that directory: TFDS's 51-line traceback once training
    # had started (`No such file or directory: '.../ann/data'`), a stray runs/.jax_cache.
    script = code.split("from ann.__main__")[0] + textwrap.dedent("""
        from ann import config as ann_config
        from ann.train.loop import train_and_evaluate

        train_and_evaluate(ann_config.base(), "run")
    """)
    (tmp_path / "mine.py").write_text(script)
    result = subprocess.run(
        [sys.executable, "mine.py"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**env, "TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )  # fmt: skip
    assert result.stderr.splitlines()[-1] == (
        f"ImportError: 'ann' was imported from {tmp_path / 'ann'}, a directory that is not "
        f"ann's package ({os.path.realpath(ROOT / 'ann')}); a script in {tmp_path}, the "
        "directory above a clone, does this (Python puts its directory first on sys.path): "
        "move the script out of that directory, e.g. into the clone"
    ), result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["ann", "mine.py"]


NOT_DECIMAL = ["0x50", "0o17", "08000", "8_000", "８０００", "0b1", " 80", "1e3"]


@pytest.mark.parametrize("typed", NOT_DECIMAL)
def test_an_integer_flag_takes_decimal_digits_only(typed):
    """absl reads an integer flag as a Python literal: `--port=0x50` bound port 80, and
    `0o17`, `08000`, `8_000` and full-width digits were taken too, while `0b1` was refused."""
    from absl import flags

    flag_values = flags.FlagValues()
    flags.DEFINE_integer("port", 8000, "Port.", 1, 65535, flag_values=flag_values)
    cli.decimal_numbers(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="invalid literal for int"):
        flag_values(["prog", f"--port={typed}"])
    flag_values(["prog", "--port=80"])
    assert flag_values.port == 80
    flag_values(["prog", "--port=+81"])  # a sign is decimal
    assert flag_values.port == 81
    # A step number given as text (--step of export, report, generate) alike: "３" was step 3.
    with pytest.raises(cli.FlagError, match="must be 'best', 'latest' or a step number"):
        cli.check_trained_run("/nonexistent", typed)


NOT_ASCII_NUMBER = ["1_0.5", "０.１", "٠.١", "1.5\u0663", " 0.5", "0x1p3", "1e"]


@pytest.mark.parametrize("typed", NOT_ASCII_NUMBER)
def test_a_float_flag_and_a_float_key_take_ascii_decimal_notation_only(typed):
    """absl reads a float flag, and ml_collections a float key's override, with float():
    `--learning_rate=1_0.5`, full-width (`０.１`) and Arabic-Indic digits were taken; now they
    are refused as `float()` refuses 'abc' (one line, naming the flag and what it takes), and
    an integer key of a dict flag (`--slo.*`, `--alert.*`) takes decimal digits only too."""
    import ml_collections
    from absl import flags
    from ml_collections import config_flags

    def parsed(*given: str) -> flags.FlagValues:
        argv = ["prog", *given]
        flag_values = flags.FlagValues()
        flags.DEFINE_float("rate", 0.5, "Rate.", flag_values=flag_values)
        settings = ml_collections.ConfigDict({"lr": 0.1, "steps": 3, "sizes": (32,)})
        config_flags.DEFINE_config_dict(
            "opt", settings, flag_values=flag_values, sys_argv=argv, lock_config=False,
            accept_new_attributes=True,
        )  # fmt: skip
        cli.decimal_numbers(flag_values)
        flag_values(argv)
        return flag_values

    for given in (f"--rate={typed}", f"--opt.lr={typed}"):
        with pytest.raises(flags.IllegalFlagValueError, match="could not convert string to float"):
            parsed(given)
    with pytest.raises(flags.IllegalFlagValueError, match="invalid literal for int"):
        parsed("--opt.steps=0x10")
    for ok, value in [("1e-3", 1e-3), (".5", 0.5), ("-2.5E+3", -2500.0), ("2", 2.0)]:
        flag_values = parsed(f"--rate={ok}", f"--opt.lr={ok}")
        assert flag_values.rate == value and flag_values.opt.lr == value
    flag_values = parsed("--rate=inf", "--opt.lr=nan")  # unbounded: float()'s words kept
    assert flag_values.rate == float("inf") and flag_values.opt.lr != flag_values.opt.lr
    # A Python literal (a tuple key, a key the config lacks: task.*): its numbers alike. A
    # tuple is refused as one that is no tuple; a new key is the text, which its check refuses.
    for tuple_value in ("(3_2,)", "(0x20, 64)"):
        with pytest.raises(flags.IllegalFlagValueError, match="Error while parsing string"):
            parsed(f"--opt.sizes={tuple_value}")
    assert parsed("--opt.sizes=(32, 64)").opt.sizes == (32, 64)
    assert parsed("--opt.smoothing=1_0.5").opt.smoothing == "1_0.5"  # it was 10.5
    assert parsed("--opt.smoothing=0.5").opt.smoothing == 0.5


def test_a_float_override_in_full_width_digits_is_refused_in_one_line(tmp_path):
    """`--config.optimizer.learning_rate=０.１` trained at 0.1."""
    config, typed = ROOT / "configs" / "digits_mlp.py", "--config.optimizer.learning_rate=０.１"
    command = [sys.executable, "-m", "ann", "train", f"--config={config}",
               f"--workdir={tmp_path / 'run'}", typed]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert one_line_error(result) == (
        f"error: {typed} must be a number (the key's type in the config); "
        "e.g. --config.optimizer.learning_rate=0.001"
    )
    assert not (tmp_path / "run").exists()


def test_a_port_in_another_base_is_refused_in_the_flags_style():
    command = [sys.executable, "-m", "ann", "serve", "--model=/nonexistent", "--port=0x50"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert one_line_error(result) == (
        "error: --port=0x50 must be an integer in [1, 65535]; e.g. --port=8000"
    )


def test_a_numeric_flag_is_refused_in_one_style_naming_its_range_and_an_example(monkeypatch):
    """Each command worded its numeric flags its own way: drift's `--min_rows=abc must be an
    integer >= 2` (no example), `--top=-1 must be a non-negative integer`, feedback's `--batch=0
    must be a positive integer`, observability's `must be a number; e.g.` beside `must be a share
    in (0, 1), e.g.`. Now a flag with absl's bounds and a dict flag's key are refused as ann
    serve's are: the range named, then an example (`cli.EXAMPLES` where the default is None)."""
    from absl import flags

    from ann.observability import rules

    flags.DEFINE_integer("test_drawn", 6, "Drawn.", 0, 1000)
    flags.DEFINE_integer("test_fewest", None, "Fewest.", 2, 1_000_000)
    flags.DEFINE_float("test_share", 0.5, "Share.", 0, 1)
    try:
        cases = [
            ("test_drawn=-1", "-1 is not a non-negative integer", "an integer in [0, 1000]", 6),
            (
                "test_drawn=x",
                "invalid literal for int() with base 10: 'x'",
                "an integer in [0, 1000]",
                6,
            ),
            ("test_share=2", "2.0 is not a number in the range [0, 1]", "a number in [0, 1]", 0.5),
            ("test_fewest=abc", "invalid literal for int()", "an integer in [2, 1000000]", 25),
        ]
        for typed, said, what, example in cases:
            name = typed.split("=")[0]
            if name == "test_fewest":
                monkeypatch.setitem(cli.EXAMPLES, name, 25)
            line = cli.bad_override(f"flag --{typed}: {said}", [])
            assert line == f"--{typed} must be {what}; e.g. --{name}={example}"
    finally:
        for name in ("test_drawn", "test_fewest", "test_share"):
            delattr(flags.FLAGS, name)
    availability = "a number in (0, 1) (the share of requests answered without a 5xx)"
    with pytest.raises(ValueError) as e:
        rules.Settings(availability=1.5).check()
    assert (
        str(e.value)
        == f"--slo.availability=1.5 must be {availability}; e.g. --slo.availability=0.999"
    )
    result = subprocess.run(
        [sys.executable, "-m", "ann", "observability", "render", "--out=/nonexistent/o",
         "--slo.availability=abc"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert one_line_error(result) == (
        f"error: --slo.availability=abc must be {availability}; e.g. --slo.availability=0.999"
    )


@pytest.mark.parametrize(
    "given, message",
    [
        # Accepted: it trained to done, as one process.
        (
            ["--num_processes=-3"],
            "--num_processes=-3 must be an integer in [0, 65536] (0: one process); e.g. "
            "--num_processes=0",
        ),
        # It said "must be an integer; e.g. --process_id=-1", no range.
        (
            ["--process_id=abc"],
            "--process_id=abc must be an integer in [-1, 65535] (this process's index from 0; "
            "-1: one process); e.g. --process_id=0",
        ),
        # It said "a multi-process run needs all of --coordinator_address=...", not the range.
        (
            ["--num_processes=2", "--process_id=5"],
            "--process_id=5 must be an integer in [0, 1] (this process's index among "
            "--num_processes=2); e.g. --process_id=0",
        ),
    ],
)
def test_ann_train_names_the_range_of_its_process_flags(tmp_path, given, message):
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "ann", "train", "--config=configs/digits_mlp.py"]
    result = subprocess.run(
        [*command, f"--workdir={workdir}", *given],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert one_line_error(result) == f"error: {message}"
    assert not workdir.exists()


@pytest.mark.parametrize(
    "job, said",
    [
        (["observability", "render", "--out="], "--out is empty; give a value (--out: "
         "directory to write the rules and the dashboard to)"),
        (["report", "--workdir="], "--workdir is empty; give a value (--workdir: a trained run "
         "to report on (holds config.json))"),
        # With the other of the two given, dropping it is the fix.
        (["report", "--model=exports/x", "--workdir="], "--workdir is empty; give a value or "
         "drop the flag"),
    ],
)  # fmt: skip
def test_a_flag_the_job_needs_given_empty_is_told_to_give_a_value(job, said):
    # "give a value or drop the flag": dropped, the job said `missing --out`.
    result = subprocess.run(
        [sys.executable, "-m", "ann", *job], capture_output=True, text=True, timeout=60
    )
    assert one_line_error(result).startswith(f"error: {said}"), result.stderr


@pytest.mark.parametrize(
    "job, said",
    [
        # A list of names: it said "--split='' must be distinct names among validation, test".
        (["report", "--workdir=x", "--split="], "--split is empty; give one or more of "
         "validation, test, or drop the flag"),
        (["export", "--workdir=x", "--out=y", "--platforms="], "--platforms is empty; give one "
         "or more of cpu, cuda, rocm, tpu, or drop the flag"),
        # A text flag with a default: it said "--step='' must be 'best', ...".
        (["export", "--workdir=x", "--out=y", "--step="], "--step is empty; give 'best', "
         "'latest' or a step number, or drop the flag"),
    ],
)  # fmt: skip
def test_a_flag_with_a_default_given_empty_says_it_is_empty(job, said):
    result = subprocess.run(
        [sys.executable, "-m", "ann", *job], capture_output=True, text=True, timeout=60
    )
    assert one_line_error(result) == f"error: {said}", result.stderr


def test_a_text_flag_given_empty_is_refused_not_taken_for_unset():
    """`ann report --out=` silently wrote the default WORKDIR/report while `--out=' '` was
    refused (`--out is empty`): an unset flag's default (None) and an empty value were one to
    `FLAGS.out or default`. Every text flag whose default is None is refused empty, before the
    job runs; one whose default is a text ("" included) keeps what "" means to it."""
    command = [sys.executable, "-m", "ann", "report", "--workdir=/nonexistent", "--out="]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert one_line_error(result) == (
        "error: --out is empty; give a value or drop the flag (--out: directory to write "
        "(default WORKDIR/report, ./report-NAME-V))"
    )
    from absl import flags

    flag_values = flags.FlagValues()
    flags.DEFINE_string(
        "out", None, "Directory to write (default WORKDIR/report).", flag_values=flag_values
    )
    flags.DEFINE_list("requests", None, "Request logs.", flag_values=flag_values)
    flags.DEFINE_multi_string(
        "model", None, "Export directory (repeatable).", flag_values=flag_values
    )
    flags.DEFINE_string(
        "prompt", "", "Text to continue; empty: a new line.", flag_values=flag_values
    )
    for given, name, said in [
        ("--out=", "out", "directory to write (default WORKDIR/report)"),
        ("--out= ", "out", "directory to write (default WORKDIR/report)"),
        ("--requests=", "requests", "request logs"),
        ("--model=", "model", "export directory (repeatable)"),
    ]:
        flag_values.unparse_flags()
        flag_values(["prog", "--model=x", given])
        assert cli.empty_flag(flag_values) == (
            f"--{name} is empty; give a value or drop the flag (--{name}: {said})"
        ), given
    # A required flag's: "drop the flag" led to `missing --workdir: ...`.
    required = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "A trained run.", flag_values=required)
    flags.mark_flag_as_required("workdir", flag_values=required)
    required(["prog", "--workdir="])
    said = "--workdir is empty; give a value (--workdir: a trained run)"
    assert cli.empty_flag(required) == said
    # An empty name in a list, whatever the flag's default (`ann report --split=test,` said
    # "unknown split ''; did you mean 'validation'?").
    flags.DEFINE_list("split", ["validation", "test"], "Splits.", flag_values=flag_values)
    for given, said in [
        ("--requests=a.jsonl,,b.jsonl", "`--requests=a.jsonl,,b.jsonl` has an empty name between"),
        ("--split=test,", "`--split=test,` has an empty name after a comma; drop it"),
        ("--split=,test", "`--split=,test` has an empty name before a comma; drop it"),
        ("--split=,", "`--split=,` names nothing; give names, or drop the flag"),
    ]:
        flag_values.unparse_flags()
        flag_values(["prog", given])
        assert cli.empty_flag(flag_values).startswith(said), given
    flag_values.unparse_flags()
    flag_values(["prog", "--prompt=", "--out=o", "--requests=a.jsonl", "--model=x"])
    assert cli.empty_flag(flag_values) is None


def test_a_directory_holding_runs_further_down_is_said_to_hold_them_there(tmp_path):
    """`ann report --out=/` said "holds other runs (tmp)" and `--out=CLONE` "holds other runs
    (runs)": a folder of runs named as if it were one. Each run is named by its path now."""
    from ann.report.write import check_out_flag

    for run in ("runs/a", "runs/b"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "config.json").write_text("{}")
    (tmp_path / "notes").mkdir()
    with pytest.raises(cli.FlagError) as e:
        check_out_flag(str(tmp_path))
    assert str(e.value) == (
        f"--out={tmp_path} holds other runs under it (runs/a, runs/b); choose another --out"
    )
    with pytest.raises(cli.FlagError) as e:
        check_out_flag(str(tmp_path / "runs"))
    assert (
        str(e.value) == f"--out={tmp_path / 'runs'} holds other runs (a, b); choose another --out"
    )
    with pytest.raises(cli.FlagError) as e:
        cli.check_trained_run(str(tmp_path), "best")
    assert str(e.value) == (
        f"--workdir={tmp_path} holds runs under it (runs/a, runs/b); give the directory of a "
        "trained run"
    )


def test_an_integer_config_override_takes_decimal_digits_only(monkeypatch):
    """`--config.total_steps=0x10` trained 16 steps: ml_collections parses an integer key's
    override with absl's integer parser, which reads Python literals."""
    from absl import flags

    config = f"--config={ROOT / 'configs' / 'digits_mlp.py'}"
    for typed in ("0x10", "1_000", "０", "16"):
        argv = ["prog", config, f"--config.total_steps={typed}"]
        monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides' names there
        flag_values = flags.FlagValues()
        cli.define_config("Config file.", flag_values=flag_values)
        # As `parse_flags` does before parsing (the test passed only after another test ran it).
        cli.decimal_numbers(flag_values)
        if typed == "16":
            flag_values(argv)
            assert flag_values.config.total_steps == 16
            continue
        with pytest.raises(flags.IllegalFlagValueError, match="invalid literal for int"):
            flag_values(argv)


def test_a_directory_given_for_a_file_is_not_offered_as_itself(tmp_path):
    # `--requests=/tmp/mon` (a directory beside other files) said "... is not a file; give the
    # server's request log; did you mean /tmp/mon?" (a fresh-user check).
    from ann.cli import near_files

    (tmp_path / "mon").mkdir()
    (tmp_path / "mo.txt").write_text("")
    assert near_files(str(tmp_path / "mon")) == "; it is a directory"
    (tmp_path / "mon" / "requests.jsonl").write_text("")
    assert near_files(str(tmp_path / "mon")) == (
        f"; it is a directory: did you mean {tmp_path / 'mon' / 'requests.jsonl'}?"
    )
    (tmp_path / "mon" / "other.jsonl").write_text("")  # two: neither is the one
    assert near_files(str(tmp_path / "mon"), ".jsonl") == "; it is a directory"
    # A near name is a file, never a directory.
    (tmp_path / "runs").mkdir()
    assert near_files(str(tmp_path / "run")) == ""
    assert near_files(str(tmp_path / "mo.tx")) == f"; did you mean {tmp_path / 'mo.txt'}?"
    # A typo is offered its file; a name that merely shares letters is not (a shared /tmp
    # offered conftest.py for config.py).
    (tmp_path / "conftest.py").write_text("")
    assert near_files(str(tmp_path / "config.py"), ".py") == ""
    (tmp_path / "config.py").write_text("")
    assert (
        near_files(str(tmp_path / "confg.py"), ".py") == f"; did you mean {tmp_path / 'config.py'}?"
    )


def test_a_default_directory_is_named_as_the_default_not_as_a_flag_given(tmp_path, monkeypatch):
    """`ann report --workdir=RUN` on a read-only RUN said "--out=RUN/report cannot be created",
    naming a flag the user never gave."""
    from ann import atomic

    out = str(tmp_path / "run" / "report")
    why = f"cannot be created in {tmp_path / 'run'} (Read-only file system)"
    monkeypatch.setattr(atomic, "why_not_creatable", lambda path: why)
    with pytest.raises(cli.FlagError) as e, cli.default_of("out", out, given=False):
        cli.check_out("out", out, report=True)
    assert str(e.value) == (
        f"{out} (the default --out: none was given) {why}; give --out=DIR elsewhere"
    )
    with pytest.raises(cli.FlagError) as e, cli.default_of("out", out, given=True):
        cli.check_out("out", out, report=True)
    assert str(e.value) == f"--out={out} {why}; choose another --out"


def test_a_tilde_of_no_user_in_a_path_is_refused_in_one_line(tmp_path, monkeypatch):
    # os.path.expanduser leaves `~nouser/x` as it is: `ann export --out='~nouser/x'` made a
    # directory named `~nouser` in the current one, without a word.
    import ml_collections

    from ann import cli, compilation_cache
    from ann.registry import core as registry_core

    said = "~no_such_user_ann: no user 'no_such_user_ann' on this machine to expand it to; give "
    with pytest.raises(cli.FlagError) as e:
        cli.home_expanded(["ann x", "--workdir", "~no_such_user_ann/r"])
    assert str(e.value) == f"--workdir=~no_such_user_ann/r: {said}the path in full"
    config = ml_collections.ConfigDict({"data": {"data_dir": "~no_such_user_ann"}})
    with pytest.raises(cli.FlagError, match=f"^config key 'data.data_dir': {said}"):
        cli.expand_config_paths(config)
    with pytest.raises(ValueError, match=f"^--compilation_cache_dir: {said}"):
        compilation_cache.directory("~no_such_user_ann/c", "--compilation_cache_dir", "")
    monkeypatch.setenv("ANN_REGISTRY", "~no_such_user_ann/reg")
    with pytest.raises(registry_core.RegistryError, match=r"^\$ANN_REGISTRY=~no_such_user_ann"):
        registry_core.Registry.at(None)
    # The real command: one line, exit 1, nothing made in the current directory.
    command = ["export", f"--workdir={tmp_path}", "--out=~no_such_user_ann/x"]
    result = subprocess.run(
        [sys.executable, "-m", "ann", *command], capture_output=True, text=True, cwd=tmp_path,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        1, f"error: --out=~no_such_user_ann/x: {said}the path in full\n"
    )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_a_leading_tilde_in_a_path_flag_or_config_key_is_the_home_directory(
    digits_export, tmp_path, monkeypatch
):
    # Bash does not expand `~` after `--out=`: `ann export --out=~/x` wrote a directory named
    # `~` in the current one (`--registry=~/r` too), while `ann serve --compilation_cache_dir`
    # expanded it. Every path flag and config key now reads `~` as the shell would.
    import ml_collections

    from ann import cli

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    argv = ["ann x", "--out=~/x", "--workdir", "~/r", "-registry=~", "--name=~/n", "--", "--out=~"]
    assert cli.home_expanded(argv) == [
        "ann x", f"--out={home}/x", "--workdir", f"{home}/r", f"-registry={home}", "--name=~/n",
        "--", "--out=~",
    ]  # fmt: skip
    config = ml_collections.ConfigDict(
        {"data": {"data_dir": "~/tfds"}, "init_from": "~/runs/a:best", "model": {"name": "~m"}}
    )
    cli.expand_config_paths(config)
    assert (config.data.data_dir, config.init_from) == (f"{home}/tfds", f"{home}/runs/a:best")
    assert config.model.name == "~m"
    # $ANN_REGISTRY as a Dockerfile's ENV sets it: no shell expands it either.
    from ann.registry import core as registry_core

    monkeypatch.setenv("ANN_REGISTRY", "~/reg")
    assert registry_core.default_root() == f"{home}/reg"
    # The real command, from another directory.
    workdir, _ = digits_export
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "ann", "export", f"--workdir={workdir}", "--out=~/exp"],
        capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (home / "exp" / "manifest.json").is_file() and list(cwd.iterdir()) == []


def test_a_flag_check_run_for_a_python_function_names_its_arguments():
    """One check for a command and its Python function (ann.export.export, write_report):
    the function's caller reads its argument, `out=DIR`, where the command's reads `--out=DIR`;
    a command quoted whole in backticks, another flag and the type stay as they are."""
    with pytest.raises(cli.FlagError) as e:  # noqa: PT012
        with cli.as_arguments({"out": "out", "split": "splits"}):
            raise cli.FlagError("--out=x: see `ann export --out=y`; --split=a,b; --outer, --out")
    assert str(e.value) == "out=x: see `ann export --out=y`; splits=a,b; --outer, out"
