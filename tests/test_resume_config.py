"""A run's record describes what was trained: a rerun may not change what is trained."""

import json
import logging
import shutil

import pytest
from conftest import load_config, tiny

from ann import config as config_lib
from ann.config import ConfigError
from ann.train import build, resume, transfer
from ann.train.loop import train_and_evaluate
from ann.train.resume import CONFIG_CHANGES


def test_check_resume_refuses_what_changes_training_and_names_each_key():
    saved = tiny()
    changed = tiny(
        batch_size=64,
        seed=3,
        **{"optimizer.learning_rate": 0.01, "model.dropout": 0.5, "log_every_steps": 7},
    )
    with pytest.raises(ConfigError) as e:
        config_lib.check_resume(saved, changed, "WD", init_from=lambda: "WD")
    message = str(e.value)
    assert "\n" not in message
    for part in (
        "batch_size: 32 -> 64",
        "seed: 0 -> 3",
        "optimizer.learning_rate: 0.001 -> 0.01",
        "model.dropout:",
        "new --workdir",
        "init_from=WD",
    ):
        assert part in message, part
    assert "log_every_steps" not in message  # allowed: not among the refused
    # Where the run's weights would not load (init_from gives no spec), none is suggested.
    with pytest.raises(ConfigError) as e:
        config_lib.check_resume(saved, changed, "WD", init_from=lambda: None)
    assert "init_from=" not in str(e.value) and "init_from would load none" in str(e.value)

    # calibration is read by `ann export` only: export's note says to set it in config.json,
    # and a rerun from the config file must not be refused for it.
    allowed = tiny(total_steps=50, eval_every_steps=5, calibration="none",
                   **{"data.read_threads": 2})  # fmt: skip
    assert config_lib.check_resume(saved, allowed, "WD") == {
        "calibration": ("temperature", "none"),
        "data.read_threads": (0, 2),
        "eval_every_steps": (10, 5),
        "total_steps": (20, 50),
    }
    # A key the saved run lacks (added to a section since) counts as a change.
    extra = tiny(**{"model.norm": "batch"})
    with pytest.raises(ConfigError, match="model.norm: '<unset>' -> 'batch'|model.norm: "):
        config_lib.check_resume(saved, extra, "WD")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("resume_config") / "run"
    train_and_evaluate(
        tiny(total_steps=10, **{"optimizer.schedule": "warmup_cosine"}),
        str(workdir),
        config_flag=WRITERS,  # as `ann train --config=...` gives it (recorded, not checked)
    )
    return workdir


WRITERS = "configs/digits_mlp.py:writers"


def copy_run(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "run")


def test_a_rerun_with_another_batch_size_is_refused_and_the_record_kept(trained, tmp_path):
    workdir = copy_run(trained, tmp_path)
    before = (workdir / "config.json").read_text()
    config = tiny(total_steps=20, batch_size=64, **{"optimizer.schedule": "warmup_cosine"})
    with pytest.raises(ConfigError, match="batch_size: 32 -> 64") as e:
        train_and_evaluate(config, str(workdir))
    # The same model: its weights load, so a new run may start from them.
    assert f"add --config.init_from={workdir} to start from this run's weights" in str(e.value)
    assert (workdir / "config.json").read_text() == before
    assert not (workdir / CONFIG_CHANGES).exists()


def test_a_rerun_with_another_model_family_suggests_no_init_from(trained, tmp_path):
    # A CNN config in an MLP run's workdir: the message suggested --config.init_from=WORKDIR,
    # which init_from then refused (no array of the MLP matches the CNN by path and shape).
    workdir = copy_run(trained, tmp_path)
    config = tiny("digits_cnn", total_steps=20)
    with pytest.raises(ConfigError, match="model.name: 'mlp' -> 'cnn'") as e:
        train_and_evaluate(config, str(workdir))
    message = str(e.value)
    assert "init_from=" not in message, message
    # Another model family: a workdir given by mistake, not a run to start from; nothing is
    # said of its weights (a seq2seq run's decoder was offered to a causal LM by the rule).
    assert "use a new --workdir, or rerun with the values in" in message, message
    # The rule is init_from's own: the CNN refuses this source; the MLP (other sizes of the
    # hidden layers aside) takes it.
    cnn = build.build(config, build.make_experiment(config), for_training=False)
    assert resume.init_from_spec(str(workdir), cnn.abstract_state) is None
    with pytest.raises(ConfigError, match="no array of it matches this model"):
        transfer.load(str(workdir), cnn.abstract_state)
    wider = tiny(**{"model.features": (256, 128)})
    mlp = build.build(wider, build.make_experiment(wider), for_training=False)
    assert resume.init_from_spec(str(workdir), mlp.abstract_state) == str(workdir)


