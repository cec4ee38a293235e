"""jv.CheckpointManager (API.md section 11): numbered steps on orbax-checkpoint."""

import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from models import MLP

import jaxvars as jv
from jaxvars._errors import JaxvarsValueError


@pytest.fixture
def directory(tmp_path):
    return str(tmp_path / "run")


def test_retention_interval_and_listing(directory):
    v = jv.Variable(0.0, name="v")
    with jv.CheckpointManager(
        directory, max_to_keep=2, keep_every_n_steps=4, save_interval_steps=2
    ) as mgr:
        saved = [mgr.save(step, [v]) for step in range(11)]
        mgr.wait()
        assert saved == [step % 2 == 0 for step in range(11)]  # the interval skips odd steps
        assert mgr.all_steps() == [0, 4, 8, 10]  # the newest two, and every 4th
        assert mgr.latest_step() == 10
        assert mgr.save(11, [v], force=True) and (mgr.wait() or True)
        assert mgr.latest_step() == 11


@pytest.mark.parametrize("mode, best", [("min", 3), ("max", 1)])
def test_best_metric_retention(directory, mode, best):
    v = jv.Variable(0.0, name="v")
    losses = {0: 5.0, 1: 9.0, 2: 4.0, 3: 1.0, 4: 6.0}
    with jv.CheckpointManager(
        directory, max_to_keep=2, best_metric="loss", best_mode=mode, async_save=False
    ) as mgr:
        for step, loss in losses.items():
            mgr.save(step, [v], metrics={"loss": loss})
        assert mgr.best_step() == best
        kept = sorted(losses, key=losses.get, reverse=mode == "max")[:2]
        assert mgr.all_steps() == sorted(kept)
        with pytest.raises(ValueError, match="best_metric 'loss' is missing"):
            mgr.save(9, [v], metrics={"accuracy": 1.0})


def test_restore_latest_or_a_step_into_a_model_and_optimizer(directory):
    model = MLP([3, 4, 2])
    opt = jv.Optimizer(optax.adam(0.1), model)
    target = {"model": model, "opt": opt}
    snapshots = {}
    with jv.CheckpointManager(directory) as mgr:
        for step in range(3):
            opt.apply_gradients(tuple(jnp.ones(v.shape) for v in model.trainable_variables))
            mgr.save(step, target)
            snapshots[step] = {k: v.numpy() for k, v in model.named_variables().items()}
        mgr.wait()
        assert mgr.restore(target, step=1) == 1
        for key, v in model.named_variables().items():
            np.testing.assert_array_equal(v.numpy(), snapshots[1][key])
        assert int(opt.iterations) == 2
        assert mgr.restore(target) == 2 and int(opt.iterations) == 3
        with pytest.raises(ValueError, match="No step 7 .* the steps kept are \\[0, 1, 2\\]"):
            mgr.restore(target, step=7)


def test_restore_checks_everything_first_and_changes_nothing(directory):
    a, b = jv.Variable(np.ones((2, 3), np.float32), name="a"), jv.Variable(1, name="b")
    with jv.CheckpointManager(directory, async_save=False) as mgr:
        with pytest.raises(ValueError, match="No checkpoint to restore"):
            mgr.restore({"a": a})
        mgr.save(0, {"a": a, "b": b})
        wrong_shape = jv.Variable(np.zeros((3, 2), np.float32), name="a")
        wrong_dtype = jv.Variable(0.0, name="b")
        extra = jv.Variable(0.0, name="c")
        with pytest.raises(ValueError) as e:
            mgr.restore({"a": wrong_shape, "b": wrong_dtype, "c": extra})
        message = str(e.value)
        assert "3 problem(s), nothing was changed" in message
        assert "'a': shape (2, 3) in the checkpoint" in message
        assert "'b': dtype int32 in the checkpoint" in message and "missing key 'c'" in message
        assert float(wrong_shape.numpy().sum()) == 0.0 and float(extra) == 0.0
        with pytest.raises(ValueError, match="unexpected key 'b'"):
            mgr.restore({"a": a})


def test_restore_into_abstract_variables_and_onto_another_mesh(directory):
    devices = np.array(jax.devices())
    row_mesh = Mesh(devices.reshape(8), ("data",))
    grid_mesh = Mesh(devices.reshape(2, 4), ("x", "y"))
    saved = jv.Variable(
        lambda: jnp.arange(64.0).reshape(8, 8),
        sharding=NamedSharding(row_mesh, PartitionSpec("data")),
    )
    with jv.CheckpointManager(directory) as mgr:
        mgr.save(5, {"w": saved})
    target_sharding = NamedSharding(grid_mesh, PartitionSpec("y", "x"))
    abstract = jv.eval_shape(lambda: jv.Variable(jnp.zeros((8, 8)), sharding=target_sharding))
    assert abstract.is_abstract
    with jv.CheckpointManager(directory) as mgr:
        assert mgr.restore({"w": abstract}) == 5
    assert not abstract.is_abstract and abstract.sharding == target_sharding
    np.testing.assert_array_equal(abstract.numpy(), saved.numpy())
    # Each device of the new mesh holds its own (2, 4) block.
    assert {s.data.shape for s in abstract.value.addressable_shards} == {(2, 4)}


