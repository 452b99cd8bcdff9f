"""Compiled SGD epochs with the data on the device.

The training set is copied to the device once; one compiled call runs many
SGD steps (an epoch, or a chunk of one), gathering each minibatch from the
device copy by the epoch's order, which is a function of (seed, epoch) only
(:func:`epoch_order`), so any epoch can be recomputed and a run resumed
mid-way. Whole-split evaluation runs as compiled chunks too. Python touches
the loop once per chunk.

Two trainers share one interface:

- :class:`PackedMLP`: R MLP runs (a pack: same data and settings, own sigma
  and seed) as one model with a leading run axis, W1 (R, D, H) and W2
  (R, H, K). Its step uses the closed-form gradients of the 2-layer network
  (the same ones the alignment measures use): for member r,
  ``grad W2 = phi(h)^T delta`` and ``grad W1 = x^T ((delta W2^T) * phi'(h))``
  with ``delta = dl/dz / B``. Each member sees its own minibatch and only its
  own weights, so the pack updates each member exactly as plain SGD on its
  own mean loss would, at its own learning rate (learning_rate may be swept
  within a pack), W1's times the member's ``first_layer_factor``
  (first_layer_step: compensated). A frozen member (diverged) gets a zero
  learning rate.
- :class:`SoloModel`: any Keras model (ConvNet, ResNet-50, DenseNet-121),
  one run, gradients by the backend's autodiff (backend.value_and_grad).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from . import backend, losses, models
from .losses import PaperLoss

EVAL_CHUNK = 1024  # examples per evaluation chunk


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which run ``seed`` visits the n training examples in ``epoch``."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def mlp_init(run, input_dim: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """W1 ~ N(0, sigma^2) (absolute stddev; init normal) or Glorot-uniform
    (init glorot), W2 Glorot-uniform, never rescaled. Drawn with numpy from
    the run's seed, so a run starts from the same weights on every backend."""
    rng = np.random.default_rng(run.seed)
    h = run.width
    if run.init == "normal":
        w1 = rng.normal(0.0, run.sigma, size=(input_dim, h))
    else:
        limit = np.sqrt(6.0 / (input_dim + h))
        w1 = rng.uniform(-limit, limit, size=(input_dim, h))
    limit = np.sqrt(6.0 / (h + num_classes))
    w2 = rng.uniform(-limit, limit, size=(h, num_classes))
    return w1.astype(np.float32), w2.astype(np.float32)


