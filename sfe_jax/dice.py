"""DiCE: the magic box and the surrogate of a stochastic computation graph whose every derivative is unbiased."""

from sfe_jax._src.dice import magic_box as magic_box
from sfe_jax._src.dice import surrogate as surrogate

__all__ = ("magic_box", "surrogate")
