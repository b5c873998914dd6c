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
# # Scaling up: chunked estimation and the sample axis across devices
#
# The standard error of a Monte Carlo gradient falls like $1/\sqrt{N}$, so precise estimates take many
# samples, and an unchunked estimate holds all of them in memory at once: $N$ samples of $D$ float32
# coordinates, their evaluations of $f$ and the per-sample terms of the gradient (sfe_jax budgets 8 times the
# $4 N D$ bytes of the samples). At $N = 10^8$ and $D = 10$ that is 29.8 GiB. sfe_jax has two keywords of
# `sfe.value_and_grad` and `sfe.expectation` for this, which compose:
#
# * `chunk_size=c` draws, evaluates and differentiates the samples $c$ at a time in a `lax.scan`: peak memory
#   is that of one chunk, whatever $N$ is;
# * `sample_sharding=` (a `jax.sharding.NamedSharding` of the leading axis) splits the samples across the
#   devices of a mesh under `jax.jit`: the same estimate as on one device, computed by all of them.
#
# This notebook runs on a CPU with four *forced host devices*, XLA's way of pretending that one machine holds
# several devices, so that the sharded code runs anywhere; on a machine with GPUs the same code shards over
# them. The first code cell sets the flag, which must happen before JAX is imported.

# %%
import os

QUICK = os.environ.get("SFE_JAX_NOTEBOOK_QUICK", "0") == "1"  # the test suite runs the quick settings
# Four CPU devices, set before jax is imported (appended to any XLA_FLAGS already set).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

# %%
import time

import distrax
import jax
import matplotlib.pyplot as plt
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import sfe_jax as sfe
from benchmarks.peers import problems