def test_harmless_changes_are_allowed_and_recorded(trained, tmp_path, caplog):
    workdir = copy_run(trained, tmp_path)
    before = (workdir / "config.json").read_text()
    config = tiny(total_steps=20, log_every_steps=2, **{"optimizer.schedule": "warmup_cosine"})
    with caplog.at_level(logging.INFO):
        result = train_and_evaluate(config, str(workdir))
    assert result.step == 20
    assert (workdir / "config.json").read_text() == before  # the record of the fresh start
    entries = [json.loads(line) for line in open(workdir / CONFIG_CHANGES)]
    assert entries == [
        {
            "step": 10,
            "time": entries[0]["time"],
            "changes": {"log_every_steps": [5, 2], "total_steps": [10, 20]},
        }
    ]
    # The cosine schedule is rebuilt over 20 steps: say so, with the rate before and after.
    from ann.train import optimizers

    old = float(optimizers.schedule(config_lib.read(str(workdir)).optimizer, 10)(10))
    new = float(optimizers.schedule(config.optimizer, 20)(10))
    assert old != new
    assert "schedule is rebuilt" in caplog.text
    assert f"was {old:.6g} and is now {new:.6g}" in caplog.text

    # The same rerun again (nothing left to train) records nothing new.
    train_and_evaluate(config, str(workdir))
    assert len(open(workdir / CONFIG_CHANGES).readlines()) == 1


def test_changes_are_reported_against_the_last_run_and_a_shorter_run_is_refused(
    trained, tmp_path, caplog
):
    workdir = copy_run(trained, tmp_path)

    def config(total_steps):
        return tiny(total_steps=total_steps, **{"optimizer.schedule": "warmup_cosine"})

    train_and_evaluate(config(20), str(workdir))
    with caplog.at_level(logging.INFO):
        assert train_and_evaluate(config(30), str(workdir)).step == 30
    # The last run had 20 steps (config.json still says 10, the fresh start's record).
    assert "total_steps: 20 -> 30" in caplog.text and "10 -> 30" not in caplog.text
    assert "length changed from 20 to 30 steps" in caplog.text
    entries = [json.loads(line) for line in open(workdir / CONFIG_CHANGES)]
    assert [e["changes"]["total_steps"] for e in entries] == [[10, 20], [10, 30]]

    # A run length below the step reached: refused before anything is written.
    kept = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        with pytest.raises(ConfigError, match="total_steps.*has reached step 30.*at least 30"):
            train_and_evaluate(config(10), str(workdir))
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == kept
    # Refused before the restore: its error is the one line (a "resumed from ... at step 30"
    # line came first).
    assert "resumed from" not in caplog.text


