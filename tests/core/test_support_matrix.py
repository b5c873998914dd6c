"""The support matrix: every estimator on every distribution class of distrax, TFP's JAX substrate and numpyro.

Each cell is accepted or refused. An accepted cell of an unbiased estimator is checked against the exact value
and gradient (closed forms for the continuous families, an independent enumeration for the discrete ones)
within 5 standard errors; the biased relaxations are checked to give, on TFP's and numpyro's distributions, the
very numbers they give on distrax's (same key), and straight-through's value is checked unbiased. A refused cell
raises a ``TypeError`` at trace time that names the distribution, or the encoding to use instead.

``test_readme_shows_the_matrix`` regenerates the table and compares it with the README's copy (run with
``SFE_WRITE_README=1`` to rewrite it).
"""

import functools
import os
import pathlib
import re
from collections.abc import Callable
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from tensorflow_probability.substrates import jax as tfp

import sfe_jax as sfe
from tests.helpers import (
  assert_mean,
  bernoulli_support,
  categorical_support,
  enumerate_expectation,
  flat,
  flat1,
  smallest_num_samples,
)

tfd = tfp.distributions
KEY = jax.random.key(0)
R = 2000
README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _control(cp, z):
  return cp["a"] * jnp.sum(jnp.tanh(z))


ESTIMATORS = {
  "score_function": sfe.score_function(sfe.baselines.leave_one_out()),
  "pathwise": sfe.pathwise(),
  "measure_valued": sfe.measure_valued(),
  "delta_method": sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method()),
  "enumerate": sfe.enumerate(),
  "arm": sfe.arm(),
  "disarm": sfe.disarm(),
  "relax": sfe.relax(_control, {"a": jnp.float32(0.3)}),
  "unordered_set": sfe.unordered_set(),
  "rebar": sfe.rebar(),
  "gumbel_softmax": sfe.gumbel_softmax(0.5),
  "straight_through": sfe.straight_through(),
}
HEADERS = {
  "score_function": "SF",
  "pathwise": "PW",
  "measure_valued": "MVD",
  "delta_method": "SF+DM",
  "enumerate": "enum",
  "arm": "ARM",
  "disarm": "DisARM",
  "relax": "RELAX",
  "unordered_set": "set",
  "rebar": "REBAR",
  "gumbel_softmax": "Gumbel",
  "straight_through": "ST",
}
BIASED = ("gumbel_softmax",)  # straight_through is unbiased for the multilinear f used here


class Row(NamedTuple):
  label: str
  build: Callable
  params: dict
  f: Callable
  exact: Callable  # exact(params) = E[f], differentiable
  reference: str | None = None  # the distrax row with the same samples, for the biased relaxations


# Continuous rows: f = sum(W * (x - C)^2) over one sample, so E[f] = sum(W * ((mean - C)^2 + variance)).
W = jnp.array([1.0, 0.5])
C = jnp.array([0.3, -0.2])
F_CONT = lambda x: jnp.sum(W * (jnp.reshape(x, (-1,)) - C) ** 2)  # noqa: E731
GAUSS = {"loc": jnp.array([0.2, -0.4]), "scale": jnp.array([1.0, 0.7])}
TRI = {"loc": jnp.array([0.2, -0.4]), "tril": jnp.array([[1.0, 0.0], [0.4, 0.7]])}
GAMMA = {"a": jnp.array([2.0, 3.5]), "b": jnp.array([1.5, 2.0])}


def _moments_exact(mean_var):
  def exact(p):
    mean, var = mean_var(p)
    return jnp.sum(W * ((mean - C) ** 2 + var))

  return exact


GAUSS_EXACT = _moments_exact(lambda p: (p["loc"], p["scale"] ** 2))
TRI_EXACT = _moments_exact(lambda p: (p["loc"], jnp.sum(p["tril"] ** 2, axis=1)))
GAMMA_EXACT = _moments_exact(lambda p: (p["a"] / p["b"], p["a"] / p["b"] ** 2))