class Trainer:
    """What the training loop needs of a trainer; data x (N, ...) is shared by
    the members, labels y are (R, N) (shuffled labels differ per member)."""

    members: int
    # Hidden units whose activity evaluate() reports (PackedMLP: its width); 0: not measured.
    hidden_units: int = 0

    loss: PaperLoss  # set before the first step (it may depend on the initial logits)

    def __init__(self, learning_rate, batch_size: int, x_train, y_train, x_test, y_test):
        # one learning rate per member (a float: the same for all)
        self.lr = np.broadcast_to(np.asarray(learning_rate, np.float32), (self.members,))
        self.batch = int(batch_size)
        self.n = len(x_train)
        self.full_steps, self.tail = divmod(self.n, self.batch)
        self.steps_per_epoch = self.full_steps + (1 if self.tail else 0)
        self.data = {
            "train": (ops.convert_to_tensor(x_train), ops.convert_to_tensor(np.asarray(y_train, np.int32))),
            "test": (ops.convert_to_tensor(x_test), ops.convert_to_tensor(np.asarray(y_test, np.int32))),
        }
        self._steps = backend.compile(self._steps_fn)
        self._tail = backend.compile(self._tail_fn)
        self._eval = backend.compile(self._eval_fn)

    # --- the state: a list of arrays ---------------------------------------
    def get_state(self) -> list[np.ndarray]:
        return [np.asarray(ops.convert_to_numpy(w)) for w in self.state]

    def set_state(self, arrays: list[np.ndarray]) -> None:
        self.state = [ops.convert_to_tensor(a) for a in arrays]

    # --- training ------------------------------------------------------------
    def step(self, state, x, y, idx, lr):
        raise NotImplementedError

    def _steps_fn(self, state, x, y, order, lr, start, stop):
        # order: (R, full_steps, B) minibatch indices of this epoch
        def body(i, s):
            return self.step(s, x, y, ops.take(order, i, axis=1), lr)

        return ops.fori_loop(start, stop, body, state)

    def _tail_fn(self, state, x, y, idx, lr):
        return self.step(state, x, y, idx, lr)

    def run_steps(self, order: np.ndarray, active: np.ndarray, start: int, stop: int) -> None:
        """Full minibatches ``start`` to ``stop`` of the epoch whose example
        order is ``order`` (R, N); the last partial batch when ``stop`` is
        past the full ones."""
        x, y = self.data["train"]
        lr = ops.convert_to_tensor(np.where(active, self.lr, 0.0).astype(np.float32))
        n_full = self.full_steps * self.batch
        if start < min(stop, self.full_steps):
            full = ops.convert_to_tensor(order[:, :n_full].reshape(len(order), self.full_steps, self.batch))
            self.state = self._steps(self.state, x, y, full, lr, np.int32(start), np.int32(min(stop, self.full_steps)))
        if self.tail and start <= self.full_steps < stop:
            self.state = self._tail(self.state, x, y, ops.convert_to_tensor(order[:, n_full:]), lr)

    # --- evaluation ----------------------------------------------------------
    def forward(self, state, x):
        """(representation (R, C, H) or None, logits (R, C, K)) of a chunk."""
        raise NotImplementedError

    def _chunk_sums(self, state, x, y):
        rep, z = self.forward(state, x)
        y = ops.broadcast_to(y, ops.shape(z)[:-1])
        losses = self.loss.per_example(y, z)
        correct = ops.cast(ops.equal(ops.cast(ops.argmax(z, axis=-1), "int32"), y), "float32")
        # Per hidden unit, its largest |activation| on the chunk (0: the unit is dead on it).
        if rep is not None:
            peak = ops.max(ops.abs(rep), axis=1)
        else:
            peak = ops.ones((ops.shape(z)[0], 1))
        return ops.sum(losses, axis=1), ops.sum(correct, axis=1), peak

    def _eval_fn(self, state, x, y):
        n = x.shape[0]
        full, tail = divmod(n, EVAL_CHUNK)
        rest = tuple(x.shape[1:])

        def chunk(start, size):
            xs = ops.slice(x, (start,) + (0,) * len(rest), (size,) + rest)
            ys = ops.slice(y, (0, start), (y.shape[0], size))
            return self._chunk_sums(state, xs, ys)

        r = y.shape[0]
        acc = (ops.zeros((r,)), ops.zeros((r,)), ops.zeros((r, max(self.hidden_units, 1))))

        if full:
            acc = ops.fori_loop(0, full, lambda i, a: _merge(a, chunk(i * EVAL_CHUNK, EVAL_CHUNK)), acc)
        if tail:
            acc = _merge(acc, chunk(full * EVAL_CHUNK, tail))
        return acc

    def evaluate(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per member: mean loss, accuracy over the whole split, and the
        fraction of hidden units active (non-zero activation; ReLU: positive
        pre-activation) on at least one example of the split: 0 when every
        unit is dead, NaN for a trainer without measured hidden units."""
        x, y = self.data[split]
        loss_sum, correct, peak = (
            np.asarray(ops.convert_to_numpy(a), np.float64) for a in self._eval(self.state, x, y)
        )
        n = x.shape[0]
        if self.hidden_units:
            active = np.mean(peak > 0, axis=1)
        else:
            active = np.full(len(peak), np.nan)
        return loss_sum / n, correct / n, active

    def logit_rms(self) -> np.ndarray:
        """Per member, the root-mean-square of the logits on the training set
        (at initialization: the scale loss_scaling 'output' divides out)."""
        x = self.data["train"][0]
        total = 0.0
        for i in range(0, self.n, EVAL_CHUNK):
            _, z = self.forward(self.state, x[i : i + EVAL_CHUNK])
            total = total + np.sum(np.square(np.asarray(ops.convert_to_numpy(z), np.float64)), axis=(1, 2))
        return np.sqrt(total / (self.n * z.shape[-1]))

    def set_loss(self, runs) -> np.ndarray:
        """Set the pack's loss (and, for the MLP, W1's learning-rate factor)
        from each member's initial logit RMS alpha, which it returns
        (loss_scaling and first_layer_step need it: losses.py)."""
        alpha = self.logit_rms()
        self.loss = losses.build(runs[0], alpha.reshape(-1, 1, 1).astype(np.float32))
        return alpha

    def keras_model(self, member: int) -> keras.Model:
        """A Keras model holding member ``member``'s weights (to save them)."""
        raise NotImplementedError