def test_a_run_shortened_below_its_step_is_told_so_before_a_key_the_length_puts_out_of_range(
    tmp_path,
):
    # A run at step 150 with a 50-step warmup, rerun with total_steps=50: the warmup's refusal
    # came first, and its fix (--config.optimizer.warmup_steps=0) was then refused as a change
    # to what is trained. The run-length refusal is the one to act on.
    import subprocess
    import sys

    from conftest import ROOT, one_line_error

    (tmp_path / "run" / "checkpoints" / "150").mkdir(parents=True)
    flags = [f"--workdir={tmp_path / 'run'}", "--config.optimizer.warmup_steps=50"]
    result = subprocess.run(
        [sys.executable, "-m", "ann.main", "--config=configs/digits_mlp.py", *flags,
         "--config.total_steps=50"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert one_line_error(result) == (
        f"error: config key 'total_steps': the run would be 50 steps long, but {tmp_path / 'run'} "
        "has reached step 150; set total_steps (or num_epochs) to at least 150, or use a new "
        "--workdir"
    )
    # Where the length is not the problem, the key's own refusal stands: also a length below 1
    # (-1 was told "the run would be -1 steps long", not its range; a fresh-user check).
    config = tiny(total_steps=200, **{"optimizer.warmup_steps": 50})
    config_lib.check_reached_length(config, str(tmp_path / "run"))
    config = tiny(total_steps=200, **{"optimizer.warmup_steps": 10})
    config.total_steps = -1
    config_lib.check_reached_length(config, str(tmp_path / "run"))
    config_lib.check_reached_length(config, str(tmp_path / "nowhere"))
    # A run of another model: that comes first (its length fix only led to it), without a
    # claim about its weights (which takes JAX to tell).
    config_lib.write(tiny("digit_seq2seq"), str(tmp_path / "run"))
    with pytest.raises(ConfigError) as e:
        config_lib.check_reached_length(tiny("pydoc_lm", total_steps=50), str(tmp_path / "run"))
    assert str(e.value).startswith(f"{tmp_path / 'run'} was trained with another config (")
    assert "experiment: 'seq2seq' -> 'language_modelling'" in str(e.value)
    assert str(e.value).endswith(
        f"use a new --workdir, or rerun with the values in {tmp_path / 'run'}/config.json"
    )


def test_a_run_by_epochs_cut_below_its_step_is_told_the_epochs_that_reach_it():
    """`--config.num_epochs=5` on a run at step 115 was told "set total_steps (or num_epochs)
    to at least 115", a step count for an epoch key: now the epochs too, the fewest tenths
    whose steps (ceil(epochs * rows / batch)) reach the step."""
    with pytest.raises(ConfigError) as e:
        config_lib.check_length(48, 115, "runs/x", num_epochs=5, num_train=1200, batch_size=128)
    assert str(e.value) == (
        "config key 'num_epochs': the run would be 48 steps long (num_epochs=5 of 1200 train "
        "examples in batches of 128), but runs/x has reached step 115; set num_epochs to at "
        "least 12.2 (or total_steps to at least 115 with num_epochs=0), or use a new --workdir"
    )
    assert config_lib.epochs_for(115, 1200, 128) == 12.2  # 12.1 makes 114 steps
    assert config_lib.epochs_for(100, 1280, 128) == 10  # exactly
    assert config_lib.epochs_for(1, 10**6, 1) == 0.1
    config_lib.check_length(115, 115, "runs/x", num_epochs=12.2, num_train=1200, batch_size=128)


def test_a_rerun_with_another_config_file_or_variant_names_the_one_the_run_was_made_with(
    trained, tmp_path
):
    # Resuming a run of `configs/digits_cnn.py:writers` with `configs/digits_cnn.py` listed the
    # differing values only: the run did not record which --config (file and :ARG) made it.
    import subprocess
    import sys

    from conftest import ROOT, one_line_error

    assert json.loads((trained / "config.json").read_text())["--config"] == WRITERS
    assert "--config" not in config_lib.read(str(trained))  # a record, not a config key
    workdir = copy_run(trained, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "ann.main", "--config=configs/digits_mlp.py",
         f"--workdir={workdir}", "--config.batch_size=64"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    line = one_line_error(result)
    assert line.startswith(
        f"error: {workdir} was trained with --config={WRITERS}, another config ("
    ), line
    assert f"rerun with --config={WRITERS} (and the values in {workdir}/config.json)" in line, line
    # The same --config (a changed override): the values alone, as for a run without the record.
    config = tiny(total_steps=20, batch_size=64, **{"optimizer.schedule": "warmup_cosine"})
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(workdir), config_flag=WRITERS)
    assert str(e.value).startswith(f"{workdir} was trained with another config (batch_size: 32"), (
        e.value
    )


def test_the_recorded_config_is_named_from_where_the_user_is(tmp_path, monkeypatch):
    # A run trained from ann/ with --config=configs/digits_cnn.py, refused from ann/'s parent,
    # said "rerun with --config=configs/digits_cnn.py": no such file from there.
    project = tmp_path / "ann"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "digits_cnn.py").write_text("")
    monkeypatch.chdir(project)
    config_lib.write(tiny(), "runs/cnn", "configs/digits_cnn.py:writers")
    assert "--config file" not in config_lib.read("runs/cnn")  # a record, not a config key
    assert config_lib.recorded_config_flag("runs/cnn") == "configs/digits_cnn.py:writers"
    monkeypatch.chdir(tmp_path)
    assert config_lib.recorded_config_flag("ann/runs/cnn") == "ann/configs/digits_cnn.py:writers"
    with pytest.raises(ConfigError) as e:
        config_lib.check_resume(
            tiny(batch_size=64), tiny(), "ann/runs/cnn", config_flag="ann/configs/digits_mlp.py"
        )
    message = str(e.value)
    assert "trained with --config=ann/configs/digits_cnn.py:writers, another" in message
    assert "rerun with --config=ann/configs/digits_cnn.py:writers (and the values" in message
    # The same file and variant, spelt from here: the values alone, no other config named.
    with pytest.raises(ConfigError, match="^ann/runs/cnn was trained with another config"):
        config_lib.check_resume(
            tiny(batch_size=64),
            tiny(),
            "ann/runs/cnn",
            config_flag="ann/configs/digits_cnn.py:writers",
        )
    (tmp_path / "elsewhere").mkdir()  # outside: the absolute path
    monkeypatch.chdir(tmp_path / "elsewhere")
    recorded = config_lib.recorded_config_flag("../ann/runs/cnn")
    assert recorded == f"{project / 'configs' / 'digits_cnn.py'}:writers"
    # A record from before the absolute path was kept: the argument as given.
    record = json.loads((project / "runs/cnn/config.json").read_text())
    del record["--config file"]
    (project / "runs/cnn/config.json").write_text(json.dumps(record))
    assert config_lib.recorded_config_flag("../ann/runs/cnn") == "configs/digits_cnn.py:writers"


@pytest.mark.parametrize(
    "flag, error",
    [
        ("--config.optimizer.lerning_rate=0.1", "did you mean 'optimizer.learning_rate'?"),
        ("--config.model.dropout=1.5", "config key 'model.dropout'"),
        ("--config.total_step=900", "config key 'total_step' is unknown"),
    ],
)
def test_a_misspelt_key_or_bad_value_in_a_trained_workdir_gets_its_own_error(tmp_path, flag, error):
    # It was told "runs/x was trained with another config (total_step: '<unset>' -> 900)": the
    # comparison with the record ran before the key's own check, which a new workdir gets.
    import subprocess
    import sys

    from conftest import ROOT, one_line_error

    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "150").mkdir(parents=True)
    config_lib.write(load_config("digits_mlp"), str(workdir))
    for length in ([], ["--config.total_steps=50"]):  # even where the length is below 150
        result = subprocess.run(
            [sys.executable, "-m", "ann.main", "--config=configs/digits_mlp.py",
             f"--workdir={workdir}", flag, *length],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        line = one_line_error(result)
        assert error in line and "trained with another config" not in line, line


@pytest.mark.parametrize("key", ["best_metric", "early_stopping.metric"])
def test_a_misspelt_selection_metric_in_a_trained_workdir_is_named_with_the_known_ones(
    trained, tmp_path, key
):
    # It was told "trained with another config (best_metric: 'val/accuracy' -> 'val/los')":
    # the metric was checked against one validation batch after the comparison with the record.
    workdir = copy_run(trained, tmp_path)
    config = tiny(total_steps=10, **{"optimizer.schedule": "warmup_cosine", key: "val/los"})
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(workdir))
    # Now refused from the config alone (experiments.metric_names), with the name meant.
    assert str(e.value).startswith(
        f"config key '{key}': 'val/los' is not a validation metric of this run (did you mean "
        "'val/loss'?); choose one of val/accuracy, "
    ), e.value
    assert "val/loss" in str(e.value) and "trained with another config" not in str(e.value)
    assert not (workdir / CONFIG_CHANGES).exists()


