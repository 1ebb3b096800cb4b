"""Retrieval metrics for person re-identification: CMC, mAP and mINP under the community protocol.

Semantics follow torchreid's `eval_market1501` (also TransReID's and fast-reid's evaluators):

* for each query, gallery items with the query's pid AND the query's camera are removed ("junk": the same
  person seen by the same camera is not a retrieval);
* the remaining gallery items with the query's pid are its true matches; a query with none is skipped;
* CMC, mAP and mINP are averaged over the remaining ("valid") queries.

No gallery is sorted. Only the ranks of a query's true matches matter, and the rank of a match is the number
of valid gallery items placed before it, so each rank is a count of comparisons against the match's distance:
O(Q * G * P) vectorised comparisons for P matches per query instead of an O(Q * G log G) argsort, in query
chunks whose memory is bounded by `chunk_bytes` (see benchmarks/bench_evaluation.py for the timings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Bound on the temporary blocks ([chunk, matches, gallery] booleans, [chunk, gallery] rows). Small on purpose:
# a block that stays in cache between the comparison and the count was fastest (1-2 MiB measured best,
# 32 MiB about 1.5x slower, on Occluded-Duke sizes).
DEFAULT_CHUNK_BYTES = 2**20
# Booleans are counted 8 at a time as 64-bit words (popcount), so rows are padded to a multiple of this.
_WORD = 8


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one query set against one gallery; every value is a fraction in [0, 1].

    cmc:               [R] CMC curve, R = min(max_rank, gallery size): cmc[k] is the fraction of valid
                       queries whose first true match is within the top k + 1.
    mAP, mINP:         mean average precision and mean inverse negative penalty over valid queries.
    first_match_rank:  [Q] 0-based rank of each query's first true match among its valid gallery items;
                       -1 for skipped queries (no true match after junk removal).
    average_precision: [Q] per-query AP (NaN for skipped queries).
    inverse_negative_penalty: [Q] per-query INP = #matches / (rank of the hardest match + 1) (NaN if skipped).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    first_match_rank: np.ndarray
    average_precision: np.ndarray
    inverse_negative_penalty: np.ndarray

    @property
    def valid_queries(self) -> np.ndarray:
        """[Q] bool: queries that have at least one true match and enter the averages."""
        return self.first_match_rank >= 0

    @property
    def num_valid_queries(self) -> int:
        return int(self.valid_queries.sum())

    def rank(self, k: int) -> float:
        """Rank-k accuracy (fraction): valid queries whose first true match is in the top k.
        Computed from the per-query ranks, so any k works, also beyond `max_rank`."""
        if k < 1:
            raise ValueError(f"rank k must be >= 1 (rank-1 is the top match), got {k}")
        return float(np.mean(self.first_match_rank[self.valid_queries] < k))

    def as_dict(self) -> dict[str, float]:
        """Summary as FRACTIONS in [0, 1] (not percent; multiply by 100 for the papers' tables):
        {"mAP", "rank1", "rank3", "rank5", "rank10", "mINP"} (Rank-3: Partial-REID / Partial-iLIDS)."""
        return {"mAP": self.mAP, **{f"rank{k}": self.rank(k) for k in (1, 3, 5, 10)}, "mINP": self.mINP}


def evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *,
             chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> EvaluationResult:
    """CMC, mAP and mINP of a [Q, G] distance matrix (smaller = more similar).

    Inputs may be numpy arrays, torch tensors (any device) or sequences. Agrees with torchreid's
    `eval_market1501` (0.2.5) wherever torchreid's result is defined, to float rounding; in particular:

    * junk removal and skipping as in the module docstring; if no query is valid a ValueError is raised
      (torchreid asserts);
    * the CMC has min(max_rank, G) entries, as torchreid truncates max_rank to the gallery size. A query whose
      gallery after junk removal is shorter than that counts as matched at every rank past its list (its
      match is within its list); torchreid's Python code fails on such ragged lists unless all are equally
      short, in which case it returns the shorter curve, whose last value, 1.0, ours repeats.

    Ties: the ranking is the STABLE order of the distances: equal distances keep gallery index order, exactly
    as `np.argsort(row, kind="stable")` would rank them (`rank_list` shows that order). torchreid uses
    `np.argsort`'s default, unstable sort, so where a true match ties with a non-match its numbers depend on
    the sort implementation; where ties only join items of the same kind (matches with matches, non-matches
    with non-matches, or anything with junk) every order gives the same result and the two agree.

    Distances must not be NaN (a ValueError says where); +inf is allowed, e.g. for impossible pairs.
    Integer distances are compared exactly as float64. `chunk_bytes` bounds the temporary comparison block.
    """
    d = _as_numpy(distmat)
    if d.ndim != 2:
        raise ValueError(f"distmat must be a 2-D [num_query, num_gallery] matrix, got shape {d.shape}")
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float64)
    num_q, num_g = d.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat is empty ({num_q} queries x {num_g} gallery items); nothing to evaluate")
    q_pids, q_camids = _labels(q_pids, num_q, "q_pids"), _labels(q_camids, num_q, "q_camids")
    g_pids, g_camids = _labels(g_pids, num_g, "g_pids"), _labels(g_camids, num_g, "g_camids")
    if not isinstance(max_rank, int | np.integer) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer (e.g. 50), got {max_rank!r}")
    nan_rows = np.flatnonzero(np.isnan(d.min(axis=1)))  # min propagates NaN; no [Q, G] temporary
    if len(nan_rows):
        q = nan_rows[0]
        g = np.flatnonzero(np.isnan(d[q]))[0]
        raise ValueError(f"distmat contains NaN (first at query {q}, gallery {g}); distances must be "
                         "comparable: fix the feature extraction, or use +inf for pairs that must rank last")

    # Every (query, gallery) pair with the same pid, ordered by query then gallery index.
    pair_q, pair_g = _same_pid_pairs(q_pids, g_pids)
    junk = g_camids[pair_g] == q_camids[pair_q]
    pos_q, pos_g = pair_q[~junk], pair_g[~junk]  # true matches [P]
    junk_q, junk_g = pair_q[junk], pair_g[junk]  # removed items [J]
    n_pos = np.bincount(pos_q, minlength=num_q)  # [Q]
    if not n_pos.any():
        raise ValueError("no query has a true match in the gallery (same pid, another camera): check that "
                         "query and gallery pids overlap and that camera ids are set per image")

    ranks = _match_ranks(d, pos_q, pos_g, n_pos, junk_q, junk_g, chunk_bytes)  # [P]
    return _summarise(ranks, pos_q, n_pos, min(max_rank, num_g))


def _summarise(ranks: np.ndarray, pos_q: np.ndarray, n_pos: np.ndarray, cmc_len: int) -> EvaluationResult:
    """Per-query AP, INP and first rank from the ranks of the true matches; averages over valid queries."""
    order = np.lexsort((ranks, pos_q))  # matches grouped by query, best first
    ranks, pos_q = ranks[order], pos_q[order]
    valid = n_pos > 0
    starts = np.concatenate([[0], np.cumsum(n_pos)[:-1]])[valid]  # first match of each valid query
    nth = np.arange(len(ranks)) - np.repeat(starts, n_pos[valid]) + 1  # i: this is the query's i-th match
    # AP = (1/n) sum_i i / (rank_i + 1): precision at each match, 0-based ranks [P].
    ap = np.full(len(n_pos), np.nan)
    ap[valid] = np.add.reduceat(nth / (ranks + 1.0), starts) / n_pos[valid]
    # INP = n / (rank of the hardest match + 1) (Ye et al., "Deep learning for person re-id", 2021).
    inp = np.full(len(n_pos), np.nan)
    inp[valid] = n_pos[valid] / (ranks[starts + n_pos[valid] - 1] + 1.0)
    first = np.full(len(n_pos), -1, dtype=np.int64)
    first[valid] = ranks[starts]
    # CMC[k] = fraction of valid queries with first rank <= k; ranks past the curve's end are clipped into
    # one overflow bin.
    hist = np.bincount(np.minimum(first[valid], cmc_len), minlength=cmc_len + 1)[:cmc_len]
    cmc = np.cumsum(hist) / valid.sum()
    return EvaluationResult(cmc=cmc, mAP=float(ap[valid].mean()), mINP=float(inp[valid].mean()),
                            first_match_rank=first, average_precision=ap, inverse_negative_penalty=inp)


def _match_ranks(d: np.ndarray, pos_q, pos_g, n_pos, junk_q, junk_g, chunk_bytes: int) -> np.ndarray:
    """[P] 0-based rank of each true match among its query's valid gallery items in the stable order:
        rank(p) = #{valid j : d_j < d_p} + #{valid j < p : d_j == d_p}
    The first term counts all j (one vectorised pass) minus junk j (a few per query); the second is nonzero
    only where a valid item ties with the match, which a second, non-strict pass detects: those (rare)
    matches are counted exactly against their full gallery row."""
    pos_d = d[pos_q, pos_g]  # [P]
    lt_all, le_all = _count_below_in_rows(d, pos_q, pos_d, n_pos, chunk_bytes)
    lt_junk, le_junk, tie_before_junk = _count_junk_below(d, pos_q, pos_g, pos_d, junk_q, junk_g)
    ranks = lt_all - lt_junk
    tied = np.flatnonzero((le_all - le_junk) - ranks > 1)  # another valid item has exactly d_p
    if len(tied):
        ranks[tied] += _count_ties_before(d, pos_q[tied], pos_g[tied], pos_d[tied], chunk_bytes)
        ranks[tied] -= tie_before_junk[tied]
    return ranks


def _count_below_in_rows(d: np.ndarray, pos_q, pos_d, n_pos, chunk_bytes: int):
    """#{j : d[q, j] < v} and #{j : d[q, j] <= v} over whole gallery rows for each match (q, v), [P] each.

    Queries are processed by increasing number of matches, so padding a chunk's thresholds to a
    rectangle [C, K] wastes little; chunks are sized so the [C, K, G] comparison block fits `chunk_bytes`."""
    num_g = d.shape[1]
    width = -(-num_g // _WORD) * _WORD
    slot = np.arange(len(pos_q)) - np.repeat(np.cumsum(n_pos) - n_pos, n_pos)  # position within its query
    first = np.cumsum(n_pos) - n_pos  # index of each query's first match in pos_*
    queries = np.flatnonzero(n_pos)
    queries = queries[np.argsort(n_pos[queries], kind="stable")]
    lt, le = np.empty(len(pos_q), np.int64), np.empty(len(pos_q), np.int64)
    end = len(queries)
    while end > 0:  # from the widest chunk down: a chunk's width is its last query's count
        width_k = int(n_pos[queries[end - 1]])
        # both the [C, K, G] booleans and the [C, G] copy of the rows fit the budget
        start = max(0, end - max(1, chunk_bytes // (width * max(width_k, d.itemsize))))
        chunk = queries[start:end]  # [C]
        idx = _concat_ranges(first[chunk], n_pos[chunk])  # this chunk's matches in pos_*
        row = np.repeat(np.arange(len(chunk)), n_pos[chunk])
        thresholds = np.zeros((len(chunk), width_k), d.dtype)  # [C, K]; padding is counted then dropped
        thresholds[row, slot[idx]] = pos_d[idx]
        block = d[chunk]  # [C, G]
        for target, op in ((lt, np.less), (le, np.less_equal)):
            target[idx] = _count_compare(block, thresholds, op, width, chunk_bytes)[row, slot[idx]]
        end = start
    return lt, le


def _count_compare(block: np.ndarray, thresholds: np.ndarray, op, width: int, chunk_bytes: int) -> np.ndarray:
    """[C, K] counts of op(block[c, j], thresholds[c, k]) over j, K split so each bool block fits."""
    n_rows, n_thr = thresholds.shape
    step = min(n_thr, max(1, chunk_bytes // (n_rows * width)))
    buffer = np.empty(n_rows * step * width, bool)  # reused for every K slice
    counts = np.empty((n_rows, n_thr), np.int64)
    for k0 in range(0, n_thr, step):
        thr = thresholds[:, k0:k0 + step]
        hits = buffer[:thr.size * width].reshape(n_rows, thr.shape[1], width)  # [C, k, G padded]
        op(block[:, None, :], thr[:, :, None], out=hits[:, :, :block.shape[1]])
        hits[:, :, block.shape[1]:] = False
        counts[:, k0:k0 + step] = _count_true_rows(hits)
    return counts


def _count_true_rows(hits: np.ndarray) -> np.ndarray:
    """Number of True along the last axis; the axis length is a multiple of 8, so each 8 booleans are one
    64-bit word whose popcount is their count (several times faster than summing bytes)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(hits.view(np.uint64)).sum(axis=-1, dtype=np.int64)
    return np.count_nonzero(hits, axis=-1)


def _count_junk_below(d: np.ndarray, pos_q, pos_g, pos_d, junk_q, junk_g):
    """For each match p of query q, over the junk items j of q: #{d_j < d_p}, #{d_j <= d_p} and
    #{j < p, d_j == d_p}, [P] each. Junk is a handful per query, so all (match, junk) pairs are formed."""
    n_junk = np.bincount(junk_q, minlength=d.shape[0])
    first_junk = np.cumsum(n_junk) - n_junk
    pair = _concat_ranges(first_junk[pos_q], n_junk[pos_q])  # junk index of each (match, junk) pair
    owner = np.repeat(np.arange(len(pos_q)), n_junk[pos_q])  # match index of each pair
    junk_d, mine = d[junk_q[pair], junk_g[pair]], pos_d[owner]

    def count(mask):
        return np.bincount(owner[mask], minlength=len(pos_q))

    return (count(junk_d < mine), count(junk_d <= mine),
            count((junk_d == mine) & (junk_g[pair] < pos_g[owner])))


def _count_ties_before(d: np.ndarray, q, g, v, chunk_bytes: int) -> np.ndarray:
    """#{j < g : d[q, j] == v} per (q, g, v), over whole rows, in batches that fit `chunk_bytes`."""
    num_g = d.shape[1]
    step = max(1, chunk_bytes // max(1, num_g * d.itemsize))
    cols = np.arange(num_g)
    out = np.empty(len(q), np.int64)
    for s in range(0, len(q), step):
        sl = slice(s, s + step)
        out[sl] = np.count_nonzero((d[q[sl]] == v[sl, None]) & (cols < g[sl, None]), axis=1)
    return out


def _same_pid_pairs(q_pids: np.ndarray, g_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (query, gallery) index pairs with equal pids, sorted by query then gallery index, without a
    [Q, G] comparison: each query's pid is looked up in the (stably) pid-sorted gallery."""
    g_order = np.argsort(g_pids, kind="stable")
    g_sorted = g_pids[g_order]
    lo = np.searchsorted(g_sorted, q_pids, "left")
    n = np.searchsorted(g_sorted, q_pids, "right") - lo
    return np.repeat(np.arange(len(q_pids)), n), g_order[_concat_ranges(lo, n)]


def _concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """concatenate(arange(s, s + c) for s, c in zip(starts, counts)), vectorised."""
    counts = np.asarray(counts, np.int64)
    offsets = np.cumsum(counts) - counts
    return np.arange(counts.sum()) - np.repeat(offsets - np.asarray(starts, np.int64), counts)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(x, n: int, name: str) -> np.ndarray:
    """A 1-D label array (pids or camera ids) with one entry per distmat row (q_*) or column (g_*)."""
    a = _as_numpy(x)
    if a.ndim != 1 or len(a) != n:
        axis = "row" if name.startswith("q") else "column"
        raise ValueError(f"{name} must be a 1-D array with one entry per distmat {axis} ({n}), "
                         f"got shape {a.shape}")
    return a


@dataclass(frozen=True)
class RankList:
    """One query's top of the ranking: gallery indices, their distances and whether each is a true match."""

    gallery_indices: np.ndarray  # [top] int
    distances: np.ndarray  # [top]
    matches: np.ndarray  # [top] bool


def rank_list(distmat, q_idx: int, top: int = 10, *, q_pids, g_pids, q_camids=None,
              g_camids=None) -> RankList:
    """The first `top` gallery items for query `q_idx` (for ranking-list figures), in `evaluate`'s order:
    ascending distance, ties in gallery index order. With camera ids given, junk (same pid and camera as the
    query) is left out as `evaluate` does; without them every gallery item is listed.
    `distmat` is the full [Q, G] matrix (numpy or torch)."""
    d = _as_numpy(distmat)
    if d.ndim != 2 or not 0 <= q_idx < d.shape[0]:
        raise ValueError(f"need a [Q, G] distmat and 0 <= q_idx < Q; got shape {d.shape}, q_idx={q_idx}")
    row = d[q_idx]
    q_pid, g_pids = _labels(q_pids, d.shape[0], "q_pids")[q_idx], _labels(g_pids, d.shape[1], "g_pids")
    keep = np.ones(d.shape[1], bool)
    if (q_camids is None) != (g_camids is None):
        raise ValueError("give both q_camids and g_camids (to remove same-camera junk) or neither")
    if q_camids is not None:
        q_cam = _labels(q_camids, d.shape[0], "q_camids")[q_idx]
        keep &= ~((g_pids == q_pid) & (_labels(g_camids, d.shape[1], "g_camids") == q_cam))
    kept = np.flatnonzero(keep)
    top_idx = kept[np.argsort(row[kept], kind="stable")[:top]]
    return RankList(gallery_indices=top_idx, distances=row[top_idx], matches=g_pids[top_idx] == q_pid)
