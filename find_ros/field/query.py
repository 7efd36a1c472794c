"""Field queries: cosine similarity of observed voxels to a query embedding, and goals (connected groups of the
best-matching voxels, by 26-connectivity on the voxel grid). Pure numpy over the field's arrays."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from find_ros.field.config import FieldInputError


@dataclass
class Goal:
    """One connected group of matching voxels; score = mean of its top-k voxel similarities (k = min(10, size))."""

    position: np.ndarray
    extent: np.ndarray
    score: float
    num_voxels: int


@dataclass
class QueryResult:
    scores: np.ndarray
    xyz: np.ndarray
    goals: list[Goal] = field(default_factory=list)


def _unit_queries(q: np.ndarray, embedding_dim: int) -> np.ndarray:
    """(D,) or (E,D) query -> (E,D) float32 rows of unit length; FieldInputError on another shape."""
    q = np.asarray(q, dtype=np.float32)
    if q.ndim == 1:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != embedding_dim:
        raise FieldInputError(f"q must be (D,) or (E,D) with D={embedding_dim}, got {q.shape}")
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)


def similarity_scores(unit_embeddings: np.ndarray, q: np.ndarray, *, embedding_dim: int) -> np.ndarray:
    """(N,) cosine similarity of each unit-length voxel embedding (N,D) to q (max over rows of q)."""
    qn = _unit_queries(q, embedding_dim)
    if unit_embeddings.shape[0] == 0:
        return np.zeros(0, np.float32)
    return (unit_embeddings @ qn.T).max(axis=1).astype(np.float32)


def query_voxels(unit_embeddings: np.ndarray, xyz: np.ndarray, q: np.ndarray, *, embedding_dim: int,
                 voxel_size: float, max_goals: int = 5, min_score: float | None = None, top_fraction: float = 0.02,
                 min_voxels: int = 3) -> QueryResult:
    """Cosine similarity per voxel (unit embeddings (N,D), centres xyz (N,3)), max over rows of q, then goals.

    Voxels pass when score >= min_score (if given) and score is within the top ``top_fraction`` of voxels;
    passing voxels are grouped into 26-connected components on the voxel grid; components with at least
    ``min_voxels`` voxels become goals ranked by the mean of their top-k (k=min(10,size)) similarities.
    """
    qn = _unit_queries(q, embedding_dim)
    if not 0 < top_fraction <= 1:
        raise FieldInputError(f"top_fraction must be in (0,1], got {top_fraction}")
    if unit_embeddings.shape[0] == 0:
        return QueryResult(scores=np.zeros(0, np.float32), xyz=xyz, goals=[])
    s = unit_embeddings @ qn.T
    scores = s.max(axis=1) if s.shape[1] > 1 else s[:, 0]
    # relative threshold: the (1 - top_fraction) quantile, estimated on a strided sample above 50k voxels
    sample = scores[:: max(1, scores.size // 50_000)]
    k = max(1, int(np.ceil(top_fraction * sample.size)))
    thr = np.partition(sample, sample.size - k)[sample.size - k]
    sel = scores >= thr
    if min_score is not None:
        sel &= scores >= min_score
    sel_idx = np.flatnonzero(sel)
    goals: list[Goal] = []
    if sel_idx.size:
        grid = np.rint(xyz[sel_idx] / voxel_size).astype(np.int64)  # lattice points
        labels = connected_components_26(grid)
        ss = scores[sel_idx]
        p = xyz[sel_idx]
        order = np.lexsort((-ss, labels))  # by component, best score first inside each
        lab = labels[order]
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        sizes = np.diff(np.r_[starts, lab.size])
        rank = np.arange(lab.size) - np.repeat(starts, sizes)
        top = rank < 10
        comp = np.repeat(np.arange(starts.size), sizes)
        goal_score = (np.bincount(comp[top], weights=ss[order][top], minlength=starts.size)
                      / np.minimum(sizes, 10))
        ps = p[order]
        lo = np.minimum.reduceat(ps, starts, axis=0)
        hi = np.maximum.reduceat(ps, starts, axis=0)
        mean = np.add.reduceat(ps.astype(np.float64), starts, axis=0) / sizes[:, None]
        ok = np.flatnonzero(sizes >= min_voxels)
        best = ok[np.argsort(-goal_score[ok], kind="stable")][:max_goals]
        goals = [Goal(position=mean[c].astype(np.float32),
                      extent=(hi[c] - lo[c] + voxel_size).astype(np.float32),
                      score=float(goal_score[c]), num_voxels=int(sizes[c])) for c in best]
    return QueryResult(scores=scores, xyz=xyz, goals=goals[:max_goals])


def connected_components_26(grid: np.ndarray) -> np.ndarray:
    """Labels of 26-connected components of integer voxel coordinates (N,3), by vectorised union-find."""
    n = grid.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    g = grid - grid.min(0) + 1
    dims = g.max(0) + 2
    key = (g[:, 0] * dims[1] + g[:, 1]) * dims[2] + g[:, 2]
    order = np.argsort(key)
    skey = key[order]
    offs = np.array([(dx * dims[1] + dy) * dims[2] + dz
                     for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                     if (dx, dy, dz) > (0, 0, 0)], np.int64)
    src, dst = [], []
    for o in offs:  # 13 neighbour offsets, each vectorised over all voxels (sorted needles: cache-friendly)
        nk = skey + o
        pos = np.searchsorted(skey, nk)
        pos = np.minimum(pos, n - 1)
        hit = skey[pos] == nk
        src.append(order[hit])
        dst.append(order[pos[hit]])
    src = np.concatenate(src)
    dst = np.concatenate(dst)
    parent = np.arange(n)
    if src.size:
        a = np.concatenate([src, dst])  # both directions, grouped by node for reduceat
        b = np.concatenate([dst, src])
        o = np.argsort(a, kind="stable")
        a, b = a[o], b[o]
        starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
        nodes = a[starts]
        while True:  # min-label propagation with pointer jumping until stable
            m = np.minimum(parent[nodes], np.minimum.reduceat(parent[b], starts))
            newp = parent.copy()
            newp[nodes] = m
            np.minimum.at(newp, parent[nodes], m)  # hook the old root onto the smaller label
            for _ in range(4):
                newp = newp[newp]
            if np.array_equal(newp, parent):
                break
            parent = newp
    _, labels = np.unique(parent, return_inverse=True)
    return labels