def train(steps, model, opt, x):
    """A step whose loss depends on the model, the optimiser and the random stream."""

    @jv.jit
    def step():
        noise = jv.random.normal(x.shape) * 0.1
        loss, grads = jv.value_and_grad(lambda: jnp.mean((model(x + noise) - 1.0) ** 2), model)()
        opt.apply_gradients(grads)
        return loss

    return [float(step()) for _ in range(steps)]


def fresh():
    jv.random.set_seed(0)
    model = MLP([3, 8, 1])
    return model, jv.Optimizer(optax.adam(0.05), model)


def test_exact_resume_gives_the_losses_of_an_uninterrupted_run(directory):
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)
    model, opt = fresh()
    uninterrupted = train(8, model, opt, x)

    model, opt = fresh()
    target = {"model": model, "opt": opt, "rng": jv.random.key_variable()}
    with jv.CheckpointManager(directory, save_interval_steps=1) as mgr:
        first = train(5, model, opt, x)
        mgr.save(5, target)
    # "Crash": a new model and optimiser, the stream moved on, then resume.
    with jv.Store():
        model, opt = fresh()
        jv.random.set_seed(123)
        target = {"model": model, "opt": opt, "rng": jv.random.key_variable()}
        with jv.CheckpointManager(directory) as mgr:
            assert mgr.restore(target) == 5
        resumed = train(3, model, opt, x)
    assert first + resumed == uninterrupted


