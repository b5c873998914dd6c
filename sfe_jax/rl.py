"""Policy-gradient estimators on batched trajectories: REINFORCE, GAE, actor-critic, PPO, off-policy IS."""

from sfe_jax._src.rl import ActorCriticTerms as ActorCriticTerms
from sfe_jax._src.rl import actor_critic_loss as actor_critic_loss
from sfe_jax._src.rl import discounted_returns as discounted_returns
from sfe_jax._src.rl import gae as gae
from sfe_jax._src.rl import importance_weights as importance_weights
from sfe_jax._src.rl import off_policy_value as off_policy_value
from sfe_jax._src.rl import ppo_loss as ppo_loss
from sfe_jax._src.rl import ppo_value_loss as ppo_value_loss
from sfe_jax._src.rl import reinforce_loss as reinforce_loss

__all__ = (
    "ActorCriticTerms",
    "actor_critic_loss",
    "discounted_returns",
    "gae",
    "importance_weights",
    "off_policy_value",
    "ppo_loss",
    "ppo_value_loss",
    "reinforce_loss",
)
