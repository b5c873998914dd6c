# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Off-policy evaluation: importance sampling and V-trace
#
# Off-policy (or offline) evaluation asks for the value of a *target* policy $\pi$ from episodes that a
# different *behaviour* policy $\mu$ logged. The score function's identity $\nabla p = p \nabla \log p$ has a
# sibling that moves an expectation from one distribution to another, $E_\pi[g] = E_\mu[g\,\pi/\mu]$; over an
# episode of $H$ steps the ratio is a product of per-step ratios
#
# $$\rho_t = \frac{\pi(a_t \mid s_t)}{\mu(a_t \mid s_t)}, \qquad W = \prod_{t=0}^{H-1} \rho_t,$$
#
# because the dynamics $P(s_{t+1} \mid s_t, a_t)$ cancel. `sfe.rl` computes four importance-sampling estimates
# of $J(\pi) = E_\pi[\sum_t \gamma^t r_t]$ from a batch of $B$ logged episodes with returns
# $R_b = \sum_t \gamma^t r_{bt}$, and the V-trace targets of IMPALA:
#
# | `sfe.rl.off_policy_value(..., estimator=)` | estimate | bias | variance |
# | --- | --- | --- | --- |
# | `"ordinary"` | $\frac1B \sum_b W_b R_b$ | none | grows exponentially with $H$ |
# | `"weighted"` | $\sum_b W_b R_b / \sum_b W_b$ | $O(1/B)$ | bounded by the rewards |
# | `"per_decision"` | $\frac1B \sum_b \sum_t \gamma^t r_{bt} \prod_{k \le t} \rho_{bk}$ | none | usually lower |
# | `"truncated"` | per-decision, $\min(\bar\rho, \rho_t)$ for $\rho_t$ | towards $\min(\bar\rho\mu, \pi)$ | bounded |
#
# `sfe.rl.vtrace` returns `VTrace(vs, pg_advantages)`: value targets $v_s$ that correct a critic $V$ with
# truncated, per-decision importance weights. This notebook builds a small MDP whose values are known exactly
# (dynamic programming), logs thousands of independent datasets from $\mu$, and measures the bias and the
# variance of every estimator against the horizon, with standard errors.

# %%
import os

QUICK = os.environ.get("SFE_JAX_NOTEBOOK_QUICK", "0") == "1"  # the test suite runs the quick settings

# %%
import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import sfe_jax as sfe

NUM_DATASETS = 2_000 if QUICK else 10_000  # independent logged datasets per horizon
EPISODES = 20  # episodes per dataset (B)
HORIZONS = (1, 2, 4, 8, 16, 32)
VTRACE_HORIZON = 8
VTRACE_EPISODES = 20_000 if QUICK else 100_000  # one large logged dataset for the V-trace targets
Z = 5.0  # a Monte Carlo mean agrees with an exact value when it lies within Z standard errors

# %% [markdown]
# ## A small MDP with exact values
#
# Three states, two actions, a start distribution $\rho_0$, rewards $r(s, a)$, transitions $P(s' \mid s, a)$,
# discount $\gamma = 0.9$ and a finite horizon $H$. For any action weights $w(a \mid s)$ (a policy, or the
# unnormalised weights we meet below) the finite-horizon values follow from the backward recursion
#
# $$V_H = 0, \qquad V_t(s) = \sum_a w(a \mid s) \Big[r(s, a) + \gamma \sum_{s'} P(s' \mid s, a)\, V_{t+1}(s')\Big],$$
#
# and $J = \sum_s \rho_0(s) V_0(s)$. This is the problem's set-up, a few lines of NumPy in float64. The target
# policy $\pi$ prefers the rewarding action in each state; the behaviour policy $\mu$ is uniform, so the
# per-step ratios are between $0.4$ and $1.6$.

