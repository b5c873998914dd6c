"""What the RL suite measures: the configuration, CartPole, the policy and critic networks, the rollouts."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp

import sfe_jax as sfe
from benchmarks import suite

SUITE = "rl"
ENV_NAME = "CartPole-v1"
METHODS = ("REINFORCE + leave-one-out", "REINFORCE + value baseline", "PPO")
SLUGS = {"REINFORCE + leave-one-out": "reinforce_loo", "REINFORCE + value baseline": "reinforce_value", "PPO": "ppo"}
ESTIMATORS = ("REINFORCE", "REINFORCE + leave-one-out", "REINFORCE + value", "actor-critic (GAE)", "PPO (first step)")
LEAVE_ONE_OUT = sfe.baselines.leave_one_out()
MAX_GRAD_NORM = 0.5  # PPO's global gradient-norm clipping
VALUE_COEF = 0.5  # PPO's weight of the value loss
OVERHEAD_WARMUP = 3  # untimed rounds of the overhead cell before the timed ones


# ----------------------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RLConfig(suite.SuiteConfig):
  """What the CartPole benchmark measures.

  Attributes:
    methods: a subset of ``METHODS``.
    horizon: steps per rollout (and evaluation) episode, at most the environment's 500.
    hidden: width of the two hidden layers of the policy and the critic.
    gamma: the discount.
    lam: GAE's lambda (PPO, and the actor-critic / PPO rows of the variance table).
    reinforce_batch: episodes per REINFORCE update.
    reinforce_lr: Adam learning rate of the REINFORCE policies.
    critic_lr: Adam learning rate of the REINFORCE methods' critic.
    critic_steps: Adam steps of that critic per batch (after the policy's gradient is taken).
    ppo_batch: episodes per PPO rollout.
    ppo_epochs: passes over a rollout.
    ppo_minibatches: minibatches (of whole episodes) per epoch; must divide ``ppo_batch``.
    ppo_lr: Adam learning rate of PPO (policy and critic together).
    clip_eps: PPO's clipping radius.
    eval_every: updates (REINFORCE steps, PPO rollouts) between two evaluations.
    eval_episodes: episodes per evaluation.
    max_env_steps: the training budget per run, in (valid) environment steps.
    solve_return: the mean evaluation return that counts as solved; ``None``: ``horizon`` (every episode
      reaches the cap).
    after_solve: evaluations to keep training after the first solved one.
    variance_points: the fractions of the steps to solved at which the gradient variance is measured.
    variance_batch: episodes per batch of the variance measurement.
    num_repeats: independent batches per variance checkpoint.
    runs: independent training runs per method.
    overhead_batch: episodes in the batch of the overhead cell (``0``: no overhead cell).
    overhead_repeats: timed calls per function in the overhead cell.
  """

  methods: tuple[str, ...] = METHODS
  horizon: int = 500
  hidden: int = 64
  gamma: float = 0.99
  lam: float = 0.95
  reinforce_batch: int = 16
  reinforce_lr: float = 3e-3
  critic_lr: float = 3e-3
  critic_steps: int = 8
  ppo_batch: int = 16
  ppo_epochs: int = 4
  ppo_minibatches: int = 4
  ppo_lr: float = 3e-3
  clip_eps: float = 0.2
  eval_every: int = 5
  eval_episodes: int = 128
  max_env_steps: int = 2_000_000
  solve_return: float | None = None
  after_solve: int = 1
  variance_points: tuple[float, ...] = (0.0, 1 / 3, 2 / 3)
  variance_batch: int = 16
  num_repeats: int = 64
  runs: int = 1
  overhead_batch: int = 16
  overhead_repeats: int = 50

  def check(self) -> None:
    """Raises a ``ValueError`` naming the first setting that is out of range."""
    super().check()
    self.require_subset("methods", METHODS)
    if not 1 <= self.horizon <= 500:
      raise ValueError(f"horizon must be in [1, 500] (CartPole-v1's cap); got {self.horizon}.")
    if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
      raise ValueError(f"gamma and lam must lie in [0, 1]; got {self.gamma}, {self.lam}.")
    self.require_at_least(
      1,
      "hidden",
      "critic_steps",
      "reinforce_batch",
      "ppo_batch",
      "ppo_epochs",
      "ppo_minibatches",
      "eval_every",
      "eval_episodes",
      "max_env_steps",
      "runs",
      "overhead_repeats",
    )
    self.require_multiple("ppo_batch", of="ppo_minibatches")
    if self.variance_batch < 2 or self.num_repeats < 2:
      raise ValueError(
        f"variance_batch and num_repeats must be at least 2 (leave-one-out, a variance); got "
        f"{self.variance_batch}, {self.num_repeats}."
      )
    if not self.variance_points or any(not 0.0 <= p <= 1.0 for p in self.variance_points):
      raise ValueError(f"variance_points must be fractions in [0, 1]; got {self.variance_points}.")
    if self.overhead_batch < 0 or self.overhead_batch == 1:
      raise ValueError(f"overhead_batch must be 0 (no overhead cell) or at least 2; got {self.overhead_batch}.")
    if self.after_solve < 0:
      raise ValueError(f"after_solve must be non-negative; got {self.after_solve}.")
    if self.solve_return is not None and not 0 < self.solve_return <= self.horizon:
      raise ValueError(f"solve_return must be in (0, horizon = {self.horizon}]; got {self.solve_return}.")


PRESETS = {
  "quick": RLConfig(),
  "full": RLConfig(runs=5, num_repeats=128, variance_points=(0.0, 1 / 3, 2 / 3, 1.0)),
}


def selected_methods(config: RLConfig) -> list[str]:
  """The methods of ``config``, in the order of ``METHODS``."""
  return [m for m in METHODS if m in config.methods]


def solve_threshold(config: RLConfig) -> float:
  """The mean evaluation return that counts as solved: ``solve_return``, or ``horizon`` when it is ``None``."""
  return float(config.horizon if config.solve_return is None else config.solve_return)


# ----------------------------------------------------------------------------------------------------------
# Environment, networks, rollouts.
# ----------------------------------------------------------------------------------------------------------


def make_env():
  """``(env, env_params)`` of gymnax's CartPole-v1."""
  import gymnax  # noqa: PLC0415 (bench extra)

  return gymnax.make(ENV_NAME)


def init_mlp(key: jax.Array, sizes: tuple[int, ...], out_scale: float) -> list[dict[str, jax.Array]]:
  """Layers ``{"w", "b"}`` with ``N(0, 1/fan_in)`` weights (the last layer times ``out_scale``), zero biases."""
  layers = []
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    scale = (out_scale if i == len(sizes) - 2 else 1.0) / math.sqrt(n_in)
    layers.append(
      {"w": scale * jax.random.normal(k, (n_in, n_out), jnp.float32), "b": jnp.zeros((n_out,), jnp.float32)}
    )
  return layers


def mlp(layers: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
  """The MLP of ``layers``: tanh between the affine layers, none after the last."""
  for layer in layers[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"])
  return x @ layers[-1]["w"] + layers[-1]["b"]


def init_params(key: jax.Array, hidden: int) -> dict[str, Any]:
  """``{"policy": ..., "critic": ...}``: two MLPs ``4 -> hidden -> hidden -> (2 | 1)``."""
  kp, kc = jax.random.split(key)
  return {"policy": init_mlp(kp, (4, hidden, hidden, 2), 0.01), "critic": init_mlp(kc, (4, hidden, hidden, 1), 1.0)}


def policy(policy_params, obs: jax.Array) -> distrax.Categorical:
  """The policy ``pi(. | obs)``: a categorical over the 2 actions with the MLP's logits."""
  return distrax.Categorical(logits=mlp(policy_params, obs))


def value(critic_params, obs: jax.Array) -> jax.Array:
  """The critic's value of ``obs`` (the MLP's one output, squeezed)."""
  return mlp(critic_params, obs)[..., 0]


class Batch(NamedTuple):
  """``B`` episodes padded to ``T`` steps (arrays ``[B, T, ...]``)."""

  obs: jax.Array  # [B, T, 4] the state before each action
  actions: jax.Array  # [B, T]
  rewards: jax.Array  # [B, T]
  mask: jax.Array  # [B, T] 1 up to and including the step where the episode terminates
  last_obs: jax.Array  # [B, 4] the observation after step T - 1
  terminated: jax.Array  # [B, T] whether step t ended the episode (pole fell or cart out)


def rollout(env, env_params, policy_params, key: jax.Array, num_episodes: int, horizon: int) -> Batch:
  """``num_episodes`` fresh episodes of at most ``horizon`` steps, actions sampled from the policy (jittable)."""
  k_reset, k_steps = jax.random.split(key)
  obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, num_episodes), env_params)
  step_env = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))

  def step(carry, k):
    obs, state, alive = carry
    k_act, k_env = jax.random.split(k)
    action = policy(policy_params, obs).sample(seed=k_act)
    next_obs, next_state, reward, terminated, _ = step_env(
      jax.random.split(k_env, num_episodes), state, action, env_params
    )
    out = (obs, action, reward.astype(jnp.float32), alive, terminated)
    return (next_obs, next_state, alive & ~terminated), out

  alive = jnp.ones((num_episodes,), bool)
  (last_obs, _, _), (o, a, r, m, d) = jax.lax.scan(step, (obs, state, alive), jax.random.split(k_steps, horizon))
  swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731 [T, B] -> [B, T]
  return Batch(swap(o), swap(a), swap(r), swap(m).astype(jnp.float32), last_obs, swap(d))


def episode_returns(batch: Batch) -> jax.Array:
  """``[B]`` undiscounted returns (= episode lengths on CartPole)."""
  return jnp.sum(batch.rewards * batch.mask, axis=1)


def bootstrap_value(critic_params, batch: Batch) -> jax.Array:
  """``[B]``: the critic's value after step ``T - 1`` for episodes cut off by the horizon, 0 for the others."""
  cut = batch.mask[:, -1] * (1.0 - batch.terminated[:, -1].astype(jnp.float32))
  return value(critic_params, batch.last_obs) * cut


def log_probs(policy_params, batch: Batch) -> jax.Array:
  """``[B, T]``: the log-probabilities of the batch's actions under the policy."""
  return policy(policy_params, batch.obs).log_prob(batch.actions)