@pytest.mark.parametrize("key", ["best_metric", "early_stopping.metric"])
def test_a_misspelt_selection_metric_before_the_first_eval_is_named_too(trained, tmp_path, key):
    # A run checkpointed before its first eval records no val/ names: a misspelt metric was
    # refused as "trained with another config (best_metric: 'val/accuracy' -> 'val/acuracy')".
    workdir = copy_run(trained, tmp_path)
    metrics = workdir / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    kept = [{k: v for k, v in r.items() if not k.startswith(("val/", "eval"))} for r in records]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
    # A name close to none the experiment logs is refused by the config check too
    # (test_metric_names), before the saved run is compared.
    overrides = {"optimizer.schedule": "warmup_cosine", key: "val/top5"}
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(tiny(total_steps=10, **overrides), str(workdir))
    assert str(e.value).startswith(
        f"config key '{key}': 'val/top5' is not a validation metric of this run; "
        "choose one of val/accuracy, "
    ), e.value
    assert not (workdir / CONFIG_CHANGES).exists()
    # A metric the run computes is a change of what selects: the comparison refuses it.
    overrides[key] = "val/loss"
    overrides[key.replace("metric", "mode")] = "min"
    with pytest.raises(ConfigError, match="trained with another config"):
        train_and_evaluate(tiny(total_steps=10, **overrides), str(workdir))
    # Without a way to compute the names (resume.compare's own callers), it says so.
    saved = config_lib.read(str(workdir))
    with pytest.raises(ConfigError) as e:
        resume.check_selection_metrics(tiny(**{key: "val/acuracy"}), str(workdir), saved)
    assert "has not evaluated yet: 'val/acuracy' cannot be checked" in str(e.value)
    assert f"resume with --config.{key}=" in str(e.value) and "\n" not in str(e.value)