# %%
GAMMA = 0.9
RHO0 = np.array([0.5, 0.3, 0.2])
REWARD = np.array([[0.0, 1.0], [0.5, 0.0], [1.0, 0.2]])  # r(s, a)
P = np.array(  # P[s, a, s']
  [
    [[0.8, 0.1, 0.1], [0.1, 0.6, 0.3]],
    [[0.2, 0.7, 0.1], [0.3, 0.1, 0.6]],
    [[0.5, 0.2, 0.3], [0.1, 0.3, 0.6]],
  ]
)
PI = np.array([[0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])  # target policy pi(a | s)
MU = np.full((3, 2), 0.5)  # behaviour policy mu(a | s)
NUM_STATES = 3


def dp_values(w, horizon):
  """[horizon, S] values V_t(s) of the action weights w[s, a] (float64)."""
  v = np.zeros((horizon + 1, NUM_STATES))
  for t in reversed(range(horizon)):
    v[t] = np.sum(w * (REWARD + GAMMA * P @ v[t + 1]), axis=1)
  return v[:horizon]


def dp_value(w, horizon):
  return float(RHO0 @ dp_values(w, horizon)[0])


for h in (1, 8, 32):
  print(f"H = {h:2d}: J(pi) = {dp_value(PI, h):.4f}, J(mu) = {dp_value(MU, h):.4f}")
assert np.isclose((PI / MU).min(), 0.4) and np.isclose((PI / MU).max(), 1.6)

# %% [markdown]
# ## Logging episodes from the behaviour policy
#
# An episode is a `lax.scan` over steps, a dataset a `vmap` over episodes, and the independent datasets another
# `vmap`. We log every dataset once at the longest horizon, $H = 32$, and evaluate shorter horizons on the
# first $H$ steps with a `mask` (the convention of every `sfe.rl` function: `[B, T]` arrays, `mask = 0` on
# steps past the end): an episode of $H$ steps is the start of a longer one, since the dynamics do not depend on
# time.


# %%
def log_episode(key, horizon):
  """One episode under mu: (states, actions, rewards), each [horizon]."""
  key0, key = jax.random.split(key)
  s0 = jax.random.categorical(key0, jnp.log(RHO0))

  def step(s, key_t):
    key_a, key_s = jax.random.split(key_t)
    a = jax.random.categorical(key_a, jnp.log(MU)[s])
    s_next = jax.random.categorical(key_s, jnp.log(P)[s, a])
    return s_next, (s, a, jnp.asarray(REWARD, jnp.float32)[s, a])

  return jax.lax.scan(step, s0, jax.random.split(key, horizon))[1]


@jax.jit
def log_datasets(key):
  """NUM_DATASETS independent datasets of EPISODES episodes: states, actions, rewards of shape [R, B, T]."""
  keys = jax.random.split(key, (NUM_DATASETS, EPISODES))
  return jax.vmap(jax.vmap(lambda k: log_episode(k, max(HORIZONS))))(keys)


states, actions, rewards = log_datasets(jax.random.key(0))
print("logged:", states.shape, "(datasets, episodes, steps)")

# %% [markdown]
# The estimators take the per-step log-probabilities of the logged actions under both policies.
# `sfe.rl.action_log_probs` turns a distrax policy evaluated on the `[B, T]` states into them, and
# `sfe.rl.importance_weights` into the ratios $\rho_t$ (1 on masked steps):


# %%
def log_probs(policy_table, states, actions):
  """[..., B, T] log-probabilities of the actions under the tabular policy `policy_table[s, a]`."""
  policy = distrax.Categorical(probs=jnp.asarray(policy_table, jnp.float32)[states])
  return sfe.rl.action_log_probs(policy, actions, batch_ndims=states.ndim)


first = np.s_[0, :3, :4]  # the first dataset: 3 episodes, 4 steps
mask4 = jnp.ones((3, 4))
rho = sfe.rl.importance_weights(
  log_probs(PI, states[first], actions[first]), log_probs(MU, states[first], actions[first]), mask4
)
print("actions:\n", actions[first], "\nratios rho_t:\n", np.asarray(rho, np.float64).round(2))
np.testing.assert_allclose(rho, (PI / MU)[states[first], actions[first]], rtol=1e-6)

# %% [markdown]
# ## Why importance sampling degrades with the horizon
#
# Each ratio has mean 1 under $\mu$, so $E_\mu[W] = 1$ at every horizon, but its second moment exceeds 1
# (here $E_\mu[\rho^2 \mid s] = \sum_a \pi^2 / \mu$ is 1.36, 1.16 and 1.04 in the three states) and the second
# moment of the product grows geometrically. The exact $E_\mu[W^2]$ is another small recursion,
# $E_\mu[W^2] = \rho_0^\top M^H \mathbf{1}$ with $M_{ss'} = \sum_a \frac{\pi(a|s)^2}{\mu(a|s)} P(s' \mid s, a)$. The
# usual effective sample size of $B$ weighted episodes, $(\sum_b W_b)^2 / \sum_b W_b^2$, estimates
# $B / E_\mu[W^2]$: at $H = 32$ a batch of 20 episodes is worth a tenth of an episode.

# %%
M = np.einsum("sa,sat->st", PI**2 / MU, P)
second_moment = {h: float(RHO0 @ np.linalg.matrix_power(M, h) @ np.ones(NUM_STATES)) for h in HORIZONS}
assert np.allclose((PI**2 / MU).sum(1), [1.36, 1.16, 1.04]) and 0.1 < EPISODES / second_moment[32] < 0.11
steps = jnp.arange(max(HORIZONS))
lp_pi, lp_mu = log_probs(PI, states, actions), log_probs(MU, states, actions)


@jax.jit
def episode_weights(h):
  """[R, B] episode weights W of the first h steps."""
  mask = jnp.broadcast_to(steps < h, states.shape).astype(jnp.float32)
  rho = jax.vmap(sfe.rl.importance_weights)(lp_pi, lp_mu, mask)  # [R, B, T]: vmap over the datasets
  return jnp.prod(rho, axis=-1)


mean_w, ess = {}, {}
for h in HORIZONS:
  w = episode_weights(h)
  ess[h] = np.asarray(jnp.sum(w, -1) ** 2 / jnp.sum(w**2, -1))  # per dataset
  flat = np.asarray(w, np.float64).ravel()
  mean_w[h] = (flat.mean(), flat.std(ddof=1) / np.sqrt(flat.size))
  print(
    f"H = {h:2d}: mean W = {mean_w[h][0]:.3f} +- {mean_w[h][1]:.3f}, exact E[W^2] = {second_moment[h]:8.2f}, "
    f"ESS of {EPISODES} episodes = {ess[h].mean():5.2f}"
  )
  assert abs(mean_w[h][0] - 1.0) < Z * mean_w[h][1]  # E_mu[W] = 1: the weights are unbiased
assert second_moment[32] > 100  # exact: 186
assert all(ess[a].mean() > ess[b].mean() for a, b in zip(HORIZONS, HORIZONS[1:]))  # shrinks with the horizon
assert ess[32].mean() < 0.25 * EPISODES  # measured: about 3 of 20

fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(HORIZONS, [EPISODES / max(1.0, second_moment[h]) for h in HORIZONS], "k--", label="$B / E_\\mu[W^2]$ (exact)")
ax.plot(HORIZONS, [ess[h].mean() for h in HORIZONS], "o-", label="measured ESS, mean over datasets")
ax.set(
  xscale="log",
  yscale="log",
  xlabel="horizon $H$",
  ylabel="effective sample size",
  title=f"ESS of {EPISODES} importance-weighted episodes",
)
ax.set_xticks(HORIZONS, [str(h) for h in HORIZONS])
ax.legend()
plt.show()

# %% [markdown]
# The measured ESS falls with the horizon but sits far above $B / E_\mu[W^2]$ at long horizons: $W$ is so
# heavy-tailed that a dataset of 20 episodes rarely contains the rare, huge weights that make up most of
# $E_\mu[W^2]$, and the ESS of the datasets that miss them is over-optimistic. That heavy tail is what makes the
# ordinary estimator's variance explode, and what makes its sample variance itself noisy.
#
# ## Six estimators against the horizon
#
# Per dataset we compute the four importance-sampling estimates of `sfe.rl.off_policy_value` and two V-trace
# estimates, the mean over episodes of the first target $v_0$. V-trace needs a critic; we give it the exact
# values $V^\mu_t(s)$ of the *behaviour* policy, which plain regression on the logged returns would learn
# (exact here, to separate the estimator from the critic's error). Without clipping
# (`clip_rho=None, clip_c=None`) the V-trace target is a per-decision importance-sampling estimate that uses
# the critic as a control variate: unbiased for any critic. With IMPALA's clipping ($\bar\rho = \bar c = 1$, the
# defaults) it is biased.
#
# Each estimator is jitted once: the horizon enters only through the `mask` and the critic's table.


# %%
def estimates(states, actions, rewards, mask, critic):
  """Every estimate of J(pi) from one dataset ([B, T] arrays); critic: [T, S] values V_t(s)."""
  lp_pi, lp_mu = log_probs(PI, states, actions), log_probs(MU, states, actions)
  out = {
    name: sfe.rl.off_policy_value(lp_pi, lp_mu, rewards, mask, GAMMA, name)  # clip_rho=1.0 for "truncated"
    for name in ("ordinary", "weighted", "per_decision", "truncated")
  }
  values = critic[jnp.arange(states.shape[1]), states]  # [B, T] critic values V_t(s_t)
  unclipped = sfe.rl.vtrace(lp_pi, lp_mu, rewards, values, mask, GAMMA, clip_rho=None, clip_c=None)
  clipped = sfe.rl.vtrace(lp_pi, lp_mu, rewards, values, mask, GAMMA)  # clip_rho = clip_c = 1
  out["vtrace_unclipped"] = jnp.mean(unclipped.vs[:, 0])
  out["vtrace_clipped"] = jnp.mean(clipped.vs[:, 0])
  return out


all_estimates = jax.jit(jax.vmap(estimates, in_axes=(0, 0, 0, None, None)))
NAMES = ("ordinary", "weighted", "per_decision", "truncated", "vtrace_unclipped", "vtrace_clipped")
LABELS = {
  "ordinary": "ordinary IS",
  "weighted": "weighted IS",
  "per_decision": "per-decision IS",
  "truncated": "truncated IS ($\\bar\\rho = 1$)",
  "vtrace_unclipped": "V-trace, no clipping",
  "vtrace_clipped": "V-trace ($\\bar\\rho = \\bar c = 1$)",
}

# %% [markdown]
# Two exact references besides $J(\pi)$. The truncated estimator's mean is the value of the *unnormalised*
# weights $\min(\bar\rho\mu, \pi)$ (same recursion, `dp_value(np.minimum(MU, PI), H)`). Clipped V-trace's mean
# follows from its backward form $v_t - V_t = \bar\rho_t \delta_t + \gamma c_t (v_{t+1} - V_{t+1})$ with
# $\delta_t = r_t + \gamma V_{t+1}(s_{t+1}) - V_t(s_t)$: with $\bar\rho = \bar c$ both truncated ratios weigh
# the action by $w = \mu \min(\bar\rho, \pi/\mu) = \min(\bar\rho\mu, \pi)$, so
# $E[v_t - V_t \mid s] = D_t(s)$ with
#
# $$D_t(s) = \sum_a w(a \mid s) \Big[r(s,a) - V_t(s)
#   + \gamma \sum_{s'} P(s' \mid s,a) \big(V_{t+1}(s') + D_{t+1}(s')\big)\Big].$$
#
# With $w = \pi$ (no clipping) the recursion gives $V_t + D_t = V^\pi_t$ for every critic $V$.


# %%
def expected_vtrace(critic, w, horizon):
  """[horizon, S] exact E[v_t | s_t = s] of V-trace with critic [horizon, S], ratios clipped to w / mu."""
  v = np.vstack([critic[:horizon], np.zeros((1, NUM_STATES))])
  d = np.zeros((horizon + 1, NUM_STATES))
  for t in reversed(range(horizon)):
    d[t] = np.sum(w * (REWARD - v[t][:, None] + GAMMA * P @ (v[t + 1] + d[t + 1])), axis=1)
  return v[:horizon] + d[:horizon]


TRUNCATED_W = np.minimum(MU, PI)  # min(rho_bar mu, pi) with rho_bar = 1
exact = {"pi": [], "mu": [], "truncated": [], "vtrace_clipped": []}
results = {name: [] for name in NAMES}  # per horizon: (mean, se, variance, variance se)
for h in HORIZONS:
  mask = (steps < h).astype(jnp.float32)[None, :].repeat(EPISODES, 0)
  v_mu = dp_values(MU, h)
  critic = np.zeros((max(HORIZONS), NUM_STATES))
  critic[:h] = v_mu
  est = all_estimates(states, actions, rewards, mask, jnp.asarray(critic, jnp.float32))
  for name in NAMES:
    x = np.asarray(est[name], np.float64)
    var, var_se = sfe.diagnostics.variance_and_std_error(x)
    results[name].append((x.mean(), x.std(ddof=1) / np.sqrt(x.size), float(var), float(var_se)))
  exact["pi"].append(dp_value(PI, h))
  exact["mu"].append(dp_value(MU, h))
  exact["truncated"].append(dp_value(TRUNCATED_W, h))
  exact["vtrace_clipped"].append(float(RHO0 @ expected_vtrace(v_mu, TRUNCATED_W, h)[0]))
  assert np.allclose(expected_vtrace(v_mu, PI, h), dp_values(PI, h))  # unclipped: E[v_t] = V^pi_t, any critic
results = {name: np.array(rows) for name, rows in results.items()}  # [len(HORIZONS), 4]
exact = {name: np.array(rows) for name, rows in exact.items()}

# %% [markdown]
# ### Bias
#
# The bias of each estimator is its mean over the independent datasets minus $J(\pi)$, with two standard
# errors as bars; the dashed lines are the exact biases of truncated IS and clipped V-trace from the recursions
# above.

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2))
for i, name in enumerate(NAMES):
  mean, se = results[name][:, 0], results[name][:, 1]
  ax.errorbar(
    np.array(HORIZONS) * (1 + 0.03 * (i - 2.5)),
    mean - exact["pi"],
    2 * se,
    fmt="o-",
    ms=4,
    capsize=2,
    label=LABELS[name],
  )