def _merge(a, s):
    return (a[0] + s[0], a[1] + s[1], ops.maximum(a[2], s[2]))


class PackedMLP(Trainer):
    """R MLPs ``z = W2 phi(W1 x)`` trained together (see the module docstring)."""

    def __init__(self, runs, num_classes: int, x_train, y_train, x_test, y_test):
        first = runs[0]
        self.runs, self.members = runs, len(runs)
        self.activation = first.activation
        self.input_shape = tuple(x_train.shape[1:])
        x_train = np.reshape(x_train, (len(x_train), -1))
        x_test = np.reshape(x_test, (len(x_test), -1))
        self.input_dim, self.num_classes = x_train.shape[1], num_classes
        self.hidden_units = first.width
        super().__init__([r.learning_rate for r in runs], first.batch_size, x_train, y_train, x_test, y_test)
        # W1's learning rate over W2's, per member (set before the first step,
        # like the loss: first_layer_step compensated needs the initial logits)
        self.first_layer_factor = np.ones(self.members, np.float32)
        w1, w2 = zip(*(mlp_init(r, self.input_dim, num_classes) for r in runs))
        # W1 at initialization, kept (not saved: mlp_init redraws it from the
        # seeds, also on resume) for how far each member's W1 has moved.
        self.initial_w1 = np.stack(w1)
        self._initial_w1_norm = np.sqrt(np.einsum("rdh,rdh->r", self.initial_w1, self.initial_w1, dtype=np.float64))
        self.set_state([self.initial_w1, np.stack(w2)])

    def step(self, state, x, y, idx, lr):
        w1, w2 = state
        xb = ops.take(x, idx, axis=0)  # (R, B, D): each member its own minibatch
        yb = ops.take_along_axis(y, idx, axis=1)  # (R, B)
        h = ops.einsum("rbd,rdh->rbh", xb, w1)
        r = models.ACTIVATIONS[self.activation](h)
        z = ops.einsum("rbh,rhk->rbk", r, w2)
        # d(mean loss)/dz times the member's learning rate: scaling the small
        # (R, B, K) factor, not the (R, D, H) gradient, keeps the update one pass.
        scale = ops.reshape(lr, (-1, 1, 1)) / idx.shape[-1]
        delta = self.loss.logit_gradient(yb, z) * scale
        e = ops.einsum("rbk,rhk->rbh", delta, w2) * models.activation_derivative(self.activation, h)
        e = e * ops.reshape(ops.convert_to_tensor(self.first_layer_factor, "float32"), (-1, 1, 1))
        return [w1 - ops.einsum("rbd,rbh->rdh", xb, e), w2 - ops.einsum("rbh,rbk->rhk", r, delta)]

    def set_loss(self, runs) -> np.ndarray:
        alpha = super().set_loss(runs)
        self.first_layer_factor = np.array([losses.first_layer_factor(r, a) for r, a in zip(runs, alpha)], np.float32)
        return alpha

    def forward(self, state, x):
        w1, w2 = state
        r = models.ACTIVATIONS[self.activation](ops.einsum("bd,rdh->rbh", x, w1))
        return r, ops.einsum("rbh,rhk->rbk", r, w2)

    def member_parts(self, member: int, x: np.ndarray) -> dict:
        """pre_activation, representation and logits of one member on ``x``
        (numpy, in chunks), for the measures."""
        w1, w2 = (np.asarray(ops.convert_to_numpy(w[member])) for w in self.state)
        x = np.reshape(x, (len(x), -1))
        pre = np.empty((len(x), w1.shape[1]), dtype=np.float32)
        rep = np.empty_like(pre)
        for i in range(0, len(x), 4096):  # in chunks: no whole-set temporaries
            pre[i : i + 4096] = ops.convert_to_numpy(ops.matmul(x[i : i + 4096], w1))
            rep[i : i + 4096] = ops.convert_to_numpy(models.ACTIVATIONS[self.activation](pre[i : i + 4096]))
        return {"x": x, "pre_activation": pre, "representation": rep, "logits": rep @ w2, "w1": w1, "w2": w2}

    def w1_relative_change(self, member: int, w1: np.ndarray | None = None) -> float:
        """||W1 - W1(0)|| / ||W1(0)|| (Frobenius) of member ``member`` (its
        current W1, or ``w1``): how far training moved the first layer."""
        if w1 is None:
            w1 = np.asarray(ops.convert_to_numpy(self.state[0][member]))
        change = np.asarray(w1, np.float64) - self.initial_w1[member]
        return float(np.sqrt(np.einsum("dh,dh->", change, change)) / self._initial_w1_norm[member])

    def keras_model(self, member: int) -> keras.Model:
        run = self.runs[member]
        model = models.mlp(self.input_shape, self.num_classes, run.width, run.activation, run.init, run.sigma or 1.0)
        model.set_weights(self.get_state_member(member))
        return model

    def get_state_member(self, member: int) -> list[np.ndarray]:
        return [np.asarray(ops.convert_to_numpy(w[member])) for w in self.state]


