"""Write the extra TensorFlow checkpoint fixtures in tests/data/tf_checkpoints.

Needs a real TensorFlow, in a virtual environment of its own (the project never
imports it): python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu
&& /tmp/tf/bin/python tools/make_tf_fixtures.py. Commit only what it writes.

The case: a tf.train.Checkpoint cut into several data shards of
variables of every dtype the shared fixtures lack (strings, complex, unsigned,
int8/16, float64, an empty array), and a tf.Module trained with TF1's Adam,
whose slots TF2 keys as `<variable>/.OPTIMIZER_SLOT/<optimizer>/<slot>`.

And tf1_partitioned_large: a TF1 Saver checkpoint of a partitioned variable of
300 rows in 3 parts, whose slice keys hold offsets past 63 (OrderedCode's
multi-byte numbers); tf1_partial_partitions: one saved with 2 of its 3 parts.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

DATA = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tf_checkpoints")
OUT = os.path.join(DATA, "tf2_more")


class Dense(tf.Module):
    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3) / 10, name="kernel")
        self.bias = tf.Variable(np.zeros(3, np.float32), name="bias")


def main() -> None:
    values = tf.Module()
    values.strings = tf.Variable([b"alpha", b"", b"\x00\xffbytes"], name="strings")
    values.scalar_string = tf.Variable(b"one", name="scalar_string")
    values.c64 = tf.Variable(np.array([1 + 2j, -3.5j], np.complex64))
    values.c128 = tf.Variable(np.array([[1e-300 + 1j]], np.complex128))
    values.u8 = tf.Variable(np.array([0, 255], np.uint8))
    values.u16 = tf.Variable(np.array([65535], np.uint16))
    values.u32 = tf.Variable(np.array([2**32 - 1, 7], np.uint32))
    values.u64 = tf.Variable(np.array([2**64 - 1], np.uint64))
    values.i8 = tf.Variable(np.array([-128, 127], np.int8))
    values.i16 = tf.Variable(np.array([-32768], np.int16))
    values.f64 = tf.Variable(np.array([np.pi, -0.0], np.float64))
    values.empty = tf.Variable(np.zeros((0, 3), np.float32))
    model = Dense()
    optimizer = tf.compat.v1.train.AdamOptimizer(0.1)
    for _ in range(2):
        optimizer.minimize(
            lambda: tf.reduce_sum((tf.ones((1, 2)) @ model.kernel + model.bias) ** 2),
            var_list=[model.kernel, model.bias],
        )
    checkpoint = tf.train.Checkpoint(values=values, model=model, optimizer=optimizer)
    os.makedirs(OUT, exist_ok=True)
    prefix = checkpoint.save(os.path.join(OUT, "ckpt"))
    keys, arrays = {}, {}
    for i, (key, shape) in enumerate(tf.train.list_variables(prefix)):
        value = tf.train.load_variable(prefix, key)
        entry = {"shape": shape, "dtype": str(np.asarray(value).dtype)}
        if key == "_CHECKPOINTABLE_OBJECT_GRAPH":
            entry["value"] = "the serialized object graph"
        elif np.asarray(value).dtype == object or np.asarray(value).dtype.kind == "S":
            entry["dtype"] = "object"
            entry["hex"] = [bytes(b).hex() for b in np.asarray(value).reshape(-1).tolist()]
        else:
            arrays[f"t{i:03d}"] = np.asarray(value)
            entry["npz"] = f"t{i:03d}"
        keys[key] = entry
    np.savez(os.path.join(OUT, "expected.npz"), **arrays)
    described = {
        "description": __doc__.split("\n\n")[2].replace("\n", " "),
        "tensorflow_version": tf.__version__,
        "prefix": os.path.basename(prefix),
        "files": sorted(os.listdir(OUT)),
        "keys": keys,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(described, f, indent=1)
    print(prefix, file=sys.stderr)
    partitioned()


def partitioned() -> None:
    out = os.path.join(DATA, "tf1_partitioned_large")
    os.makedirs(out, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        table = tf.compat.v1.get_variable(
            "table",
            shape=[300, 2],
            initializer=tf.compat.v1.random_normal_initializer(seed=1),
            partitioner=tf.compat.v1.fixed_size_partitioner(3),
        )
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(session, os.path.join(out, "model.ckpt"), write_meta_graph=False)
            value = session.run(tf.concat(list(table), axis=0))
    np.savez(os.path.join(out, "expected.npz"), table=value)
    print(prefix, tf.train.list_variables(prefix), file=sys.stderr)
    partial_partitions()


def partial_partitions() -> None:
    """A Saver given 2 of a partitioned variable's 3 parts: TF refuses to load it."""
    out = os.path.join(DATA, "tf1_partial_partitions")
    os.makedirs(out, exist_ok=True)
    with tf.Graph().as_default():
        part = tf.compat.v1.get_variable(
            "part",
            (10, 7),
            initializer=tf.compat.v1.ones_initializer(),
            partitioner=tf.compat.v1.fixed_size_partitioner(3, axis=0),
        )
        saver = tf.compat.v1.train.Saver(var_list=list(part)[:2])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, os.path.join(out, "model.ckpt"), write_meta_graph=False)


if __name__ == "__main__":
    main()
