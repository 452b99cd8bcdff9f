"""The paper's models, in plain Keras 3.

Every model names two layers that the measures read:
- ``representation``: the features the last layer sees (MLP: phi(W1 x);
  ConvNet: the 1024-unit dense layer after ReLU; ResNet/DenseNet: the pooled
  features);
- ``logits``: the last dense layer, no activation.
The MLP also names its first layer ``hidden`` (W1, no activation: the
activation is the separate ``representation`` layer).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from ..config.settings import ConfigError, RunConfig

ACTIVATIONS = {
    "sin": ops.sin,
    "relu": ops.relu,
    "sigmoid": ops.sigmoid,
    "tanh": ops.tanh,
    "linear": lambda x: x,
}


def activation_derivative(name: str, pre_activation):
    """phi'(u) for the closed-form W1 gradients (alignment.py)."""
    if name == "sin":
        return ops.cos(pre_activation)
    if name == "relu":
        return ops.cast(pre_activation > 0, pre_activation.dtype)
    if name == "sigmoid":
        s = ops.sigmoid(pre_activation)
        return s * (1 - s)
    if name == "tanh":
        t = ops.tanh(pre_activation)
        return 1 - t * t
    if name == "linear":
        return ops.ones_like(pre_activation)
    raise ValueError(f"unknown activation {name!r}")


def mlp(input_shape, num_classes: int, width: int, activation: str, init: str, sigma: float) -> keras.Model:
    """``z(x) = W2 phi(W1 x)``, no biases.

    init 'normal' (Sections 3-4): W1 ~ N(0, sigma^2) with an *absolute* stddev,
    not fan-in scaled and not truncated; W2 Glorot-uniform and not rescaled.
    init 'glorot' (Section 5): both layers Glorot-uniform.
    """
    if init == "normal":
        w1_init = keras.initializers.RandomNormal(mean=0.0, stddev=sigma)
    else:
        w1_init = keras.initializers.GlorotUniform()
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(width, use_bias=False, kernel_initializer=w1_init, name="hidden")(x)
    r = layers.Activation(ACTIVATIONS[activation], name="representation")(x)
    z = layers.Dense(num_classes, use_bias=False, kernel_initializer="glorot_uniform", name="logits")(r)
    return keras.Model(inputs, z, name=f"mlp_{activation}")


def convnet(input_shape, num_classes: int) -> keras.Model:
    """The released code's ConvNet (Section 5), biases on, Glorot init."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1")(x)
    x = layers.Conv2D(64, 5, padding="valid", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    r = layers.Dense(1024, activation="relu", name="representation")(x)
    z = layers.Dense(num_classes, name="logits")(r)
    return keras.Model(inputs, z, name="convnet")


def _resnet14(include_top, weights, input_shape, pooling):
    """ResNet-50's family at depth 14: keras.applications' ResNet (v1
    bottleneck blocks, 64-128-256-512 filters) with one block per stage
    instead of 3-4-6-3 (1 + 3 x 4 + 1 layers); a quarter of ResNet-50's work."""
    from keras.src.applications import resnet

    def stacks(x):
        x = resnet.stack_residual_blocks_v1(x, 64, 1, stride1=1, name="conv2")
        for stage, filters in enumerate((128, 256, 512), start=3):
            x = resnet.stack_residual_blocks_v1(x, filters, 1, name=f"conv{stage}")
        return x

    return resnet.ResNet(stacks, preact=False, use_bias=True, include_top=include_top, weights=weights,
                         input_shape=input_shape, pooling=pooling, name="resnet14")  # fmt: skip


def _densenet21(include_top, weights, input_shape, pooling):
    """DenseNet-121's family at depth 21: keras.applications' DenseNet (growth
    32, compression 0.5) with dense blocks of 2-2-2-2 layers instead of
    6-12-24-16 (1 + 2 x 8 + 3 + 1 layers)."""
    from keras.src.applications import densenet

    return densenet.DenseNet([2, 2, 2, 2], include_top=include_top, weights=weights, input_shape=input_shape,
                             pooling=pooling, name="densenet21")  # fmt: skip


APPLICATIONS = {"resnet50": keras.applications.ResNet50, "densenet121": keras.applications.DenseNet121,
                "resnet14": _resnet14, "densenet21": _densenet21}  # fmt: skip


def application(name: str, input_shape, num_classes: int) -> keras.Model:
    """ResNet / DenseNet from keras.applications, untrained, with our head."""
    base = APPLICATIONS[name](include_top=False, weights=None, input_shape=tuple(input_shape), pooling="avg")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    r = layers.Identity(name="representation")(base(inputs))
    z = layers.Dense(num_classes, name="logits")(r)
    return keras.Model(inputs, z, name=name)


def scale_kernels(model: keras.Model, factor: float) -> None:
    """Our extension for non-paper inits: multiply every kernel by ``factor``."""
    if factor == 1.0:
        return
    for weight in model.weights:
        if weight.path.endswith("kernel"):
            weight.assign(weight * factor)


def build(run: RunConfig, input_shape, num_classes: int) -> keras.Model:
    if run.model == "mlp":
        model = mlp(input_shape, num_classes, run.width, run.activation, run.init, run.sigma)
    else:
        if len(input_shape) != 3:
            raise ConfigError(
                f"model {run.model!r} needs images (H, W, C); dataset rows have shape {tuple(input_shape)}. "
                "Use model: mlp for flat vectors."
            )
        if run.model == "convnet":
            if min(input_shape[:2]) < 15:
                raise ConfigError(f"model 'convnet' needs images of at least 15x15; got {tuple(input_shape)}: "
                                  "set image_size (e.g. 32) to enlarge them")  # fmt: skip
            model = convnet(input_shape, num_classes)
        else:
            if min(input_shape[:2]) < 32:
                raise ConfigError(f"model {run.model!r} needs images of at least 32x32; got {tuple(input_shape)}: "
                                  "set image_size: 32 to enlarge them")  # fmt: skip
            model = application(run.model, input_shape, num_classes)
    if run.init == "glorot":
        scale_kernels(model, run.init_scale)
    return model


def is_mlp(model: keras.Model) -> bool:
    return model.name.startswith("mlp_")


def mlp_activation(model: keras.Model) -> str:
    return model.name.removeprefix("mlp_")


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds x 2 of one forward pass of one example through the dense
    and convolution layers (the rest: pooling, normalization, activations, is
    a few percent and left out). Used for compute estimates."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, layers.Dense):
            total += 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
            _, ho, wo, _ = layer.output.shape
            total += 2 * int(ho) * int(wo) * kh * kw * cin * cout
    return total