def test_only_process_0_reports_and_records_the_changes(tmp_path, caplog, monkeypatch):
    """Several processes: the changes are said and written by process 0 alone. Each process
    read config_changes.jsonl, so one that read it after process 0 had appended the new line
    saw no change: the length warning came from both processes or from one, by timing."""
    import jax

    saved = tiny(total_steps=10, **{"optimizer.schedule": "warmup_cosine"})
    config = tiny(total_steps=20, **{"optimizer.schedule": "warmup_cosine"})
    for index, said in ((1, False), (0, True)):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            resume.record(config, saved, {"total_steps": (10, 20)}, str(tmp_path), 10, 1000)
        assert ("length changed from 10 to 20 steps" in caplog.text) is said, caplog.text
        assert (tmp_path / CONFIG_CHANGES).exists() is said
    # A change the resumed run does not read says so (a changed init_from looked loaded), and
    # is not recorded (it became the model's parent in export and the registry).
    caplog.clear()
    before = (tmp_path / CONFIG_CHANGES).read_text()
    moved = tiny(total_steps=20, init_from="runs/b", **{"optimizer.schedule": "warmup_cosine"})
    with caplog.at_level(logging.INFO):
        changes = {"init_from": ("", "runs/b"), "total_steps": (10, 20)}  # from config.json
        resume.record(moved, saved, changes, str(tmp_path), 10, 1000)
    assert "init_from is read at a fresh start only, so this change has no effect on a resume" in (
        caplog.text
    ), caplog.text
    assert "(the run started from its random initialization): init_from: '' -> 'runs/b'" in (
        caplog.text
    ), caplog.text
    assert (tmp_path / CONFIG_CHANGES).read_text() == before


def test_readers_of_a_run_get_the_config_its_last_rerun_recorded(trained, tmp_path):
    # A rerun's report.* and calibration changes go to config_changes.jsonl, not config.json:
    # ann report and ann export read config.json alone, and still sliced and calibrated as the
    # fresh start had said.
    workdir = copy_run(trained, tmp_path)
    config = tiny(total_steps=10, calibration="none", **{"optimizer.schedule": "warmup_cosine"})
    config.report.slices = ("label",)
    train_and_evaluate(config, str(workdir))
    assert config_lib.read(str(workdir)).calibration == "temperature"  # the record stays
    latest = config_lib.latest(str(workdir))
    assert (latest.calibration, tuple(latest.report.slices)) == ("none", ("label",))
    *_, restored = build.restore_model(str(workdir), "latest")  # what report and export use
    assert (restored.calibration, tuple(restored.report.slices)) == ("none", ("label",))