ax.plot(HORIZONS, exact["truncated"] - exact["pi"], "k--", lw=1, label="exact biases")
ax.plot(HORIZONS, exact["vtrace_clipped"] - exact["pi"], "k--", lw=1)
ax.axhline(0.0, color="grey", lw=0.8)
ax.set(
  xscale="log",
  xlabel="horizon $H$",
  ylabel="mean estimate $- J(\\pi)$",
  title=f"Bias ({NUM_DATASETS} datasets of {EPISODES} episodes)",
)
ax.set_xticks(HORIZONS, [str(h) for h in HORIZONS])
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# What the plot shows, and the cell below checks at every horizon:
#
# * **ordinary, per-decision and unclipped V-trace are unbiased**: their means lie within 5 standard errors of
#   $J(\pi)$;
# * **weighted IS is biased** towards the behaviour policy's value (with one episode it *is* the logged
#   return), by $O(1/B)$; at $H = 32$ its bias is more than 5 standard errors;
# * **truncation is biased, and exactly as predicted**: truncated IS and clipped V-trace agree with their own
#   exact means to within 5 standard errors, and are far from $J(\pi)$ at long horizons. The unnormalised
#   weights $\min(\mu, \pi)$ lose mass at every step (they keep 0.7, 0.8 and 0.9 of it in the three states),
#   so truncated IS estimates a value smaller than both $J(\mu)$ and $J(\pi)$; V-trace's critic fills in the
#   lost mass with $V^\mu$, which keeps its estimate between the two.

