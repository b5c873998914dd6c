"""The Gaussian cost functions of ../shared/reference/closed_forms.md, Section 1, at mu = 1, sigma = 1.

Each row: the cost function, k, exact dF/dmu, dF/dsigma, and single-sample variances of the score function
(SF), score function with the optimal constant baseline (SF*), pathwise (PW) and coupled measure-valued (MVD)
estimators, for (mu, sigma).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Row(NamedTuple):
  name: str
  k: float
  f: Callable
  grad: tuple
  var_sf: tuple
  var_pw: tuple
  var_sf_opt: tuple
  var_mvd: tuple


def _square(k):
  return lambda x: jnp.sum((x - k) ** 2)


def _exp(k):
  return lambda x: jnp.sum(jnp.exp(-k * x**2))


def _cos(k):
  return lambda x: jnp.sum(jnp.cos(k * x))


ROWS = (
  Row("(x-k)^2", -3.0, _square(-3.0), (8, 2), (495, 1546), (4, 72), (134, 664), (17.4873, 68)),
  Row("(x-k)^2", 0.0, _square(0.0), (2, 2), (30, 136), (4, 12), (14, 64), (1.09296, 8)),
  Row("(x-k)^2", 3.0, _square(3.0), (-4, 2), (87, 346), (4, 24), (38, 184), (4.37183, 20)),
  Row(
    "exp(-kx^2)",
    0.1,
    _exp(0.1),
    (-0.139980, -0.116650),
    (0.563532, 0.935384),
    (0.0162902, 0.0277700),
    (0.0404677, 0.140991),
    (0.00250909, 0.0219705),
  ),
  Row(
    "exp(-kx^2)",
    1.0,
    _exp(1.0),
    (-0.275793, -0.091931),
    (0.175750, 0.176690),
    (0.211723, 0.175731),
    (0.0722217, 0.112784),
    (0.0125676, 0.0706647),
  ),
  Row(
    "exp(-kx^2)",
    10.0,
    _exp(10.0),
    (-0.129090, -0.006147),
    (0.0769404, 0.0090346),
    (0.941629, 0.892046),
    (0.0601966, 0.00873908),
    (0.0206558, 0.116732),
  ),
  Row(
    "cos(kx)",
    0.5,
    _cos(0.5),
    (-0.211546, -0.193616),
    (0.455248, 0.798658),
    (0.0392846, 0.0875129),
    (0.117864, 0.460102),
    (0.00827547, 0.0652662),
  ),
  Row(
    "cos(kx)",
    2.0,
    _cos(2.0),
    (-0.246120, 0.225277),
    (0.441069, 0.927981),
    (1.93986, 1.94267),
    (0.412523, 0.921637),
    (0.224083, 0.727427),
  ),
)

IDS = [f"{r.name}-k={r.k}" for r in ROWS]

PARAMS = {"loc": jnp.asarray(1.0), "scale": jnp.asarray(1.0)}


def loc_scale_columns(grads):
  """Repeated estimates {"loc": (R,), "scale": (R,)} as an (R, 2) array, columns (mu, sigma) as in ROWS."""
  return np.stack([np.asarray(grads["loc"]), np.asarray(grads["scale"])], axis=1)


def dist_builder(params):
  import distrax

  return distrax.Normal(params["loc"], params["scale"])