CONTINUOUS = [
  Row("distrax.Normal", lambda p: distrax.Normal(p["loc"], p["scale"]), GAUSS, F_CONT, GAUSS_EXACT),
  Row(
    "distrax.MultivariateNormalDiag",
    lambda p: distrax.MultivariateNormalDiag(p["loc"], p["scale"]),
    GAUSS,
    F_CONT,
    GAUSS_EXACT,
  ),
  Row(
    "distrax.Independent(Normal)",
    lambda p: distrax.Independent(distrax.Normal(p["loc"], p["scale"]), 1),
    GAUSS,
    F_CONT,
    GAUSS_EXACT,
  ),
  Row(
    "distrax.MultivariateNormalTri",
    lambda p: distrax.MultivariateNormalTri(p["loc"], p["tril"]),
    TRI,
    F_CONT,
    TRI_EXACT,
  ),
  Row("distrax.Gamma", lambda p: distrax.Gamma(p["a"], p["b"]), GAMMA, F_CONT, GAMMA_EXACT),
  Row("tfp.Normal", lambda p: tfd.Normal(p["loc"], p["scale"]), GAUSS, F_CONT, GAUSS_EXACT),
  Row(
    "tfp.MultivariateNormalDiag", lambda p: tfd.MultivariateNormalDiag(p["loc"], p["scale"]), GAUSS, F_CONT, GAUSS_EXACT
  ),
  Row("tfp.MultivariateNormalTriL", lambda p: tfd.MultivariateNormalTriL(p["loc"], p["tril"]), TRI, F_CONT, TRI_EXACT),
  Row("tfp.Gamma", lambda p: tfd.Gamma(p["a"], p["b"]), GAMMA, F_CONT, GAMMA_EXACT),
  Row("numpyro.Normal", lambda p: nd.Normal(p["loc"], p["scale"]), GAUSS, F_CONT, GAUSS_EXACT),
  Row("numpyro.Normal.to_event(1)", lambda p: nd.Normal(p["loc"], p["scale"]).to_event(1), GAUSS, F_CONT, GAUSS_EXACT),
  Row(
    "numpyro.MultivariateNormal",
    lambda p: nd.MultivariateNormal(p["loc"], scale_tril=p["tril"]),
    TRI,
    F_CONT,
    TRI_EXACT,
  ),
  Row("numpyro.Gamma", lambda p: nd.Gamma(p["a"], p["b"]), GAMMA, F_CONT, GAMMA_EXACT),
]

# Discrete rows: f is multilinear in the (one-hot) variables.
BITS = {"logits": jnp.array([0.5, -1.0, 2.0])}
CATS = {"logits": jnp.array([[0.5, -1.0, 0.2], [0.0, 1.0, -0.3]])}
WB = jnp.array([1.0, -2.0, 0.5])
TC = jnp.array([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]])
F_BITS = lambda b: jnp.sum(WB * b) + 1.5 * b[0] * b[2]  # noqa: E731
F_ONE_HOT = lambda x: jnp.sum(TC * x) + (x[0] @ TC[1]) * (x[1] @ TC[0])  # noqa: E731
F_INDEX = lambda c: F_ONE_HOT(jax.nn.one_hot(c, 3))  # noqa: E731


def _bits_exact(build):
  return lambda p: enumerate_expectation(F_BITS, build, p, bernoulli_support((3,)))


def _index_exact(build):
  return lambda p: enumerate_expectation(F_INDEX, build, p, categorical_support((2,), 3))


def _one_hot_exact(build):
  support = np.eye(3, dtype=np.int32)[categorical_support((2,), 3)]
  return lambda p: enumerate_expectation(F_ONE_HOT, build, p, support)


def _discrete(label, build, kind, reference=None):
  params, f, exact = {
    "bits": (BITS, F_BITS, _bits_exact),
    "index": (CATS, F_INDEX, _index_exact),
    "one_hot": (CATS, F_ONE_HOT, _one_hot_exact),
  }[kind]
  return Row(label, build, params, f, exact(build), reference)


F32 = jnp.float32
DISCRETE = [
  _discrete("distrax.Bernoulli", lambda p: distrax.Bernoulli(logits=p["logits"]), "bits"),
  _discrete("distrax.Bernoulli(dtype=float32)", lambda p: distrax.Bernoulli(logits=p["logits"], dtype=F32), "bits"),
  _discrete("distrax.Categorical", lambda p: distrax.Categorical(logits=p["logits"]), "index"),
  _discrete("distrax.OneHotCategorical", lambda p: distrax.OneHotCategorical(logits=p["logits"]), "one_hot"),
  _discrete(
    "distrax.OneHotCategorical(dtype=float32)",
    lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=F32),
    "one_hot",
  ),
  _discrete("tfp.Bernoulli", lambda p: tfd.Bernoulli(logits=p["logits"]), "bits"),
  _discrete(
    "tfp.Bernoulli(dtype=float32)",
    lambda p: tfd.Bernoulli(logits=p["logits"], dtype=F32),
    "bits",
    reference="distrax.Bernoulli(dtype=float32)",
  ),
  _discrete("tfp.Categorical", lambda p: tfd.Categorical(logits=p["logits"]), "index"),
  _discrete(
    "tfp.OneHotCategorical(dtype=float32)",
    lambda p: tfd.OneHotCategorical(logits=p["logits"], dtype=F32),
    "one_hot",
    reference="distrax.OneHotCategorical(dtype=float32)",
  ),
  _discrete("numpyro.Bernoulli", lambda p: nd.Bernoulli(logits=p["logits"]), "bits"),
  _discrete("numpyro.Categorical", lambda p: nd.Categorical(logits=p["logits"]), "index"),
]
ROWS = {row.label: row for row in CONTINUOUS + DISCRETE}


