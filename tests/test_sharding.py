"""Sharding rules on 4 fake CPU devices: each preset trains like replicated training, and the
parameters (and their optimizer state) are really split across devices."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import tiny
from flax import nnx
from jax.sharding import PartitionSpec

from ann import sharding
from ann.config import ConfigError
from ann.train.build import restore_model
from ann.train.loop import train_and_evaluate

MESHES = {
    "replicate": {"data": 4, "fsdp": 1, "tensor": 1},
    "fsdp": {"data": 1, "fsdp": 4, "tensor": 1},
    "fsdp+tensor": {"data": 1, "fsdp": 2, "tensor": 2},
}


def _lm(preset, **overrides):
    config = tiny(
        "pydoc_lm",
        total_steps=6,
        eval_every_steps=6,
        log_every_steps=1,
        checkpoint_every_steps=6,
        sharding_rules=preset,
        **{"model.depth": 1, "model.dim": 32, "model.mlp_dim": 64, "model.num_heads": 4},
        **overrides,
    )
    for axis, size in MESHES[preset].items():
        config.mesh[axis] = size
    return config


def _losses(workdir):
    import json

    with open(workdir / "metrics.jsonl") as f:
        return [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]


@pytest.fixture(scope="module")
def replicated_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replicate")
    result = train_and_evaluate(_lm("replicate"), str(workdir))
    return result, _losses(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["fsdp", "fsdp+tensor"])
def test_preset_trains_like_replicated_and_really_shards(preset, replicated_run, tmp_path):
    reference, reference_losses = replicated_run
    result = train_and_evaluate(_lm(preset), str(tmp_path))
    np.testing.assert_allclose(_losses(tmp_path), reference_losses, rtol=2e-4)
    assert result.eval_metrics["eval/loss"] == pytest.approx(
        reference.eval_metrics["eval/loss"], rel=2e-4
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5),
        result.state.params,
        reference.state.params,
    )

    leaves = dict(
        (sharding.path_str(p), x)
        for p, x in jax.tree_util.tree_leaves_with_path(result.state.params)
    )
    up = leaves["decoder/blocks/0/mlp/up/kernel"]  # (32, 64)
    if preset == "fsdp":
        assert up.sharding.spec == PartitionSpec(None, "fsdp")
        assert up.addressable_shards[0].data.shape == (32, 16)
    else:
        assert up.sharding.spec == PartitionSpec("fsdp", "tensor")
        assert up.addressable_shards[0].data.shape == (16, 32)
        down = leaves["decoder/blocks/0/mlp/down/kernel"]  # (64, 32)
        assert down.sharding.spec == PartitionSpec("tensor", "fsdp")
    layout = (tmp_path / "parameters.tsv").read_text().splitlines()
    assert "decoder/blocks/0/mlp/up/kernel\t(32, 64)\tfloat32\t" in "\n".join(layout)
    # Adam's moments of a kernel live where the kernel lives.
    mu = [
        x
        for p, x in jax.tree_util.tree_leaves_with_path(result.state.opt_state)
        if sharding.path_str(p).endswith("mu/decoder/blocks/0/mlp/up/kernel")
    ]
    assert mu and mu[0].sharding == up.sharding
    # A sharded run restores onto this machine's devices, replicated, for export and serving.
    _, model, step, _ = restore_model(str(tmp_path), "latest")
    assert step == 6
    restored = nnx.state(model, nnx.Param)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
        restored,
        result.state.params,
    )


def test_replicate_preset_keeps_full_copies(replicated_run):
    result, losses = replicated_run
    assert losses[-1] < losses[0]
    for x in jax.tree.leaves(result.state.params):
        assert x.sharding.spec == PartitionSpec() and x.addressable_shards[0].data.shape == x.shape


def test_custom_rules_are_checked_against_the_mesh_and_the_shapes():
    mesh = jax.make_mesh((2, 2, 1), ("data", "fsdp", "tensor"))
    params = {"dense": {"kernel": np.zeros((6, 8)), "bias": np.zeros(8)}}
    ok = sharding.resolve(((r"kernel$", (None, "fsdp")), (".*", "replicate")))
    specs = sharding.param_shardings(params, ok, mesh)
    assert specs["dense"]["kernel"].spec == PartitionSpec(None, "fsdp")
    assert specs["dense"]["bias"].spec == PartitionSpec()
    fsdp = sharding.param_shardings(params, sharding.resolve("fsdp"), mesh)
    assert fsdp["dense"]["kernel"].spec == PartitionSpec(None, "fsdp")  # the largest even dim
    with pytest.raises(ConfigError, match="dimension 0 of parameter dense/kernel .* size 4"):
        sharding.param_shardings(
            params, sharding.resolve(((r"kernel", (("data", "fsdp"),)),)), mesh
        )
    with pytest.raises(ConfigError, match="mesh axis 'model'"):
        sharding.param_shardings(params, sharding.resolve(((r"kernel", ("model",)),)), mesh)
    with pytest.raises(ConfigError, match="'sharding_rules' is 'zero3'; use a preset"):
        sharding.resolve("zero3")
    with pytest.raises(ConfigError, match="not a regex"):
        sharding.resolve((("(", "fsdp"),))


def _init_setup(name, **overrides):
    """(config, make_model, tx, seed) for config `name` as ann.train.build.build makes them."""
    from ann import data
    from ann import experiment as experiment_lib
    from ann.train import optimizers

    config = tiny(name, **overrides)
    experiment = experiment_lib.get(config.experiment)(config)
    experiment.setup(data.load(config.data.name, config.data.train_split))
    tx = optimizers.make(config.optimizer, 20)
    return config, lambda: experiment.build_model(nnx.Rngs(params=config.seed)), tx, config.seed


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("digits_mlp", {"model.norm": "batch"}),  # BatchNorm statistics, dropout
        ("digits_resnet", {}),
        ("pydoc_lm", {"model.depth": 1, "model.dim": 32, "model.mlp_dim": 64}),
    ],
)
def test_sharded_init_gives_the_same_initial_state_as_eager_init(name, overrides):
    """Building the state on its shardings keeps what a seed means: the same parameters,
    statistics and optimizer state as building the model eagerly on the host (the old way).
    The random bits are the same; XLA may fold an initializer's constant scales together
    inside the one jitted init, which moves the LM's embedding by 1 ulp (measured: the MLP's
    and the ResNet's states are bitwise equal), so floats are compared to 2 ulp."""
    from ann import parallel
    from ann.train import state as state_lib

    config, make_model, tx, seed = _init_setup(name, **overrides)
    # The state's key as an eager fold_in made it before the init derived it itself.
    _, eager = state_lib.create(make_model(), tx, jax.random.fold_in(jax.random.PRNGKey(seed), 1))
    mesh = parallel.make_mesh(MESHES["fsdp"])
    _, sharded, shardings = state_lib.create_sharded(make_model, tx, seed, "fsdp", mesh)
    leaves = jax.tree_util.tree_leaves_with_path(eager)
    assert len(leaves) == len(jax.tree.leaves(sharded))
    for (path, want), got in zip(leaves, jax.tree.leaves(sharded)):
        got, want = np.asarray(got), np.asarray(want)
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, rtol=2.4e-7, atol=0, err_msg=str(path))
        else:
            np.testing.assert_array_equal(got, want, err_msg=str(path))
    got_specs = jax.tree.leaves(jax.tree.map(lambda x: x.sharding.spec, sharded))
    want_specs = jax.tree.leaves(jax.tree.map(lambda s: s.spec, shardings))
    assert got_specs == want_specs and any(s != PartitionSpec() for s in got_specs)