def test_a_fresh_start_in_a_workdir_without_checkpoints_keeps_nothing_of_the_earlier_attempt(
    trained, tmp_path, caplog
):
    # checkpoints/ of a finished run deleted, its best kept: the rerun started fresh, kept the
    # earlier attempt's config_changes.jsonl (whose last line export then read: `calibration:
    # none`, never asked for) and said only that it removed the best. An early-stopped
    # record made the fresh state read as finished ("nothing to train").
    workdir = copy_run(trained, tmp_path)
    shutil.rmtree(workdir / "checkpoints")
    (workdir / CONFIG_CHANGES).write_text(
        '{"step": 10, "time": "T", "changes": {"calibration": ["temperature", "none"]}}\n'
    )
    (workdir / transfer.REPORT).write_text('{"init_from": {"spec": "runs/elsewhere"}}\n')
    status = json.loads((workdir / "run_status.json").read_text())
    (workdir / "run_status.json").write_text(json.dumps({**status, "status": "early_stopped"}))
    with caplog.at_level(logging.INFO):
        result = train_and_evaluate(
            tiny(total_steps=10, **{"optimizer.schedule": "warmup_cosine"}), str(workdir)
        )
    assert result.step == 10 and result.stop_reason == ""  # trained: a fresh start
    assert not (workdir / CONFIG_CHANGES).exists() and not (workdir / transfer.REPORT).exists()
    assert config_lib.latest(str(workdir)).calibration == "temperature"
    assert json.loads((workdir / "run_status.json").read_text())["status"] == "done"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said[0] == (
        f"{workdir}/run_status.json says an earlier attempt ended early_stopped at step 10, "
        f"but {workdir}/checkpoints holds none of its checkpoints; there is no checkpoint to "
        "resume from: this run starts fresh (removed the earlier attempt's "
        "config_changes.jsonl, run_status.json, init_from.json)"
    ), said
    assert said[1].startswith("removed checkpoints_best step 10: an earlier attempt's"), said


def test_a_damaged_config_changes_file_is_named_and_a_torn_last_line_skipped(
    trained, tmp_path, capsys
):
    # A damaged config_changes.jsonl was read as no change recorded, with no word: a rerun had
    # turned calibration off, and export calibrated by config.json alone. It is read by
    # metrics.jsonl's rule: a torn last line (a rerun stopped while appending it) is skipped
    # with a warning, a damaged line before it is an error naming the file and the line.
    workdir = copy_run(trained, tmp_path)
    changes = workdir / CONFIG_CHANGES
    good = '{"step": 10, "time": "T", "changes": {"calibration": ["temperature", "none"]}}\n'
    torn = '{"step": 10, "changes": {"total_st'
    changes.write_text(good + torn)
    assert config_lib.latest(str(workdir)).calibration == "none"
    assert f"{changes}: skipping line 2, torn by a crash mid-write" in capsys.readouterr().err
    changes.write_text(torn + "\n" + good)
    with pytest.raises(ConfigError) as e:
        config_lib.latest(str(workdir))
    assert str(e.value) == (
        f"{changes}: line 1 is not a record of config changes; the file is damaged (delete that "
        "line to use the rest)"
    )

    def files():  # but .lock, which names the start that held it
        return {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file() and p.name != ".lock"}

    kept = files()
    config = tiny(total_steps=20, **{"optimizer.schedule": "warmup_cosine"})
    with pytest.raises(ConfigError, match="line 1 is not a record of config changes"):
        train_and_evaluate(config, str(workdir))  # refused before anything is written
    assert files() == kept
    # A resume drops the torn last line before it appends: appended after, it was a damaged
    # line that every later read refused (or, with no end of line, took the new line in).
    changes.write_text(torn)
    config = tiny(total_steps=10, calibration="none", **{"optimizer.schedule": "warmup_cosine"})
    train_and_evaluate(config, str(workdir))
    lines = changes.read_text().splitlines()
    assert [json.loads(line)["changes"] for line in lines] == [
        {"calibration": ["temperature", "none"]}
    ]
    assert config_lib.latest(str(workdir)).calibration == "none"
    # A rerun that records nothing new drops it too: it is not warned about at every read.
    changes.write_text(changes.read_text() + torn)
    train_and_evaluate(config, str(workdir))
    assert changes.read_text().splitlines() == lines
    # A file that cannot be read is named, not read as none recorded.
    changes.unlink()
    changes.mkdir()
    with pytest.raises(ConfigError, match=rf"^{changes} cannot be read \(Is a directory\)"):
        config_lib.latest(str(workdir))