class SoloModel(Trainer):
    """One run of any Keras model, gradients by autodiff."""

    members = 1

    def __init__(self, model: keras.Model, run, x_train, y_train, x_test, y_test):
        self.model = model
        self.n_trainable = len(model.trainable_variables)
        super().__init__(run.learning_rate, run.batch_size, x_train, y_train, x_test, y_test)
        self.set_state([ops.convert_to_numpy(v.value) for v in self._variables()])

        def loss_fn(trainable, non_trainable, xb, yb):
            z, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
            return ops.mean(self.loss.per_example(yb, z)), non_trainable

        self._value_and_grad = backend.value_and_grad(loss_fn)

    def _variables(self):
        return [*self.model.trainable_variables, *self.model.non_trainable_variables]

    def step(self, state, x, y, idx, lr):
        trainable, non_trainable = state[: self.n_trainable], state[self.n_trainable :]
        xb = ops.take(x, idx[0], axis=0)
        yb = ops.take(y[0], idx[0], axis=0)
        _, non_trainable, grads = self._value_and_grad(trainable, non_trainable, xb, yb)
        return [w - lr[0] * g for w, g in zip(trainable, grads)] + list(non_trainable)

    def forward(self, state, x):
        trainable, non_trainable = state[: self.n_trainable], state[self.n_trainable :]
        z, _ = self.model.stateless_call(trainable, non_trainable, x, training=False)
        return None, ops.expand_dims(z, 0)

    def keras_model(self, member: int = 0) -> keras.Model:
        for variable, value in zip(self._variables(), self.state):
            # a copy: Keras' JAX predict donates variable buffers, which must not be ours
            variable.assign(np.array(ops.convert_to_numpy(value)))
        return self.model
