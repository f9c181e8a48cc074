"""Export and distributed training for the Keras 3 ECA layer and models.

Export paths (on the Keras backend of this process; each artifact is reloaded and run at another
batch and spatial size than the one it was checked at eagerly):

* ``.keras``: ``model.save`` / ``keras.saving.load_model`` (every Keras backend);
* ``saved_model``: ``model.export(format="tf_saved_model")`` reloaded with
  ``tf.saved_model.load`` (TensorFlow backend; on the JAX backend the same call goes through
  jax2tf: row ``saved_model(jax2tf)``);
* ``litert``: ``model.export(format="litert")`` (the TFLite converter) run in the LiteRT
  interpreter of ``ai_edge_litert`` (``tf.lite.Interpreter`` is deprecated in TF 2.21), with the
  input resized to the run shape (TensorFlow backend).

Distributed: :func:`mirrored_check` trains an ECA-ResNet with ``tf.distribute.MirroredStrategy``
over logical CPU devices and compares every weight with the same steps on one device.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from ..deploy import (
    check,
    compare_states,
    layer_case,
    layer_reference,
    model_inputs,
    random_batchnorm_state,
)
from .io import export_canonical_model, load_canonical_model
from .layer import ECA, load_canonical
from .models import create_model

__all__ = [
    "build_model",
    "export_saved_model",
    "logical_cpus",
    "mirrored_check",
    "run_export_matrix",
]


def build_model(name: str, seed: int = 0) -> keras.Model:
    """Architecture ``name`` (channels_last, any spatial size) with random BatchNorm statistics."""
    model = create_model(name, data_format="channels_last")
    state = random_batchnorm_state(export_canonical_model(model, name), name, seed)
    load_canonical_model(model, state, name)
    return model


def _layer_model(case: dict) -> keras.Model:
    inputs = keras.Input((None, None, 64), name="x")
    layer = ECA(channels=64, data_format="channels_last", name="eca")
    model = keras.Model(inputs, layer(inputs), name="eca_layer")
    load_canonical(layer, {"conv.weight": case["weight"]})
    return model


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """A SavedModel with one ``serve`` endpoint (None batch and spatial axes), for inference.

    TensorFlow backend: ``model.export(format="tf_saved_model")``. JAX backend (jax2tf): the same
    archive written with ``SaveOptions(experimental_custom_gradients=False)``: with gradients
    saved, ``model.export`` fails on the zoo's models ("Error when tracing gradients for
    SavedModel ... Problematic op name: IdentityN", the BatchNorms' int32 step counters among
    the inputs); an inference artifact does not need them.
    """
    if keras.backend.backend() != "jax":
        model.export(str(path), format="tf_saved_model", verbose=False)
        return Path(path)
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    spec = tf.TensorSpec(tuple(model.inputs[0].shape), model.inputs[0].dtype)
    archive.track_and_add_endpoint("serve", model, [spec])
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    archive.write_out(str(path), options=options, verbose=False)
    return Path(path)


def _litert(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)  # exported with None batch / spatial
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def run_export_matrix(models: Sequence[str], workdir: str | os.PathLike) -> list[dict]:
    """One row per export path x model on this process's Keras backend."""
    backend = keras.backend.backend()
    work = Path(workdir)
    rows = []
    for name in models:
        if name == "layer":
            case = layer_case("channels_last")
            model, want, x, note = (
                _layer_model(case),
                layer_reference(case),
                case["x"],
                case["note"],
            )
        else:
            model = build_model(name)
            _, x, note = model_inputs("channels_last")
            want = keras.ops.convert_to_numpy(model(x, training=False))
            note = f"run {x.shape} (Input with None batch and spatial axes)"

        def run_keras(model=model, x=x, want=want, name=name):
            path = work / f"{name}.keras"
            model.save(path)
            back = keras.saving.load_model(path)
            return keras.ops.convert_to_numpy(back(x, training=False)), want

        def run_saved_model(model=model, x=x, want=want, name=name):
            import tensorflow as tf

            path = work / f"{name}_saved_model"
            export_saved_model(model, path)
            loaded = tf.saved_model.load(str(path))  # keep it alive: serve() uses its variables
            return loaded.serve(x).numpy(), want

        def run_litert(model=model, x=x, want=want, name=name):
            path = work / f"{name}.tflite"
            model.export(str(path), format="litert", verbose=False)
            return _litert(path, x), want

        rows.append(check(".keras", name, run_keras, note=note))
        if backend == "tensorflow":
            rows.append(check("saved_model", name, run_saved_model, note=note))
            rows.append(check("litert", name, run_litert, note=note))
        elif backend == "jax":
            rows.append(check("saved_model(jax2tf)", name, run_saved_model, note=note))
    return rows


