"""The README's commands are the ones CI runs, and the examples print what the guides show."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_the_example_and_test_commands():
    example, tests = readme_commands()[:2]
    assert "examples/" in example and "pip install" in example
    assert "pytest" in tests and ".[test]" in tests


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = re.search(r"TEST_COMMAND='(.+)'", ci).group(1)
    assert ci_command == readme_commands()[1]


def run_example(name):
    env = {**os.environ, "JAXVARS_QUICK": "1"}
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "expected",
    [
        "Shape:  (2, 2)",
        "DType:  float32",
        "Index of highest value: [1 1]",
        "Copying and reshaping:  [[1. 2. 3. 4.]]",
        "ValueError: Cannot assign to variable 'Variable': the variable's shape (2,) and "
        "the value's shape (3,)",
        "[5. 6.]\n[2. 3.]\n[7. 9.]\n[0. 0.]",
        "[[False False]\n [False False]]",
        "step_counter: <jaxvars.Variable 'Variable' shape=() dtype=int32 trainable=False",
    ],
)
def test_variables_guide_prints_what_the_tf_guide_shows(expected, variables_guide_output):
    assert expected in variables_guide_output


@pytest.fixture(scope="module")
def variables_guide_output():
    return run_example("variables_guide.py")


def test_sharing_variables_example_shares_one_set_of_four():
    out = run_example("sharing_variables.py")
    assert "naive: same image, two calls, same result? False" in out
    assert "the store holds 4 variables" in out
    assert "image1 went through the shared filter: True" in out
    assert "image2 went through the shared filter: True" in out
    assert "without reuse: Variable 'image_filters/conv1/weights' already exists" in out


def test_train_mlp_learns_the_spirals():
    out = run_example("train_mlp.py")
    assert "Total: 4,547 parameters" in out
    accuracy = float(re.search(r"accuracy on the spirals: ([\d.]+)%", out).group(1))
    assert accuracy > 90.0
    assert re.search(r"trained 800 steps", out)
    # Not a terminal: a line per update, no carriage-return redraws.
    assert "\r" not in out and "step   800/800" in out.splitlines()[-2]


def test_train_mlp_plot_without_matplotlib_fails_before_training(tmp_path):
    env = {**os.environ, "JAXVARS_QUICK": "1"}
    env.pop("XLA_FLAGS", None)
    script = ROOT / "examples" / "train_mlp.py"
    # matplotlib made unimportable (the test extra installs it for the notebook).
    run_without_matplotlib = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "
        f"sys.argv = [{str(script)!r}, '--plot', {str(tmp_path / 'loss.png')!r}]; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", run_without_matplotlib],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1 and "--plot needs matplotlib" in result.stderr
    assert "step" not in result.stdout  # nothing was trained first


def test_gradient_masking_keeps_masked_weights_bit_identical():
    out = run_example("gradient_masking.py")
    assert "frozen layer bit-identical after training: True" in out
    assert "pruned weights still exactly zero: True (14745 of 16384)" in out
    assert "kept weights still learning: True" in out
    assert "gradient of a pruned weight: 0.0" in out
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert losses[-1] < losses[-2]  # learning again after pruning


def test_device_placement_example_prints_the_guides_results():
    out = run_example("device_placement.py")
    assert "[[22. 28.]\n [49. 64.]]" in out
    assert "[[ 1.  4.  9.]\n [ 4. 10. 18.]]" in out


def test_data_parallel_example_matches_the_single_device_run():
    out = run_example("data_parallel.py")
    assert "up/w     (16, 64)  P(None, 'model')" in out
    assert "data parallel matches one device: True" in out
    assert "2-D matches one device: True" in out
    assert out.count("adam state mu/up/w is sharded like up/w: True") == 3


def test_the_readme_python_blocks_run():
    import jax.numpy as jnp

    blocks = re.findall(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)
    quickstart = blocks[0]
    namespace = {}
    exec(compile(quickstart, "README.md quickstart", "exec"), namespace)
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))
    first = float(namespace["train_step"](namespace["model"], x, y))
    for _ in range(20):
        last = float(namespace["train_step"](namespace["model"], x, y))
    assert last < first


def test_porting_guide_code_runs():
    blocks = re.findall(r"```python\n(.+?)\n```", (ROOT / "docs" / "porting.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/porting.md", "exec"), {})


def test_the_tf1_cifar10_port_trains_towers_and_evaluates_with_averages():
    out = run_example("port_tf1_cifar10.py")
    assert "variables: 10 trainable, shared by 2 towers" in out
    assert "shadow of local3/weights: local3/weights/ExponentialMovingAverage" in out
    assert "precision @ 1, averaged weights:" in out


def test_the_tf2_loop_port_keeps_and_resumes_checkpoints():
    out = run_example("port_tf2_training_loop.py")
    assert "initializing from scratch" in out
    assert "checkpoints kept: [20, 40]" in out


def test_the_checkpoint_manager_example_resumes_with_the_same_losses():
    out = run_example("checkpoint_manager.py")
    assert "steps kept: [10, 15, 20]" in out and "resumed from step 20" in out
    assert "same losses as the uninterrupted run: True" in out


def test_the_big_model_fits_only_sharded_and_restores_onto_another_mesh():
    out = run_example("big_model_init.py")
    assert "a full copy of the model: MemoryError, as intended" in out
    assert "sharded: each process holds 128 MiB of its shards" in out
    assert "equal to the original: True" in out


def test_every_python_block_of_the_readme_runs_top_to_bottom():
    """The landing page's tour runs as a reader pasting it would (the guides'
    blocks run in tests/test_docs.py)."""
    blocks = re.findall(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md block {i}", "exec"), namespace)
    assert int(namespace["opt"].iterations) == 100


def test_the_readme_is_a_landing_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
