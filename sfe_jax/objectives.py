"""Objectives that are not ``E[f]``: the K-sample importance-weighted bounds and DiCE surrogates.

* :func:`iwae`, :func:`dreg`, :func:`vimco`: the K-sample bound ``L_K`` and its gradient, run by
  :func:`value_and_grad` and :func:`surrogate` (an :class:`Objective` is not an ``sfe.Estimator``: estimator
  combinators refuse it, and ``sfe.diagnostics`` reports its value as the bound).
* :func:`dice` and :func:`magic_box`: the DiCE surrogate of a stochastic computation graph, every derivative of
  which is an unbiased estimate.
"""

from sfe_jax._src.core.types import Objective as Objective
from sfe_jax._src.objectives.dice import magic_box as magic_box
from sfe_jax._src.objectives.dice import surrogate as dice
from sfe_jax._src.objectives.multi_sample import dreg as dreg
from sfe_jax._src.objectives.multi_sample import iwae as iwae
from sfe_jax._src.objectives.multi_sample import surrogate as surrogate
from sfe_jax._src.objectives.multi_sample import value_and_grad as value_and_grad
from sfe_jax._src.objectives.multi_sample import vimco as vimco

__all__ = ("Objective", "dice", "dreg", "iwae", "magic_box", "surrogate", "value_and_grad", "vimco")
