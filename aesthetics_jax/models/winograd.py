"""3x3, stride-1, padding-1 convolution by Winograd's minimal filtering F(2x2, 3x3).

Why: on CPU XLA's direct convolution already runs VGG16's convs near the FMA peak (150-280
GFLOP/s on 2 AVX-512 cores), so only fewer multiplies make them faster. F(2x2, 3x3) (Lavin &
Gray, 2016) computes each 2x2 output tile from a 4x4 input tile with 16 instead of 36
multiplies per channel pair: 16 batched GEMMs [tiles, C] x [C, O] plus cheap element-wise
transforms. It pays where channels are many and maps small (VGG16 blocks 3-5: 1.2-1.5x for
the whole forward); with few channels the transforms dominate. Float32 results differ from the
direct convolution by ~1e-6 relative.

Layout: NHWC input, HWIO kernel (as `lax.conv_general_dilated` and flax `nn.Conv`).
"""
import chex
import jax
import jax.numpy as jnp


def _g(r):
  """Rows of G r for G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]] (3 rows in, 4 out)."""
  return [r[0], .5 * (r[0] + r[1] + r[2]), .5 * (r[0] - r[1] + r[2]), r[2]]


def _bt(d):
  """Rows of Bᵀ d for Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]] (4 in, 4 out)."""
  return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _at(m):
  """Rows of Aᵀ m for Aᵀ = [[1,1,1,0],[0,1,-1,-1]] (4 in, 2 out)."""
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def kernel_transform(kernel: jax.Array) -> jax.Array:
  """HWIO kernel [3, 3, C, O] → U = G k Gᵀ as [16, C, O] (row-major over the 4x4 tile),
  element-wise (an einsum with G lowers to slow tiny matmuls on CPU), in the kernel's dtype."""
  chex.assert_shape(kernel, (3, 3, None, None))
  cols = [_g([kernel[a, b] for a in range(3)]) for b in range(3)]  # cols[b][i]
  u = [_g([cols[b][i] for b in range(3)]) for i in range(4)]        # u[i][j]
  return jnp.stack([u[i][j] for i in range(4) for j in range(4)])


def conv3x3(x: jax.Array, u: jax.Array) -> jax.Array:
  """`lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)))` (NHWC/HWIO) by F(2x2, 3x3).

  Args:
    x: [B, H, W, C].
    u: [16, C, O], `kernel_transform(k)`, in x's dtype.
  Returns:
    [B, H, W, O]. Odd H or W is padded to even tiles and cropped.
  """
  b, h, w, c = x.shape
  chex.assert_shape(u, (16, c, None))
  th, tw = (h + 1) // 2, (w + 1) // 2
  # Tile (t, s) reads padded rows 2t..2t+3 and columns 2s..2s+3.
  xp = jnp.pad(x, ((0, 0), (1, 1 + 2 * th - h), (1, 1 + 2 * tw - w), (0, 0)))
  d = [[xp[:, i:i + 2 * th:2, j:j + 2 * tw:2, :] for j in range(4)] for i in range(4)]
  rows = [_bt([d[i][j] for i in range(4)]) for j in range(4)]  # rows[j][i] = (Bᵀ d)[i, j]
  v = [_bt([rows[j][i] for j in range(4)]) for i in range(4)]  # v[i][j] = (Bᵀ d B)[i, j]
  vt = jnp.stack([v[i][j] for i in range(4) for j in range(4)]).reshape(16, b * th * tw, c)
  m = jnp.matmul(vt, u).reshape(4, 4, b, th, tw, -1)           # 16 GEMMs
  r = [_at([m[i, j] for i in range(4)]) for j in range(4)]       # r[j][p] = (Aᵀ m)[p, j]
  y = [_at([r[j][p] for j in range(4)]) for p in range(2)]       # y[p][q] = (Aᵀ m A)[p, q]
  out = jnp.stack([jnp.stack(y[p], 3) for p in range(2)], 2)     # [B, th, 2, tw, 2, O]
  return out.reshape(b, 2 * th, 2 * tw, -1)[:, :h, :w]