# %%
for i, h in enumerate(HORIZONS):
  z = {name: (results[name][i, 0] - exact["pi"][i]) / results[name][i, 1] for name in NAMES}
  print(f"H = {h:2d}: bias / se = " + ", ".join(f"{name} {z[name]:7.1f}" for name in NAMES))
  for name in ("ordinary", "per_decision", "vtrace_unclipped"):
    assert abs(z[name]) < Z, (h, name, z[name])
  for name in ("truncated", "vtrace_clipped"):
    assert abs(results[name][i, 0] - exact[name][i]) < Z * results[name][i, 1], (h, name)
assert (exact["pi"][-1] - results["weighted"][-1, 0]) > Z * results["weighted"][-1, 1]
assert exact["truncated"][-1] < exact["mu"][-1] < exact["vtrace_clipped"][-1] < exact["pi"][-1]
assert np.allclose(TRUNCATED_W.sum(1), [0.7, 0.8, 0.9])  # the mass min(mu, pi) keeps per step, by state
print(
  f"H = 32: J(pi) = {exact['pi'][-1]:.3f}, J(mu) = {exact['mu'][-1]:.3f}, truncated mean {exact['truncated'][-1]:.3f}"
)

# %% [markdown]
# ### Variance
#
# The variance of each estimator over the datasets, with its standard error from
# `sfe.diagnostics.variance_and_std_error` (which uses the measured kurtosis, so the bars stay honest for the
# heavy-tailed ordinary estimator).

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2))
for name in NAMES:
  var, var_se = results[name][:, 2], results[name][:, 3]
  ax.errorbar(HORIZONS, var, 2 * var_se, fmt="o-", ms=4, capsize=2, label=LABELS[name])
