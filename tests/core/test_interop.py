"""Params pytrees from equinox and flax.nnx: inexact-array leaves are differentiated, the rest passed through.

The README's equinox and flax examples train a model with ``sfe.expectation``; these tests check the same
patterns against exact gradients (the model's output distribution is a Normal, so ``E[f]`` has a closed form).
"""

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sfe_jax as sfe
from tests.helpers import assert_mean, flat1

KEY = jax.random.key(0)
X = jnp.array([0.5, -1.0])
TARGET = jnp.array([1.0, -0.5, 0.3])


def f(z):
  return jnp.sum((z - TARGET) ** 2)


class Encoder(eqx.Module):
  """x -> Normal(loc(x), scale(x)); holds a non-array leaf (the activation) and an integer array."""

  linear: eqx.nn.Linear
  activation: callable
  counter: jax.Array

  def __init__(self, key):
    self.linear = eqx.nn.Linear(2, 6, key=key)
    self.activation = jax.nn.tanh
    self.counter = jnp.zeros((), jnp.int32)

  def __call__(self, x):
    h = self.activation(self.linear(x))
    return distrax.Normal(h[:3], jax.nn.softplus(h[3:]) + 0.1)


def _exact_loss(model):
  dist = model(X)
  return jnp.sum((dist.loc - TARGET) ** 2 + dist.scale**2)


def test_equinox_module_as_params():
  model = Encoder(KEY)
  exact = eqx.filter_grad(_exact_loss)(model)
  est = sfe.score_function(sfe.baselines.leave_one_out())

  def one(key):
    _, grads, _ = sfe.value_and_grad(est, f, lambda m: m(X), model, key, num_samples=64)
    return grads

  grads = jax.jit(jax.vmap(one))(jax.random.split(KEY, 2000))
  # Non-array leaves get None, as eqx.filter_grad gives; the arrays have unbiased gradients.
  assert grads.activation is None and grads.counter is None
  estimate = [np.asarray(grads.linear.weight).reshape(2000, -1), np.asarray(grads.linear.bias)]
  assert_mean(
    np.concatenate(estimate, axis=1), flat1([exact.linear.weight, exact.linear.bias]), what="equinox module gradient"
  )


def test_equinox_training_with_expectation():
  model = Encoder(KEY)
  opt = optax.adam(0.05)
  opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))

  @eqx.filter_jit
  def step(model, opt_state, key):
    loss = lambda m: sfe.expectation(sfe.pathwise(), f, lambda mm: mm(X), m, key, num_samples=32)[0]
    grads = eqx.filter_grad(loss)(model)
    updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state

  start = float(_exact_loss(model))
  for i in range(200):
    model, opt_state = step(model, opt_state, jax.random.key(i))
  assert float(_exact_loss(model)) < 0.2 * start  # from 4.06 to 0.53 in 200 steps


class Policy(nnx.Module):
  def __init__(self, rngs):
    self.linear = nnx.Linear(2, 3, rngs=rngs)

  def __call__(self, x):
    return distrax.Categorical(logits=self.linear(x))


TABLE = jnp.array([1.0, -2.0, 0.5])


def test_flax_nnx_state_as_params_and_nnx_training():
  model = Policy(nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  build = lambda s: nnx.merge(graphdef, s)(X)
  exact = jax.grad(lambda s: jnp.sum(jax.nn.softmax(nnx.merge(graphdef, s).linear(X)) * TABLE))(state)
  est = sfe.score_function(sfe.baselines.leave_one_out())
  one = lambda k: sfe.value_and_grad(est, lambda c: TABLE[c], build, state, k, num_samples=32)[1]
  grads = jax.jit(jax.vmap(one))(jax.random.split(KEY, 2000))
  leaves = [np.asarray(g).reshape(2000, -1) for g in jax.tree.leaves(grads)]
  assert_mean(np.concatenate(leaves, axis=1), flat1(exact), what="flax nnx state gradient")

  # Training the module itself with nnx.Optimizer: E[table[c]] falls towards its minimum, -2.
  optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, key):
    loss = lambda m: sfe.expectation(est, lambda c: TABLE[c], lambda mm: mm(X), m, key, num_samples=32)[0]
    optimizer.update(model, nnx.grad(loss)(model))

  for i in range(100):
    step(model, optimizer, jax.random.key(i))
  probs = jax.nn.softmax(model.linear(X))
  assert float(probs @ TABLE) < -1.8