# ---------------------------------------------------------------------------------------------
# distributed: tf.distribute.MirroredStrategy == one device


def logical_cpus(n: int) -> list[str]:
    """Split the host CPU into ``n`` logical devices (call before TensorFlow initializes)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    )
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _clone(model: keras.Model, batchnorm: str) -> keras.Model:
    """A copy of ``model`` (same weights) with its BatchNorms ``"frozen"`` or ``"synchronized"``.

    frozen: ``trainable=False`` (Keras then runs BN on its moving statistics and does not train
    gamma / beta); synchronized: ``synchronized=True`` (global batch statistics under a
    strategy).
    """
    if batchnorm not in ("frozen", "synchronized"):
        raise ValueError(f"batchnorm must be 'frozen' or 'synchronized', got {batchnorm!r}")
    config = model.get_config()
    for layer in config["layers"]:
        if "synchronized" in layer["config"]:  # the BatchNormalization layers
            if batchnorm == "synchronized":
                layer["config"]["synchronized"] = True
            else:
                layer["config"]["trainable"] = False
    clone = model.__class__.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def _train(model: keras.Model, x, y, steps: int, batch: int, strategy=None) -> keras.Model:
    import contextlib

    import tensorflow as tf

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model.compile(  # optimizer slots are created under the strategy: mirrored too
            optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
        if strategy is not None:  # each global batch is split evenly over the replicas
            ds = strategy.experimental_distribute_dataset(ds)
        model.fit(ds, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return model


def mirrored_check(
    replicas: int = 2,
    arch: str = "eca_resnet18",
    steps: int = 3,
    batch: int = 4,
    size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    batchnorm: str = "frozen",
) -> dict:
    """Train under MirroredStrategy over ``replicas`` logical CPUs and on one device; compare.

    ``batchnorm="frozen"`` (default) runs every BatchNorm on its moving statistics, so the
    mirrored run is mathematically the single-device run and float32 agreement is the test.
    ``"synchronized"`` uses Keras' ``synchronized=True`` BatchNorm instead. NOTE: its TensorFlow
    implementation computes var = E[x^2] - E[x]^2 from all-reduced sums (keras/src/backend/
    tensorflow/nn.py ``_compute_moments_sync``); on this small model (2 images per replica,
    1 x 1 maps in layer4) the float32 cancellation differs with the split and SGD amplifies it:
    weights differed by up to 9e-2 after 3 steps (measured), while a plain Conv-BN-Dense model
    agrees to 6e-8. Needs the TensorFlow backend and a fresh process (the logical devices are
    fixed when TensorFlow starts). Returns {"replicas", "devices",
    ...} and :func:`eca_multi.deploy.compare_states` of every weight (mirrored vs one device).
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("MirroredStrategy needs KERAS_BACKEND=tensorflow")
    devices = logical_cpus(replicas)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps * batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, num_classes, steps * batch).astype(np.int32)
    keras.utils.set_random_seed(seed)
    base = create_model(arch, num_classes=num_classes, data_format="channels_last")
    start = [np.array(w) for w in base.get_weights()]
    single = _train(_clone(base, batchnorm), x, y, steps, batch)
    strategy = tf.distribute.MirroredStrategy(devices[:replicas])
    with strategy.scope():  # variables created here are mirrored on every replica
        mirrored = _clone(base, batchnorm)
    mirrored = _train(mirrored, x, y, steps, batch, strategy)
    names = [w.path for w in single.weights]
    want = {n: np.asarray(w) for n, w in zip(names, single.get_weights(), strict=True)}
    got = {n: np.asarray(w) for n, w in zip(names, mirrored.get_weights(), strict=True)}
    res = compare_states(got, want, dict(zip(names, start, strict=True)))
    return {
        "engine": "tf.distribute.MirroredStrategy",
        "replicas": strategy.num_replicas_in_sync,
        "devices": devices[:replicas],
        "arch": arch,
        "steps": steps,
        "batchnorm": batchnorm,
        **res,
    }