ax.set(
  xscale="log",
  yscale="log",
  xlabel="horizon $H$",
  ylabel="variance of the estimate",
  title=f"Variance ({EPISODES} episodes per dataset)",
)
ax.set_xticks(HORIZONS, [str(h) for h in HORIZONS])
ax.legend(fontsize=8)
plt.show()


# %% [markdown]
# The ordinary estimator's variance grows like $E_\mu[W^2]$, geometrically; per-decision weighting cuts it
# at every horizon from $H = 4$ on, by weighing early rewards with short products only; the critic of
# unclipped V-trace cuts it further, without bias. Weighted IS, truncated IS and clipped V-trace stay bounded.
# The checks, at the long horizons, where the ratios are large enough to hold with any seed (each difference
# larger than 3 of its standard errors). Those that involve the ordinary estimator stop at $H = 16$: at $H = 32$
# its sample variance is itself so heavy-tailed (note the error bar) that one run's number is not reliable.


# %%
def smaller(a, b, factor=1.0, i=-1):
  """Whether factor x the variance of `a` is below the variance of `b` at horizon index i, by 3 standard errors."""
  (va, sa), (vb, sb) = results[a][i, 2:], results[b][i, 2:]
  return vb - factor * va > 3 * np.hypot(factor * sa, sb)