def test_the_state_initializer_compiles_for_running_once_to_the_same_values(monkeypatch):
    """On CPU the init compiles at LLVM level 1 (seconds less to the first step) and gives bit
    for bit the values of XLA's default level 3; a setting in XLA_FLAGS wins."""
    from ann import parallel
    from ann.train import state as state_lib
    from ann.train import xla_options

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert xla_options.for_cpu(xla_options.INIT) == {"xla_backend_optimization_level": "1"}
    _, make_model, tx, seed = _init_setup("digits_mlp", **{"model.features": (64,)})
    mesh = parallel.make_mesh(MESHES["fsdp"])
    _, init, _ = state_lib.sharded_initializer(make_model, tx, seed, "fsdp", mesh)
    default = init.lower().compile(compiler_options={"xla_backend_optimization_level": "3"})()
    for want, got in zip(jax.tree.leaves(default), jax.tree.leaves(init()), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # The options reach the init's compile: a bad one is refused there.
    monkeypatch.setattr(xla_options, "INIT", {"xla_backend_optimization_level": "bogus"})
    _, init, _ = state_lib.sharded_initializer(make_model, tx, seed, "fsdp", mesh)
    with pytest.raises(Exception, match="xla_backend_optimization_level"):
        init()
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2")  # the tests' own way
    assert xla_options.for_cpu(xla_options.INIT) is None


def test_the_state_initializer_draws_with_jax_threefry_kernel_on_gpu(monkeypatch):
    """Lowered for a GPU, the init's random bits come from JAX's threefry kernel (one custom
    call per initializer), not XLA's hash inlined into every initializer: the 0.87B causal LM's
    inlined init had not compiled after 500 s on an H200. Not so on CPU; the flag is left as it
    was; a JAX_THREEFRY_GPU_KERNEL_LOWERING the user sets wins."""
    from ann import parallel
    from ann.train import state as state_lib

    monkeypatch.delenv("JAX_THREEFRY_GPU_KERNEL_LOWERING", raising=False)
    _, make_model, tx, seed = _init_setup("digits_mlp", **{"model.features": (64,)})
    mesh = parallel.make_mesh(MESHES["fsdp"])
    _, init, _ = state_lib.sharded_initializer(make_model, tx, seed, "fsdp", mesh)
    assert "threefry2x32_ffi" not in init.lower().as_text()
    for platform, kernel in (("cuda", "cu_threefry2x32_ffi"), ("rocm", "hip_threefry2x32_ffi")):
        assert kernel in init.lower((platform,)).as_text()
    assert jax.config.jax_threefry_gpu_kernel_lowering is False
    monkeypatch.setenv("JAX_THREEFRY_GPU_KERNEL_LOWERING", "false")
    assert "threefry2x32_ffi" not in init.lower(("cuda",)).as_text()


def test_sharded_init_holds_a_quarter_of_the_state_per_device_under_fsdp():
    """The compiled init's per-device output under fsdp (mesh fsdp=4) is about a quarter of
    the replicated one: a model larger than one device can start."""
    from ann import parallel
    from ann.train import state as state_lib

    # Wide enough that parameters (and Adam's two moments of them) dominate the state.
    _, make_model, tx, seed = _init_setup("digits_mlp", **{"model.features": (512, 512)})
    per_device = {}
    for preset in ("replicate", "fsdp"):
        mesh = parallel.make_mesh(MESHES["fsdp"])
        _, init, _ = state_lib.sharded_initializer(make_model, tx, seed, preset, mesh)
        memory = init.lower().compile().memory_analysis()
        per_device[preset] = memory.output_size_in_bytes
    ratio = per_device["fsdp"] / per_device["replicate"]
    assert 0.24 < ratio < 0.3, per_device


def test_the_layout_summary_says_each_devices_share_in_units_a_small_model_reads(tmp_path):
    # A tiny MLP's parameters read "0.01 of 0.01 MiB": nothing said of what each device holds.
    from ann import parallel

    mesh = parallel.make_mesh({"data": 1, "fsdp": 4, "tensor": 1})
    params = {"dense": {"kernel": np.zeros((64, 32), np.float32), "bias": np.zeros(30, np.float32)}}
    shardings = sharding.param_shardings(params, sharding.resolve("fsdp"), mesh)
    summary = sharding.write_layout(params, shardings, str(tmp_path / "parameters.tsv"))
    # The kernel (8 KiB) split 4 ways; the bias (120 B: 30 does not split 4 ways) whole.
    assert summary == (
        "1 of 2 parameter arrays split; each device holds 2.1 KiB of the 8.1 KiB of parameters"
    ), summary


def test_a_process_id_outside_the_run_is_refused_before_joining():
    from ann import parallel

    with pytest.raises(ConfigError, match=r"--process_id=2 with --num_processes=2: .* 0\.\.1"):
        parallel.initialize_distributed("127.0.0.1:1", 2, 2)


GLOO_LOST = (
    "UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read error "
    "[{address}]:11980: Connection reset by peer"
)


@pytest.mark.parametrize("count, index", [(2, 0), (3, 0), (4, 2)])
def test_a_lost_peer_is_named_where_it_can_be_told(monkeypatch, count, index):
    # Among more than 2 processes it was "a peer process (of 3)", whichever was lost.
    from ann import parallel

    monkeypatch.setattr(jax, "process_count", lambda: count)
    monkeypatch.setattr(jax, "process_index", lambda: index)
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()  # a process of this machine that has ended (reaped)
    lost = 1 if index != 1 else 2

    def said(peers: dict, address: str) -> str:
        monkeypatch.setattr(parallel, "_peers", peers)
        line = parallel.peer_lost(ValueError(GLOO_LOST.format(address=address)))
        return line.split(" is gone mid-run: ")[0]

    hosts = {i: {"host": f"h{i}", "pid": 1, "addresses": [f"10.0.0.{i}"]} for i in range(count)}
    expected = f"process {lost} of {count}"
    # Two processes: the other one. More: the one on the host gloo names.
    assert said(hosts, f"10.0.0.{lost}") == expected
    assert said({}, f"10.0.0.{lost}") == (
        expected if count == 2 else f"one of the other {count - 1} processes (on 10.0.0.{lost})"
    )
    if count == 2:
        return
    # One machine (loopback): the one whose process has ended; unknown where none or several.
    alive = os.getpid()
    here = {i: {"host": "vm", "pid": alive, "addresses": ["127.0.0.1"]} for i in range(count)}
    here[lost]["pid"] = finished.pid
    assert said(here, "127.0.0.1") == expected
    here[lost]["pid"] = alive
    unknown = f"one of the other {count - 1} processes (on 127.0.0.1)"
    assert said(here, "127.0.0.1") == unknown
    assert said({i: {**p, "pid": finished.pid} for i, p in here.items()}, "127.0.0.1") == unknown
    # An address that none of them has: not guessed.
    assert said(hosts, "10.9.9.9") == f"one of the other {count - 1} processes (on 10.9.9.9)"


def test_a_rule_of_ones_own_that_matches_no_parameter_is_refused(tmp_path):
    # A typo replicated the whole model it was meant to split (every P() in parameters.tsv).
    from ann.train.loop import train_and_evaluate

    config = tiny(sharding_rules=(("nomatch", "fsdp"),))
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    assert str(e.value).startswith(
        "config key 'sharding_rules'[0]: 'nomatch' matches no parameter path (re.search); paths "
        "are like "
    ), str(e.value)
    assert not (tmp_path / "run").exists()
