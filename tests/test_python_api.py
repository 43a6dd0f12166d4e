"""The README's "From Python" block runs as written, and `import ann` stays cheap."""

import os
import subprocess
import sys

from conftest import ROOT, with_devices


def test_the_readmes_python_block_runs_as_written(tmp_path):
    # The README had no Python section: a notebook user found train, export, load, report,
    # registry and drift scattered over four places, and two of them not at all.
    from test_models import readme_file

    (tmp_path / "from_python.py").write_text(readme_file("from_python.py"))
    proc = subprocess.run(
        [sys.executable, "from_python.py"],
        cwd=tmp_path,  # a directory of the user's own, ann installed (here: on PYTHONPATH)
        env={**with_devices(1), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 5, proc.stdout
    step, interrupted, accuracy = lines[0].split()
    assert (step, interrupted) == ("200", "False") and float(accuracy) > 0.8, lines
    name, agreement = lines[1].split()
    assert name == "digits_mlp" and float(agreement) > 0.8, lines
    assert lines[2:4] == ["['test']", "models:/digits_mlp/1 [1]"]
    share, detected = lines[4].split()
    assert float(share) < 0.5 and detected == "False", lines  # clean rows: no drift
    for made in ("runs/digits_mlp/report/report.json", "exports/digits_mlp/manifest.json"):
        assert (tmp_path / made).is_file(), made


def test_import_ann_imports_no_jax_and_names_the_python_api():
    # `import ann` exported nothing and its one-line docstring pointed nowhere.
    code = "import sys, ann; print('jax' in sys.modules); print(ann.__doc__)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded, doc = proc.stdout.split("\n", 1)
    assert loaded == "False", proc.stdout
    for name in (
        "ann.train.loop.train_and_evaluate",
        "ann.export.export",
        "ann.artifact.load",
        "ann.report.write.write_report",
        "ann.registry.Registry",
        "ann.monitor.drift.Reference",
        "From Python",
    ):
        assert name in doc, name


def test_show_progress_prints_anns_lines_not_the_libraries(tmp_path):
    # train_and_evaluate said nothing from Python; absl at INFO wrote pages of Orbax's and TFDS's
    # lines around each step (trial 48a). cli.show_progress: ann's own lines only.
    code = (
        "from ann import cli\n"
        "from ann import config as ann_config\n"
        "from ann.train.loop import train_and_evaluate\n"
        "cli.show_progress()\n"
        "c = ann_config.base()\n"
        "c.model.name, c.data.name, c.batch_size = 'mlp', 'digits', 32\n"
        "c.total_steps, c.eval_every_steps, c.log_every_steps = 4, 4, 2\n"
        "train_and_evaluate(c, 'run')\n"
    )
    env = {**with_devices(1), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stderr.splitlines()
    assert any("hooks.py" in line and "] step 4/4 (100%)" in line for line in said), said
    assert any("] eval step 4 | val/loss " in line for line in said), said
    assert not [line for line in said if "orbax" in line.lower() or "dataset info" in line], said