ratio = lambda a, b: results[b][-1, 2] / results[a][-1, 2]  # noqa: E731
for name in NAMES:
  print(f"H = 32, {name:>16}: variance {results[name][-1, 2]:.4f} +- {results[name][-1, 3]:.4f}")
print(
  f"at H = 32: variance ratios ordinary / per-decision {ratio('per_decision', 'ordinary'):.0f}, "
  f"per-decision / weighted {ratio('weighted', 'per_decision'):.0f}, "
  f"per-decision / truncated {ratio('truncated', 'per_decision'):.0f}, "
  f"per-decision / unclipped V-trace {ratio('vtrace_unclipped', 'per_decision'):.0f}, "
  f"unclipped / clipped V-trace {ratio('vtrace_clipped', 'vtrace_unclipped'):.0f}"
)
H16 = HORIZONS.index(16)
for i in range(2, H16 + 1):  # H = 4 to 16 (at H = 1 per-decision and ordinary coincide)
  assert smaller("per_decision", "ordinary", i=i) and smaller("weighted", "ordinary", i=i)
assert smaller("weighted", "per_decision")
assert smaller("truncated", "per_decision", factor=10)
assert smaller("vtrace_unclipped", "per_decision", factor=3) and smaller("vtrace_clipped", "vtrace_unclipped", factor=3)
assert results["ordinary"][H16, 2] > 10 * results["ordinary"][2, 2]  # geometric growth: H = 4 to H = 16

# %% [markdown]
# Bias and variance together: the mean squared error $\text{bias}^2 + \text{variance}$ per dataset of 20
# episodes. Here the behaviour policy is far from the target (ratios up to 1.6 at every step), and truncation's
# bias costs more than its variance saves: truncated IS has a larger error than per-decision IS at every
# horizon. The lowest error at every horizon belongs to weighted IS or to unclipped V-trace with its critic:
# bounded weights, or a good control variate.

# %%
print(f"{'H':>3} " + " ".join(f"{name:>16}" for name in NAMES))
for i, h in enumerate(HORIZONS):
  mse = {name: (results[name][i, 0] - exact["pi"][i]) ** 2 + results[name][i, 2] for name in NAMES}
  print(f"{h:3d} " + " ".join(f"{m:16.4f}" for m in mse.values()))
  assert min(mse, key=mse.get) in ("weighted", "vtrace_unclipped")
  assert mse["truncated"] > mse["per_decision"]

# %% [markdown]
# ## V-trace value targets against the exact value function
#
# V-trace is built for actor-critic learning: the critic regresses on the targets $v_t$, state by state. Here
# we log one large dataset of $H = 8$ episodes and average the targets over the visits of each state $s$ at
# each step $t$, so that they can be compared with the exact values $V^\pi_t(s)$.
#
# * **No clipping, critic $V^\mu$**: the averaged targets land on $V^\pi_t(s)$ (the recursion above:
#   unbiased for any critic).
# * **Clipped** ($\bar\rho = \bar c = 1$): the targets are not $V^\pi$. A critic that is repeatedly refit to them
#   (here on the same logged data, as offline learning would) converges to the fixed point of the clipped
#   operator, the value of the normalised truncated policy $\pi_{\bar\rho} \propto \min(\bar\rho\mu, \pi)$,
#   between $V^\mu$ and $V^\pi$. The iteration reaches it in at most $H$ rounds, one step of the horizon per
#   round.