def _num_samples(est, row):
  return smallest_num_samples(est, row.build, row.params, at_least=4)


@functools.cache
def accepts(est_name, label):
  """Whether the estimator accepts the row's distribution: a trace-time probe of the surrogate (nothing is
  computed; every refusal is raised there, before any derivative is taken), once per cell (test_cell and the
  README's matrix ask for the same cells). test_cell then runs ``value_and_grad`` on every accepted cell."""
  est, row = ESTIMATORS[est_name], ROWS[label]
  try:
    n = _num_samples(est, row)
    jax.eval_shape(lambda p: sfe.expectation(est, row.f, row.build, p, KEY, num_samples=n)[0], row.params)
  except TypeError as e:
    return False, str(e)
  return True, ""


def _assert_clear_refusal(label, message):
  """A refusal names the distribution's class, or the encoding (OneHotCategorical, a float dtype) to use."""
  cls = label.split("(")[0].split(".")[-1]
  assert re.search(rf"{cls}|OneHotCategorical|dtype", message), message


CELLS = [(e, label) for e in ESTIMATORS for label in ROWS]
# distrax's rows are what the rest of the suite tests every estimator on; by default this module checks, for
# TFP and numpyro, one row per family (test_readme_shows_the_matrix checks every refusal); `make test-full`
# every cell.
FAST_ROWS = (
  "tfp.Normal",
  "tfp.Bernoulli(dtype=float32)",
  "tfp.Categorical",
  "numpyro.Normal.to_event(1)",
  "numpyro.Bernoulli",
  "numpyro.Categorical",
  "numpyro.MultivariateNormal",
)
CELL_PARAMS = [
  pytest.param(e, label, id=f"{e}-{label}", marks=() if label in FAST_ROWS else pytest.mark.slow) for e, label in CELLS
]


def _estimates(est, row, n, key):
  def one(k):
    value, grads, _ = sfe.value_and_grad(est, row.f, row.build, row.params, k, num_samples=n)
    return value, grads

  return jax.jit(jax.vmap(one))(jax.random.split(key, R))


@pytest.mark.parametrize("est_name, label", CELL_PARAMS)
def test_cell(est_name, label):
  row, est = ROWS[label], ESTIMATORS[est_name]
  ok, message = accepts(est_name, label)
  if not ok:
    _assert_clear_refusal(label, message)
    return
  n = _num_samples(est, row)
  if est_name in BIASED:
    if row.reference is None:
      return  # the distrax row itself, compared with below by its TFP twin
    ref = ROWS[row.reference]
    got, expected = _estimates(est, row, n, KEY), _estimates(est, ref, n, KEY)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(expected[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat(got[1]), flat(expected[1]), rtol=1e-4, atol=1e-5)
    return
  values, grads = _estimates(est, row, n, KEY)
  exact_value, exact_grad = jax.value_and_grad(row.exact)(row.params)
  assert_mean(flat(grads), flat1(exact_grad), what=f"{est_name} gradient on {label}")
  assert_mean(np.asarray(values), exact_value, what=f"{est_name} value on {label}")


def matrix_markdown():
  """The support matrix as a Markdown table: ✓ unbiased and checked, ✓* biased by design, — refused (and each
  refusal checked to be a clear error)."""
  header = "| distribution | " + " | ".join(HEADERS[e] for e in ESTIMATORS) + " |"
  lines = [header, "| --- |" + " --- |" * len(ESTIMATORS)]
  for label in ROWS:
    marks = []
    for e in ESTIMATORS:
      ok, message = accepts(e, label)
      if not ok:
        _assert_clear_refusal(label, message)
      marks.append(("✓*" if e in BIASED else "✓") if ok else "—")
    lines.append(f"| `{label}` | " + " | ".join(marks) + " |")
  return "\n".join(lines)


def test_readme_shows_the_matrix():
  table = matrix_markdown()
  text = README.read_text()
  pattern = re.compile(r"(<!-- support-matrix -->\n)(.*?)(\n<!-- /support-matrix -->)", re.S)
  assert pattern.search(text), "README.md has no <!-- support-matrix --> section"
  if os.environ.get("SFE_WRITE_README"):
    README.write_text(pattern.sub(lambda m: m.group(1) + table + m.group(3), text))
    text = README.read_text()
  assert pattern.search(text).group(2) == table, (
    "The README's support matrix is out of date; regenerate it with SFE_WRITE_README=1 pytest "
    f"tests/core/test_support_matrix.py -k readme. Expected:\n{table}"
  )