def test_a_config_json_edited_to_other_shapes_is_named_not_orbax_advice(
    trained, tmp_path, monkeypatch
):
    # model.features edited in config.json: export quoted Orbax's API advice ("set strict=False
    # in ArrayRestoreArgs") and offered another --step of the same shapes; a rerun said to
    # rerun with the values in config.json, which cannot restore either.
    import orbax.checkpoint as ocp

    from ann.train.checkpoint import CheckpointError

    # Nor is Orbax asked to restore it: the reads it had started were left pending when it
    # refused, and now and then their coroutines printed ~1,200 lines of "Exception ignored
    # in: <coroutine object _read_array_index_and_device_put>" after the line (export, rerun).
    restores = []

    def restore(self, step, *args, **kwargs):
        restores.append(step)
        return original(self, step, *args, **kwargs)

    original = ocp.CheckpointManager.restore
    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
    workdir = copy_run(trained, tmp_path)
    record = json.loads((workdir / "config.json").read_text())
    record["model"]["features"] = [128, 256]
    (workdir / "config.json").write_text(json.dumps(record))
    expected = (
        f"{workdir / 'config.json'} does not match the shapes in the run's checkpoints "
        "(layers/0/bias: (256,) in step 10, (128,) by config.json); was it edited by "
        "hand? put back the config.json the run was trained with"
    )
    with pytest.raises(CheckpointError) as e:
        build.restore_model(str(workdir))  # what export, report and generate restore with
    assert str(e.value) == expected
    config = tiny(total_steps=20, **{"optimizer.schedule": "warmup_cosine"})
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(workdir))
    assert str(e.value) == expected
    # Rerun with config.json's values, as that refusal said: "rerun with the config it was
    # saved with (config.json)", the edited one.
    config.model.features = (128, 256)
    with pytest.raises(CheckpointError) as e:
        train_and_evaluate(config, str(workdir))
    assert str(e.value) == expected
    assert restores == []


@pytest.mark.parametrize("edit", [{"name": "sgd"}, {"grad_clip_norm": 1.0}])
def test_a_config_json_edited_to_another_optimizer_is_named_not_orbax_advice(
    trained, tmp_path, edit
):
    # optimizer.name or grad_clip_norm edited in config.json: export passed on Orbax's advice
    # ("pass `partial_restore=True`") and offered another --step, which failed alike.
    from ann.train.checkpoint import CheckpointError

    workdir = copy_run(trained, tmp_path)
    record = json.loads((workdir / "config.json").read_text())
    record["optimizer"].update(edit)
    (workdir / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError) as e:
        build.restore_model(str(workdir))  # what export, report and generate restore with
    said = str(e.value)
    assert said.startswith(
        f"{workdir / 'config.json'} does not match the shapes in the run's checkpoints (the "
        "optimizer's state, optimizer.*: opt_state/"
    ), said
    assert said.endswith("was it edited by hand? put back the config.json the run was trained with")
    assert "partial_restore" not in said and "--step" not in said


def test_a_users_model_whose_shapes_moved_names_its_code_before_config_json(tmp_path):
    # A layer added to the user's class since the run trained was blamed on config.json
    # ("was it edited by hand?"), which nobody had touched (trial 47a).
    from ann.train.checkpoint import mismatch_error

    record = tmp_path / "config.json"
    record.write_text(json.dumps({"model": {"name": "mynets:TinyRes"}}))
    said = mismatch_error(
        str(tmp_path), 60, "extra/bias: none in the checkpoint, (64,) by the config"
    )
    assert said == (
        f"{record} names model 'mynets:TinyRes', which now builds other shapes than the run's "
        "checkpoints hold (extra/bias: none in step 60, (64,) by config.json): was its code "
        "(module mynets) changed, or config.json edited by hand, since the run trained? put back "
        "the code and the config.json the run was trained with, or train in a new --workdir"
    ), said
    # A shipped model's: config.json, as before.
    record.write_text(json.dumps({"model": {"name": "cnn"}}))
    said = mismatch_error(
        str(tmp_path), 60, "convs/0/bias: (32,) in the checkpoint, (16,) by the config"
    )
    assert said.endswith("was it edited by hand? put back the config.json the run was trained with")