# %%
horizon = VTRACE_HORIZON
keys = jax.random.split(jax.random.key(1), VTRACE_EPISODES)
v_states, v_actions, v_rewards = jax.jit(jax.vmap(lambda k: log_episode(k, horizon)))(keys)
v_mask = jnp.ones(v_states.shape)
v_lp_pi, v_lp_mu = log_probs(PI, v_states, v_actions), log_probs(MU, v_states, v_actions)
onehot = np.asarray(jax.nn.one_hot(v_states, NUM_STATES), np.float64)  # [N, T, S] visits
visits = onehot.sum(0)  # [T, S]


@jax.jit
def targets(critic, clip):
  """[N, T] V-trace targets with the critic table [T, S]; clip: 1 (IMPALA's) or inf (none)."""
  values = critic[jnp.arange(horizon), v_states]
  return sfe.rl.vtrace(v_lp_pi, v_lp_mu, v_rewards, values, v_mask, GAMMA, clip_rho=clip, clip_c=clip).vs


def state_means(vs):
  """Per (t, s): the mean of the targets over the visits, and its standard error."""
  vs = np.asarray(vs, np.float64)[..., None]
  mean = (vs * onehot).sum(0) / visits
  var = ((vs - mean) ** 2 * onehot).sum(0) / (visits - 1)
  return mean, np.sqrt(var / visits)


v_pi, v_mu = dp_values(PI, horizon), dp_values(MU, horizon)
pi_bar = TRUNCATED_W / TRUNCATED_W.sum(1, keepdims=True)  # the normalised truncated policy
v_bar = dp_values(pi_bar, horizon)
assert np.all((v_mu <= v_bar) & (v_bar <= v_pi))  # V^pi_bar lies between V^mu and V^pi at every (t, s)

unclipped_mean, unclipped_se = state_means(targets(jnp.asarray(v_mu, jnp.float32), jnp.inf))
z_unclipped = np.abs(unclipped_mean - v_pi) / unclipped_se
print(f"unclipped targets with critic V^mu: max |mean - V^pi| / se over (t, s) = {z_unclipped.max():.2f}")
assert z_unclipped.max() < Z

# The fixed point: with the critic at V^{pi_bar}, the clipped targets average to the critic itself ...
fixed_mean, fixed_se = state_means(targets(jnp.asarray(v_bar, jnp.float32), 1.0))
z_fixed = np.abs(fixed_mean - v_bar) / fixed_se
print(f"clipped targets with critic V^pi_bar: max |mean - V^pi_bar| / se = {z_fixed.max():.2f}")
assert z_fixed.max() < Z
# ... while with the critic at V^pi they pull it away from V^pi: clipped V-trace is biased towards mu.
pulled_mean, pulled_se = state_means(targets(jnp.asarray(v_pi, jnp.float32), 1.0))
z_pulled = np.abs(pulled_mean[0] - v_pi[0]) / pulled_se[0]
print(f"clipped targets with critic V^pi: |mean - V^pi| / se at t = 0: {np.round(z_pulled, 1)}")
assert z_pulled.min() > Z

# Refitting the critic to the clipped targets on the logged data, round after round, from V^mu:
critic = v_mu
errors = []
for _ in range(horizon + 2):
  critic = state_means(targets(jnp.asarray(critic, jnp.float32), 1.0))[0]
  errors.append((np.abs(critic - v_bar).max(), np.abs(critic - v_pi).max()))
errors = np.array(errors)
gap = np.abs(v_pi - v_bar).max()
print(f"after {len(errors)} rounds: max |V - V^pi_bar| = {errors[-1, 0]:.4f}, max |V - V^pi| = {errors[-1, 1]:.4f}")
assert errors[-1, 0] < 0.2 * gap < errors[-1, 1]

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.9))
t = np.arange(horizon)
for s, color in zip(range(NUM_STATES), ("C0", "C1", "C2"), strict=True):
  ax.plot(t, v_pi[:, s], "-", color=color, label=f"$V^\\pi_t({s})$")
  ax.plot(t, v_bar[:, s], ":", color=color)
  ax.errorbar(t, unclipped_mean[:, s], 2 * unclipped_se[:, s], fmt="o", color=color, ms=4, capsize=2)
  ax.plot(t, critic[:, s], "x", color=color, ms=7)