def test_a_save_killed_midway_leaves_earlier_steps_listed_and_restorable(directory):
    script = textwrap.dedent(
        f"""
        import os, signal
        import jax.numpy as jnp
        import jaxvars as jv
        from etils import epath

        v = jv.Variable(jnp.arange(1000.0), name="v")
        mgr = jv.CheckpointManager({directory!r}, async_save=False)
        mgr.save(1, [v])
        v.assign(v * 2)
        # Die the moment orbax would publish step 2 (its rename of the finished
        # temporary directory): the step is written but never completed.
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        epath.Path.rename = die
        os.rename = die
        mgr.save(2, [v])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    v = jv.Variable(jnp.zeros(1000), name="v")
    with jv.CheckpointManager(directory) as mgr:
        assert mgr.all_steps() == [1] and mgr.latest_step() == 1
        assert mgr.restore([v]) == 1
    np.testing.assert_array_equal(v.numpy(), np.arange(1000.0))


def test_without_orbax_the_manager_names_the_extra_and_save_still_works(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)  # import fails
    with pytest.raises(ValueError, match='pip install "jaxvars\\[orbax\\]"'):
        jv.CheckpointManager(str(tmp_path / "run"))
    v = jv.Variable([1.0], name="v")
    jv.save(str(tmp_path / "ckpt"), [v])
    jv.restore(str(tmp_path / "ckpt"), [v])


def test_bad_options_are_refused(directory):
    with pytest.raises(ValueError, match="best_mode must be 'min' or 'max'"):
        jv.CheckpointManager(directory, best_mode="lowest")
    with pytest.raises(ValueError, match="max_to_keep must be a positive int"):
        jv.CheckpointManager(directory, max_to_keep=0)


@pytest.mark.parametrize("first, second", [("x.y", "x/y"), ("a./b", "a/.b")])
def test_keys_that_orbax_would_store_under_one_name_are_refused_before_writing(
    directory, first, second
):
    a, b = jv.Variable(1.0, name="a"), jv.Variable(2.0, name="b")
    with jv.CheckpointManager(directory, async_save=False) as mgr:
        with pytest.raises(JaxvarsValueError) as e:
            mgr.save(0, {first: a, second: b})
        name = first.replace("/", ".")
        assert str(e.value) == (
            f"CheckpointManager: the keys {first!r} and {second!r} would both be stored as "
            f"{name!r} (orbax joins a key's parts with '.'), and one value would overwrite the "
            "other. Rename one of the variables' keys."
        )
        assert mgr.all_steps() == [] and "0" not in os.listdir(directory)
        # Distinct names are kept apart.
        assert mgr.save(0, {first: a, "other/y": b})
        a.assign(0.0)
        b.assign(0.0)
        mgr.restore({first: a, "other/y": b})
    assert (float(a), float(b)) == (1.0, 2.0)


@pytest.mark.parametrize("mode, best", [("min", 0), ("max", 2)])
def test_a_nan_metric_is_never_best_and_goes_first(directory, mode, best):
    v = jv.Variable(0.0, name="v")
    options = dict(max_to_keep=2, best_metric="loss", best_mode=mode, async_save=False)
    with jv.CheckpointManager(directory, **options) as mgr:
        for step, loss in enumerate([1.0, float("nan"), 2.0]):
            mgr.save(step, [v], metrics={"loss": loss})
        assert mgr.all_steps() == [0, 2] and mgr.best_step() == best
        mgr.save(3, [v], metrics={"loss": np.float32("nan")})  # the worst: dropped at once
        assert mgr.all_steps() == [0, 2]
    with jv.CheckpointManager(directory, **options) as mgr:  # the metrics read back from disk
        assert mgr.best_step() == best


def test_when_every_metric_is_nan_there_is_no_best_step(directory):
    v = jv.Variable(0.0, name="v")
    options = dict(max_to_keep=2, best_metric="loss")
    with jv.CheckpointManager(directory, **options) as mgr:
        for step in range(3):
            mgr.save(step, [v], metrics={"loss": float("nan")})
        mgr.wait()
        assert mgr.all_steps() == [1, 2] and mgr.best_step() is None
    with jv.CheckpointManager(directory, **options) as mgr:
        assert mgr.best_step() is None  # from the metrics on disk
        mgr.save(3, [v], metrics={"loss": float("nan")})
        mgr.wait()
        # A step still being written has no metrics on disk yet: as if so, the
        # manager answers from the metrics it was given.
        shutil.rmtree(os.path.join(directory, "3", "metrics"))
        assert mgr.all_steps() == [2, 3] and mgr.best_step() is None


def test_saving_at_or_before_the_latest_step_is_an_error_that_writes_nothing(directory):
    """As after rolling back: restore(step=5) with step 10 kept, then save(6)."""
    v = jv.Variable(0.0, name="v")
    with jv.CheckpointManager(directory, save_interval_steps=5, async_save=False) as mgr:
        for step in (5, 10):
            v.assign(float(step))
            mgr.save(step, [v])
        assert mgr.restore([v], step=5) == 5
        for step, force, later in [
            (6, False, [10]),
            (6, True, [10]),
            (10, False, [10]),
            (5, True, [5, 10]),
        ]:
            with pytest.raises(JaxvarsValueError) as e:
                mgr.save(step, [v], force=force)
            assert str(e.value) == (
                f"CheckpointManager.save(step={step}): {directory!r} already holds step 10, "
                "and steps are saved in increasing order only (orbax would skip this one "
                f"and write nothing). To go on from an earlier step, first delete the kept "
                f"steps from {step} on ({later}) with mgr.delete(step), or number the new "
                "steps after 10."
            )
        assert mgr.all_steps() == [5, 10]
        mgr.delete(10)
        assert mgr.all_steps() == [5]
        assert mgr.save(6, [v], force=True) and mgr.all_steps() == [5, 6]
        v.assign(0.0)
        assert mgr.restore([v]) == 6 and float(v) == 5.0
        with pytest.raises(ValueError, match=r"No step 10 .* the steps kept are \[5, 6\]"):
            mgr.delete(10)


def test_zero_size_variables_are_saved_and_restored(directory):
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec(None, "data"))

    def variables(fill):
        return {
            "empty": jv.Variable(np.zeros((0, 3), np.float32)),
            "sharded": jv.Variable(jnp.zeros((0, 8), jnp.bfloat16), sharding=sharding),
            "full": jv.Variable(np.full(2, fill, np.int32)),
        }

    saved = variables(7)
    with jv.CheckpointManager(directory) as mgr:
        assert mgr.save(0, saved)
        assert mgr.save(1, {"empty": saved["empty"]})  # nothing but a zero-size value
        mgr.wait()
        restored = variables(0)
        before = {key: v.value for key, v in restored.items()}
        assert mgr.restore(restored, step=0) == 0
        assert all(restored[key].value is not before[key] for key in restored)
        assert restored["full"].numpy().tolist() == [7, 7]
        assert restored["sharded"].shape == (0, 8) and restored["sharded"].sharding == sharding
        assert restored["empty"].shape == (0, 3) and restored["empty"].dtype == np.float32
        wrong = jv.Variable(np.zeros((0, 4), np.float32))
        unchanged = wrong.value
        with pytest.raises(
            ValueError, match=r"'empty': shape \(0, 3\) in the checkpoint, \(0, 4\)"
        ):
            mgr.restore({"empty": wrong}, step=1)
        assert wrong.value is unchanged
        assert mgr.restore({"empty": restored["empty"]}, step=1) == 1


def test_saving_an_empty_target_is_a_clear_error(tmp_path):
    with jv.CheckpointManager(tmp_path / "run") as mgr:
        for empty in ([], {}):
            with pytest.raises(ValueError, match=r"save\(step=1\): the target holds no variable"):
                mgr.save(1, empty)
        assert mgr.all_steps() == []
