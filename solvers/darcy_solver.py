"""The Darcy problem's discrete operator and its solvers (docs/problems.md, "darcy").

-div(a grad u) = f on (0, 1)^2, u = 0 on the boundary, on an s x s grid of nodes x_ij = (i, j) / (s - 1) with
h = 1 / (s - 1). At every interior node,

    sum over the 4 neighbours nb of  a_f (u_ij - u_nb) / h^2 = f_ij,   a_f = 2 a_ij a_nb / (a_ij + a_nb),

the harmonic mean of the two nodes' coefficients (a boundary neighbour counts, with u_nb = 0). The matrix is
symmetric positive definite: sparse direct (SuperLU) solves it at the sizes a CPU trains on, and AMG-
preconditioned CG (pyamg, an optional extra) at the paper's s = 421, where it is faster (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

AMG_FROM = 300  # grid size s from which `auto` takes pyamg, when installed (bench/solvers.py --problem darcy)
AMG_TOL = 1e-10  # relative residual of the AMG-preconditioned CG


def face_coefficients(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertical, horizontal): the harmonic means between nodes (i, j) and (i + 1, j), shape (s - 1, s), and
    between (i, j) and (i, j + 1), shape (s, s - 1), of a (s, s) float64."""
    v = 2 * a[:-1] * a[1:] / (a[:-1] + a[1:])
    w = 2 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:])
    return v, w


def operator(a: np.ndarray):
    """The (n, n) CSR matrix of the interior nodes' equations, n = (s - 2)^2 in row-major order, for one
    coefficient field a (s, s) float64 (the h^2 included)."""
    import scipy.sparse as sp

    s = a.shape[0]
    m = s - 2
    inv_h2 = float(s - 1) ** 2
    v, w = face_coefficients(np.asarray(a, np.float64))
    up, down = v[:-1, 1:-1], v[1:, 1:-1]  # faces to (i - 1, j) and (i + 1, j) of interior nodes, (m, m)
    left, right = w[1:-1, :-1], w[1:-1, 1:]  # faces to (i, j - 1) and (i, j + 1)
    diag = (up + down + left + right).ravel() * inv_h2
    idx = np.arange(m * m).reshape(m, m)
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [diag]
    # off-diagonals between interior neighbours only: a boundary neighbour's u is 0
    for coef, a_idx, b_idx in ((down[:-1], idx[:-1], idx[1:]), (right[:, :-1], idx[:, :-1], idx[:, 1:])):
        for r, c in ((a_idx, b_idx), (b_idx, a_idx)):
            rows.append(r.ravel())
            cols.append(c.ravel())
            vals.append(-coef.ravel() * inv_h2)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m))


def amg_available() -> bool:
    try:
        import pyamg  # noqa: F401
    except ImportError:
        return False
    return True


def solve_one(a: np.ndarray, f: np.ndarray | float, method: str = "auto") -> np.ndarray:
    """u (s, s) float64 on every node (0 on the boundary) for a (s, s) and f (a scalar or (s, s) array).
    method: `direct` (SuperLU), `amg` (pyamg's smoothed-aggregation AMG as CG's preconditioner, relative
    residual <= AMG_TOL) or `auto` (AMG from s = AMG_FROM when pyamg is installed, else direct)."""
    s = a.shape[0]
    mat = operator(a)
    rhs = np.broadcast_to(np.asarray(f, np.float64), (s, s))[1:-1, 1:-1].ravel().copy()
    if method == "auto":
        method = "amg" if s >= AMG_FROM and amg_available() else "direct"
    if method == "direct":
        x = _direct(mat, rhs)
    elif method == "amg":
        x = _amg(mat, rhs)
    else:
        raise ValueError(f"unknown method {method!r}")
    u = np.zeros((s, s))
    u[1:-1, 1:-1] = x.reshape(s - 2, s - 2)
    return u


def _direct(mat, rhs: np.ndarray) -> np.ndarray:
    """SuperLU, ordering A + A^T by minimum degree (the matrix is symmetric)."""
    from scipy.sparse.linalg import spsolve

    return spsolve(mat.tocsc(), rhs, permc_spec="MMD_AT_PLUS_A")


def _amg(mat, rhs: np.ndarray) -> np.ndarray:
    import pyamg
    from scipy.sparse.linalg import cg

    ml = pyamg.smoothed_aggregation_solver(mat, symmetry="symmetric")
    x, info = cg(mat, rhs, rtol=AMG_TOL, atol=0.0, maxiter=500, M=ml.aspreconditioner(cycle="V"))
    if info != 0:
        raise RuntimeError(f"AMG-preconditioned CG did not reach the relative residual {AMG_TOL} ({info} steps)")
    return x


def residual(a: np.ndarray, f: float, u: np.ndarray, mat=None) -> np.ndarray:
    """(s, s) float64: f - A u at interior nodes, and -u on the boundary (where u = 0 is imposed): zero for the
    exact discrete solution. `mat`: `operator(a)`, when the caller has it."""
    s = a.shape[0]
    u = np.asarray(u, np.float64)
    mat = operator(a) if mat is None else mat
    out = -u.copy()
    out[1:-1, 1:-1] = f - (mat @ u[1:-1, 1:-1].ravel()).reshape(s - 2, s - 2)
    return out


def correction(a: np.ndarray, f: float, u_pred: np.ndarray, iterations: int | None) -> np.ndarray:
    """(s, s) float64: the error u - u_pred of a prediction, from its residual r (A e = r on the interior, e =
    -u_pred on the boundary), exactly (iterations None) or by that many steps of Jacobi-preconditioned CG."""
    s = a.shape[0]
    mat = operator(a)
    r = residual(a, f, u_pred, mat)
    rhs = r[1:-1, 1:-1].ravel()
    if iterations is None:
        e = _direct(mat, rhs)
    else:
        import scipy.sparse as sp
        from scipy.sparse.linalg import cg

        jacobi = sp.diags(1.0 / mat.diagonal())
        e, _ = cg(mat, rhs, rtol=0.0, atol=0.0, maxiter=max(1, int(iterations)), M=jacobi)
    out = r.copy()  # the boundary: e = -u_pred
    out[1:-1, 1:-1] = e.reshape(s - 2, s - 2)
    return out


def reference_solve(a: np.ndarray, f: np.ndarray | float) -> np.ndarray:
    """u (s, s) float64 from equations assembled node by node, in plain Python, and solved densely (or by
    scipy's default sparse LU past 2,500 unknowns): independent of `operator`'s vectorised assembly."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    s = a.shape[0]
    h2 = (1.0 / (s - 1)) ** 2
    f = np.broadcast_to(np.asarray(f, np.float64), (s, s))
    interior = [(i, j) for i in range(1, s - 1) for j in range(1, s - 1)]
    number = {node: k for k, node in enumerate(interior)}
    n = len(interior)
    mat = np.zeros((n, n)) if n <= 2500 else sp.lil_matrix((n, n))
    rhs = np.zeros(n)
    for (i, j), k in number.items():
        rhs[k] = f[i, j]
        for q in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
            af = 2.0 * a[i, j] * a[q] / (a[i, j] + a[q])
            mat[k, k] += af / h2
            if q in number:
                mat[k, number[q]] -= af / h2
    x = np.linalg.solve(mat, rhs) if isinstance(mat, np.ndarray) else spsolve(mat.tocsc(), rhs)
    u = np.zeros((s, s))
    for (i, j), k in number.items():
        u[i, j] = x[k]
    return u
