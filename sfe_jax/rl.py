"""Policy gradients: REINFORCE, GAE, actor-critic, PPO, off-policy IS and V-trace on batched trajectories; distrax
policy helpers (tanh-squashed Normal, per-step log-probabilities); model-based pathwise and score-function
gradients through a known model."""

from sfe_jax._src.rl.losses import ActorCriticTerms as ActorCriticTerms
from sfe_jax._src.rl.losses import actor_critic_loss as actor_critic_loss
from sfe_jax._src.rl.losses import ppo_loss as ppo_loss
from sfe_jax._src.rl.losses import ppo_value_loss as ppo_value_loss
from sfe_jax._src.rl.losses import reinforce_loss as reinforce_loss
from sfe_jax._src.rl.model_based import ModelRollout as ModelRollout
from sfe_jax._src.rl.model_based import model_based_objective as model_based_objective
from sfe_jax._src.rl.model_based import model_rollout as model_rollout
from sfe_jax._src.rl.off_policy import VTrace as VTrace
from sfe_jax._src.rl.off_policy import importance_weights as importance_weights
from sfe_jax._src.rl.off_policy import off_policy_value as off_policy_value
from sfe_jax._src.rl.off_policy import vtrace as vtrace
from sfe_jax._src.rl.policies import TanhNormal as TanhNormal
from sfe_jax._src.rl.policies import action_entropies as action_entropies
from sfe_jax._src.rl.policies import action_log_probs as action_log_probs
from sfe_jax._src.rl.policies import sample_actions as sample_actions
from sfe_jax._src.rl.returns import discounted_returns as discounted_returns
from sfe_jax._src.rl.returns import gae as gae

__all__ = (
  "ActorCriticTerms",
  "ModelRollout",
  "TanhNormal",
  "VTrace",
  "action_entropies",
  "action_log_probs",
  "actor_critic_loss",
  "discounted_returns",
  "gae",
  "importance_weights",
  "model_based_objective",
  "model_rollout",
  "off_policy_value",
  "ppo_loss",
  "ppo_value_loss",
  "reinforce_loss",
  "sample_actions",
  "vtrace",
)