ax.plot([], [], "k:", label="$V^{\\pi_{\\bar\\rho}}$ (exact)")
ax.plot([], [], "ko", ms=4, label="unclipped targets (mean $\\pm$ 2 se)")
ax.plot([], [], "kx", label="critic refit to clipped targets")
ax.set(xlabel="step $t$", ylabel="value", title=f"V-trace targets, H = {horizon}, {VTRACE_EPISODES} episodes")
ax.legend(fontsize=7)
rounds = np.arange(1, len(errors) + 1)
ax2.plot(rounds, errors[:, 0], "o-", label="max $|V - V^{\\pi_{\\bar\\rho}}|$")
ax2.plot(rounds, errors[:, 1], "s-", label="max $|V - V^\\pi|$")
ax2.set(
  yscale="log", xlabel="refit round", ylabel="max error over $(t, s)$", title="Critic refit to clipped V-trace targets"
)
ax2.legend(fontsize=8)
plt.show()

# %% [markdown]
# The refit critic stops at $V^{\pi_{\bar\rho}}$, not at $V^\pi$: clipping buys bounded variance at the price of
# evaluating (and, in IMPALA, improving) a policy pulled towards the behaviour policy. The gap closes when
# $\mu$ is close to $\pi$ (all ratios below $\bar\rho$), which is what IMPALA's near-on-policy actors keep true.
#
# ## Gradients come with the value
#
# `off_policy_value` is differentiable in the target policy: its `jax.grad` with respect to the policy's
# parameters estimates $\nabla J(\pi)$ from the logged data (the behaviour log-probabilities are constants).
# With a softmax policy $\pi_\theta$ the exact gradient is `jax.grad` of the recursion, written in `jnp` for
# the occasion; the per-decision estimate agrees within its standard errors.


# %%
THETA = jnp.log(jnp.asarray(PI, jnp.float32))  # softmax(THETA) = PI


def exact_j(theta, horizon):
  v = jnp.zeros(NUM_STATES)
  for _ in range(horizon):
    v = jnp.sum(jax.nn.softmax(theta) * (REWARD + GAMMA * P @ v), axis=1)
  return RHO0 @ v


def estimated_j(theta, states, actions, rewards, horizon):
  mask = jnp.ones(states.shape).at[:, horizon:].set(0.0)
  lp_pi = sfe.rl.action_log_probs(distrax.Categorical(logits=theta[states]), actions)
  return sfe.rl.off_policy_value(lp_pi, log_probs(MU, states, actions), rewards, mask, GAMMA, "per_decision")


h = 4
grads = jax.jit(jax.vmap(jax.grad(estimated_j), in_axes=(None, 0, 0, 0, None)), static_argnums=4)(
  THETA, states, actions, rewards, h
)
exact_grad = np.asarray(jax.grad(exact_j)(THETA, h))
mean, se = np.asarray(grads).mean(0), np.asarray(grads).std(0, ddof=1) / np.sqrt(NUM_DATASETS)
print("exact gradient dJ/dtheta:\n", np.round(exact_grad, 4), "\nper-decision estimate:\n", np.round(mean, 4))
assert np.all(np.abs(mean - exact_grad) < Z * se + 1e-6)

# %% [markdown]
# ## Take-aways
#
# * Importance sampling is unbiased but its variance grows like $E_\mu[W^2]$, geometrically in the horizon.
#   Per-decision weighting is the free improvement: unbiased, and of lower variance here from $H = 4$ on.
# * Self-normalising (weighted IS) and truncating the ratios bound the variance at the price of a bias: towards
#   the behaviour policy for weighted IS (vanishing as $1/B$), towards the value of the unnormalised weights
#   $\min(\bar\rho\mu, \pi)$ for truncated IS, a bias that does not vanish with more data.
# * V-trace is per-decision IS with a critic as control variate: without clipping it stays unbiased whatever
#   the critic; with IMPALA's clipping its variance stays bounded and its targets lead the critic to
#   $V^{\pi_{\bar\rho}}$.
#
# ## References
#
# Precup, Sutton and Singh, *Eligibility traces for off-policy policy evaluation*, ICML 2000.
# Espeholt et al., *IMPALA: scalable distributed deep-RL with importance weighted actor-learner architectures*,
# ICML 2018.
# Kong, *A note on importance sampling using standardized weights*, 1992 (the effective sample size).