DIM = 10  # D, the number of Gaussian coordinates
N_SMALL = 10_000  # samples of the bit-for-bit and sharding checks
CHUNK = 10_000  # the chunk size of the memory study and the large run
MEMORY_SIZES = (10_000, 1_000_000) if QUICK else (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
N_LARGE = 1_000_000 if QUICK else 100_000_000  # the large estimate
REPEATS = 100 if QUICK else 1_000  # independent estimates in the unbiasedness check
TIMED_CALLS = 1 if QUICK else 5  # calls per timing (the median is reported)
Z = 5.0  # a Monte Carlo estimate agrees with an exact value when it lies within Z standard errors

print(f"JAX {jax.__version__}, backend {jax.default_backend()}, devices: {jax.devices()}")
assert jax.device_count() == 4 or jax.default_backend() != "cpu"

# %% [markdown]
# ## The problem
#
# The peers benchmark's problem (`benchmarks.peers.problems`), whose gradient and single-sample variances are
# known in closed form: $x \sim \mathcal N(\mu, \mathrm{diag}\,\sigma^2)$ in $D = 10$ dimensions and
# $f(x) = \sum_i (x_i - \tfrac12)^2$, so that
#
# $$\frac{\partial E[f]}{\partial \mu_i} = 2 (\mu_i - \tfrac12), \qquad
#   \frac{\partial E[f]}{\partial \sigma_i} = 2 \sigma_i.$$

# %%
params = problems.initial_params(DIM)  # {"loc": mu, "scale": sigma}, mu in [-0.5, 1.5], sigma in [0.5, 1.5]
normal = lambda p: distrax.Normal(p["loc"], p["scale"])  # noqa: E731
f = problems.cost  # one sample of shape (D,) -> a scalar
exact = problems.exact_gradient(params)
key = jax.random.key(0)


def gradient(estimator, num_samples, chunk_size=None, sample_sharding=None, max_memory=None):
  """`(params, key) -> (value, grads)`: the function to jit, with every scale setting fixed."""

  def fn(p, k):
    value, grads, _ = sfe.value_and_grad(
      estimator,
      f,
      normal,
      p,
      k,
      num_samples=num_samples,
      chunk_size=chunk_size,
      sample_sharding=sample_sharding,
      max_memory=max_memory,
    )
    return value, grads

  return fn


# %% [markdown]
# ## Chunks: the same estimator, a chunk at a time
#
# With `chunk_size=c` and $N = m c + r$ samples, the estimate is the weighted mean of the chunks' estimates,
#
# $$\hat F = \frac{c}{N} \sum_{j=1}^{m} \hat F_j(c) + \frac{r}{N} \hat F_{m+1}(r),$$
#
# each chunk drawn from its own key (`jax.random.split(key, num_chunks)`). Two consequences:
#
# * `chunk_size >= num_samples` is one chunk with the original key: the unchunked call, **bit for bit** (the
#   very same XLA program, which we check on the lowered programs, before compiling anything);
# * any smaller chunk size draws other samples, so it gives a *different* estimate of the same estimator, with
#   the same mean and the same variance (for estimators whose samples are independent, such as the score
#   function and pathwise; those that couple their samples, such as the leave-one-out baseline, compute their
#   statistics within each chunk; the README has the table).

# %%
pathwise = sfe.pathwise()
lowered = jax.jit(gradient(pathwise, N_SMALL)).lower(params, key)  # traced and lowered, not yet compiled
one_chunk = jax.jit(gradient(pathwise, N_SMALL, chunk_size=N_SMALL)).lower(params, key)
four_chunks = jax.jit(gradient(pathwise, N_SMALL, chunk_size=N_SMALL // 4)).lower(params, key)
print("chunk_size = N gives the same program as no chunk_size:", one_chunk.as_text() == lowered.as_text())
loops = {name: program.as_text().count("stablehlo.while") for name, program in (("plain", lowered), ("4", four_chunks))}
print(f"chunk_size = N / 4 adds a loop over the chunks: {loops['plain']} while loops unchunked, {loops['4']} chunked")
assert one_chunk.as_text() == lowered.as_text() and loops["4"] > loops["plain"]
plain = lowered.compile()
value, grads = plain(params, key)
print(f"N = {N_SMALL}: value {float(value):.5f}, grad of loc[0] {float(grads['loc'][0]):.4f} (exact {exact['loc'][0]})")

# %% [markdown]
# Smaller chunks are unbiased with the unchunked variance. We check it with $N = 2048$ samples in chunks of 512,
# over independent keys with
# `sfe.diagnostics.repeated_estimates`, which takes `chunk_size` too, against the exact gradient and the exact
# variance $\mathrm{Var}[\hat g_i] = v_i / N$, with $v_i$ the closed-form single-sample variance of each
# coordinate (`problems.single_sample_variance`).

# %%
N_REPEAT, C_REPEAT = 2048, 512
_, estimates = sfe.diagnostics.repeated_estimates(
  pathwise, f, normal, params, jax.random.key(1), num_samples=N_REPEAT, num_repeats=REPEATS, chunk_size=C_REPEAT
)
single = problems.single_sample_variance("pathwise", params)
for leaf in ("loc", "scale"):
  g = np.asarray(estimates[leaf], np.float64)  # (REPEATS, D)
  z_mean = np.abs(g.mean(0) - exact[leaf]) / (g.std(0, ddof=1) / np.sqrt(REPEATS))
  variance, variance_se = sfe.diagnostics.variance_and_std_error(g)
  z_var = np.abs(variance - single[leaf] / N_REPEAT) / variance_se
  print(f"{leaf:>5}: max |mean - exact| / se = {z_mean.max():.2f}, max |variance - exact| / se = {z_var.max():.2f}")
  assert z_mean.max() < Z and z_var.max() < Z

# %% [markdown]
# ## Memory: bounded by the chunk
#
# XLA reports the temporary buffers a compiled program needs, `compiled.memory_analysis().temp_size_in_bytes`,
# without running it. We compile the pathwise gradient for growing $N$, unchunked and in chunks of $10^4$.
# Compiling never allocates the samples, so we can look at sizes that would not fit in this machine's memory;
# `max_memory=2**62` switches off sfe_jax's own check, which otherwise refuses at trace time an unchunked call
# whose working set exceeds the device's memory (below).

# %%
temp_bytes = {"unchunked": [], "chunked": []}
compiled_chunked = {}
for n in MEMORY_SIZES:
  unchunked = plain if n == N_SMALL else jax.jit(gradient(pathwise, n, max_memory=2**62)).lower(params, key).compile()
  if n <= CHUNK:  # one chunk: the unchunked program
    chunked = unchunked
  else:
    chunked = jax.jit(gradient(pathwise, n, chunk_size=CHUNK)).lower(params, key).compile()
  compiled_chunked[n] = chunked
  for name, program in (("unchunked", unchunked), ("chunked", chunked)):
    temp_bytes[name].append(program.memory_analysis().temp_size_in_bytes)
  mib = {name: sizes[-1] / 2**20 for name, sizes in temp_bytes.items()}
  print(f"N = {n:>11,}: XLA temp {mib['unchunked']:10.1f} MiB unchunked, {mib['chunked']:5.2f} MiB in chunks")

fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(MEMORY_SIZES, np.array(temp_bytes["unchunked"]) / 2**20, "o-", label="unchunked")
ax.plot(MEMORY_SIZES, np.array(temp_bytes["chunked"]) / 2**20, "s-", label=f"chunk_size = {CHUNK:,}")
ax.plot(MEMORY_SIZES, 4 * DIM * np.array(MEMORY_SIZES) / 2**20, "k:", lw=1, label="the samples alone, $4 N D$ bytes")
ax.set(
  xscale="log",
  yscale="log",
  xlabel="num_samples $N$",
  ylabel="XLA temporary memory (MiB)",
  title=f"Pathwise gradient, D = {DIM}",
)
ax.legend()
plt.show()

# %% [markdown]
# The unchunked program's temporary memory grows linearly with $N$ (a few times the samples themselves), the
# chunked one stays at that of one chunk. The checks: at $N = 10^6$ chunks of $10^4$ need more than 30 times
# less (a ratio that grows linearly with $N$), and the chunked memory does not grow with $N$.

# %%
big = MEMORY_SIZES.index(1_000_000)
ratio = temp_bytes["unchunked"][big] / temp_bytes["chunked"][big]
growth = temp_bytes["chunked"][-1] / temp_bytes["chunked"][big]
print(f"N = 1e6: unchunked / chunked temp memory = {ratio:.0f}")
print(f"chunked temp memory at N = {MEMORY_SIZES[-1]:.0e} / at N = 1e6: {growth:.2f}")
assert ratio > 30 and growth < 1.1
assert temp_bytes["unchunked"][big] >= 4 * DIM * 1_000_000  # at least the samples themselves

# %% [markdown]
# Without `max_memory`, sfe_jax estimates an unchunked call's working set at trace time (8 times the bytes of
# the samples) and compares it with the device's memory; `max_memory=` (bytes) sets another limit. Here with a
# 1 GiB limit, so that the example does not depend on the machine:

# %%
try:
  jax.jit(gradient(pathwise, 100_000_000, max_memory=2**30)).lower(params, key)
  raise AssertionError("not refused")
except ValueError as error:
  message = str(error)
print(message)
assert "num_samples" in message and "chunk_size" in message and "29.8 GiB" in message

# %% [markdown]
# ## $10^8$ samples in bounded memory
#
# The full run of this notebook estimates the gradient from $N = 10^8$ samples (the quick run, $10^6$) in chunks
# of $10^4$: $10^9$ Gaussian draws, with the temporary memory of $10^4$ samples. The function was compiled in the
# memory study above; here it runs once, timed to completion. The standard error of gradient coordinate $i$ is
# $\sqrt{v_i / N}$; `problems.gradient_errors` compares the estimate with the exact gradient in units of those
# standard errors, and the relative error with its expected size.

# %%
compiled = compiled_chunked[N_LARGE]
start = time.perf_counter()
value, grads = jax.block_until_ready(compiled(params, jax.random.key(2)))
seconds = time.perf_counter() - start
relative, expected_relative, max_z = problems.gradient_errors("pathwise", params, grads, N_LARGE)
print(f"N = {N_LARGE:,} in chunks of {CHUNK:,}: {seconds:.1f} s ({1e9 * seconds / N_LARGE:.0f} ns per sample)")
print(f"relative error {relative:.2e} (expected about {expected_relative:.2e}); largest |error| / se = {max_z:.2f}")
offset, sigma = np.asarray(params["loc"], np.float64) - 0.5, np.asarray(params["scale"], np.float64)
exact_value = np.sum(offset**2 + sigma**2)  # E[f]
value_se = np.sqrt(np.sum(4 * offset**2 * sigma**2 + 2 * sigma**4) / N_LARGE)  # sqrt(Var f / N)
print(f"value {float(value):.5f}, exact E[f] = {exact_value:.5f}, standard error {value_se:.1e}")
assert max_z < Z and relative < 3 * expected_relative and abs(float(value) - exact_value) < Z * value_se

# %% [markdown]
# ## The sample axis across devices
#
# `sample_sharding` takes a `NamedSharding` whose mesh axis splits the leading (sample) axis. Under `jax.jit`,
# sampling, the evaluations of $f$ and the reduction run across the mesh's devices, params stay replicated, and
# the gradient comes back once, replicated, not once per device. JAX's partitionable threefry generator draws
# the same bits however the samples are split, so the result is the **same estimate as on one device** for the
# same key, up to the order of the final sum (a few float32 roundings). `num_samples` (and `chunk_size`) must be
# a multiple of the number of devices.

# %%
mesh = Mesh(np.array(jax.devices()), ("samples",))  # every local device: 4 forced CPU devices here, or the GPUs
samples_split = NamedSharding(mesh, PartitionSpec("samples"))

sharded = jax.jit(gradient(pathwise, N_SMALL, sample_sharding=samples_split)).lower(params, key).compile()
value_s, grads_s = sharded(params, key)
value, grads = plain(params, key)
print(f"N = {N_SMALL}: value {float(value):.7f} on one device, {float(value_s):.7f} over {len(mesh.devices)} devices")
np.testing.assert_allclose(value_s, value, rtol=2e-6)
for a, b in zip(jax.tree.leaves(grads_s), jax.tree.leaves(grads), strict=True):
  np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)
hlo = sharded.as_text()
print("the gradient's sharding:", grads_s["loc"].sharding)
assert f"num_partitions={len(mesh.devices)}" in hlo and "all-reduce" in hlo
assert grads_s["loc"].sharding.is_fully_replicated

# %% [markdown]
# The compiled program is partitioned over the four devices (`num_partitions=4` in its HLO) and sums the
# devices' partial estimates with an `all-reduce`. Chunking and sharding combine: each chunk is sharded, so each
# device holds a quarter of a chunk (its temporary memory is less than 0.3 of the single-device program's). With
# the same key, the sharded chunked estimate equals the single-device chunked one of the memory study:

# %%
N_BOTH = 1_000_000
both = jax.jit(gradient(pathwise, N_BOTH, chunk_size=CHUNK, sample_sharding=samples_split)).lower(params, key).compile()
value_b, grads_b = both(params, key)
value_c, grads_c = compiled_chunked[N_BOTH](params, key)
print(f"N = {N_BOTH:,}, chunks of {CHUNK:,}: value {float(value_c):.7f} on one device, {float(value_b):.7f} sharded")
np.testing.assert_allclose(value_b, value_c, rtol=2e-6)
for a, b in zip(jax.tree.leaves(grads_b), jax.tree.leaves(grads_c), strict=True):
  np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)
per_device = both.memory_analysis().temp_size_in_bytes / compiled_chunked[N_BOTH].memory_analysis().temp_size_in_bytes
print(f"XLA temp memory per device, sharded / one device: {per_device:.3f}")
assert per_device < 0.3

# %% [markdown]
# What sharding buys in time depends on the hardware: four forced host devices share this machine's CPU
# cores, so they add parallelism only where XLA would not already use the cores, while on four GPUs each
# device does a quarter of the work. The two chunked programs at $N = 10^6$, timed after compilation and a first
# call (the median of five calls):

# %%
variants = {"one device": compiled_chunked[N_BOTH], f"{len(mesh.devices)} devices": both}
times = {}
for name, fn in variants.items():  # both compiled and run once above
  runs = []
  for i in range(TIMED_CALLS):
    k = jax.random.key(10 + i)
    start = time.perf_counter()
    jax.block_until_ready(fn(params, k))
    runs.append(time.perf_counter() - start)
  times[name] = float(np.median(runs))
  print(f"{name:>18}: {times[name]:.3f} s per gradient of {N_BOTH:,} samples in chunks of {CHUNK:,}")

fig, ax = plt.subplots(figsize=(6.5, 3.0))
ax.barh(list(times), list(times.values()))
ax.set(xlabel="seconds per gradient", title=f"N = {N_BOTH:,}, D = {DIM}, chunks of {CHUNK:,}, {jax.default_backend()}")
plt.show()

# %% [markdown]
# ## The same code on a GPU, and on several hosts
#
# Nothing above is specific to the CPU. On a machine with NVIDIA GPUs, `pip install -e ".[cuda12]"` (JAX's
# CUDA 12 plugin and the libraries it needs) is the whole set-up. The `XLA_FLAGS` line only concerns the CPU
# platform and can go; `Mesh(np.array(jax.devices()), ("samples",))` is then a mesh of the GPUs (with one GPU,
# a mesh of one device, and the sharded call is the plain one). On a GPU, memory is the scarcer resource, which
# is what `chunk_size` is for: chunks large enough to fill the device (the README's scale benchmark,
# `python -m benchmarks scale --device gpu`, measures the time against the chunk size) and as many of them as
# the precision requires.
#
# Several hosts (each with its devices) use JAX's multi-controller runtime, as the README's recipe in *The
# sample axis across devices* shows: every process calls `jax.distributed.initialize(coordinator_address=...,
# num_processes=..., process_id=...)` before any other JAX call (on CPU hosts after
# `jax.config.update("jax_cpu_collectives_implementation", "gloo")`), builds the mesh from the global
# `jax.devices()`, and runs the same jitted `sfe.value_and_grad(..., sample_sharding=...)` with the same params
# and key; each process then reads its replicated copy of the result from `value.addressable_shards[0].data`.
# The library's test suite runs that recipe with two processes on one machine and checks that both get the
# single-process estimate.
#
# ## Take-aways
#
# * `chunk_size` bounds the memory of an estimate by that of one chunk; `chunk_size >= num_samples` is the
#   unchunked call bit for bit, smaller chunks give other draws of the same estimator (same mean, same variance).
# * `sample_sharding` spreads the samples over a mesh's devices and returns the single-device estimate for the
#   same key; it composes with `chunk_size`.
# * The same code runs on one CPU, four forced host devices, GPUs and several hosts.
#
# ## References
#
# Salmon, Moraes, Dror and Shaw, *Parallel random numbers: as easy as 1, 2, 3*, SC 2011 (the counter-based
# threefry generator that lets every device draw its own share of the same samples).
