"""SCALE-Sim v3.0.0's memory system in its CALC (estimate-bandwidth) mode, reproduced count for count.

``dram_model: scalesim`` uses this module for DRAM traffic and the cycles including prefetch. It
re-implements the behaviour of SCALE-Sim's ``read_buffer_estimate_bw``, ``write_buffer`` and
``double_buffered_scratchpad`` (SCALE-Sim project, https://github.com/scalesim-project/scale-sim-v2,
``scalesim/memory/``) from a reading of their logic, without SCALE-Sim's per-cycle demand matrices:

- **Demand streams.** Each fold of the dense array requests operand addresses in a fixed pattern of
  demand-matrix rows (one row per cycle; :mod:`wfn_sim.systolic` has the fold lengths). Streamed
  operands enter skewed (element ``(s, c)`` of a fold at row ``offset + s + c``); the stationary
  operand is loaded in ``rows`` cycles, last tap first. Addresses follow SCALE-Sim's operand matrices:
  the ifmap is stored row, column, channel (a window tap ``j`` is ``(filter row, filter column, channel)``
  with channel fastest; taps that fall outside the input are no request), filter ``m`` tap ``k`` is
  word ``m*K + k``.
- **Read buffers (ifmap, filter).** A buffer of S words (one byte each) is 100 sets of ``floor(S/100)``
  words, half of them active. Every address not already seen in the current *epoch* is a DRAM read;
  an epoch ends once it holds 50 sets of new addresses, and the buffer then forgets them all (SCALE-Sim
  drops the sets of the epoch just read). So DRAM reads = the sum over epochs of distinct addresses.
  The first 50 sets are prefetched before the first request, at 10 words per cycle; later prefetches
  fill the window between the previous two epoch ends. The DRAM trace therefore starts
  ``ceil(50*floor(S/100)/10)`` cycles before the first request (when at least one epoch completes; else
  ``ceil(sets*floor(S/100)/10)`` cycles before cycle 0) and stops one cycle after the last epoch end.
- **Write buffer (ofmap).** Every output word written to the SRAM is kept in lines of ``cols`` words;
  when more than half of the buffer is in use and no drain is running, the partial line is closed and
  ``ceil(S/2/cols)`` lines drain to DRAM, one line per cycle. A drain counts every slot of its lines
  except the empty slots of its last line, so a partial line closed in the middle of a drain is counted
  in full (this is why SCALE-Sim reports e.g. 3,612,703 ofmap DRAM writes for 3,612,672 SRAM writes).
  A write into a full buffer during a drain stalls the array until the drain ends. At the end the rest
  drains from the last compute cycle on.
- **Cycles including prefetch** = last ofmap drain cycle - the earlier of the ifmap and filter DRAM
  start cycles.

Padded PyTorch layers are given the smallest unpadded input with the same output size (as a SCALE-Sim
topology must be written); dilation, which SCALE-Sim lacks, spaces the taps in that input. Grouped
convolutions run as ``groups`` SCALE-Sim layers one after another (word counts and cycles add up).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .arch import ArchConfig
from .systolic import dense_counts, mapping
from .workload import Layer

PREFETCH_WORDS_PER_CYCLE = 10  # SCALE-Sim's read-buffer prefetch bandwidth in CALC mode
GOLDEN_COLUMNS = (
    "total_cycles_incl_prefetch", "total_cycles", "stall_cycles", "overall_util_pct", "mapping_efficiency_pct",
    "compute_util_pct", "ifmap_sram_start", "ifmap_sram_stop", "ifmap_sram_reads", "filter_sram_start",
    "filter_sram_stop", "filter_sram_reads", "ofmap_sram_start", "ofmap_sram_stop", "ofmap_sram_writes",
    "ifmap_dram_start", "ifmap_dram_stop", "ifmap_dram_reads", "filter_dram_start", "filter_dram_stop",
    "filter_dram_reads", "ofmap_dram_start", "ofmap_dram_stop", "ofmap_dram_writes",
)


# ----------------------------------------------------------------------------------------------- streams
class _Geometry:
    """Addresses of one conv group as SCALE-Sim lays them out (ifmap row/column/channel, no padding)."""

    def __init__(self, layer: Layer):
        if layer.ceil_mode:
            h, w = layer.in_h, layer.in_w
        else:  # smallest unpadded input with the same output size
            h = (layer.out_h - 1) * layer.stride_h + (layer.kernel_h - 1) * layer.dilation_h + 1
            w = (layer.out_w - 1) * layer.stride_w + (layer.kernel_w - 1) * layer.dilation_w + 1
        c = layer.in_channels // layer.groups
        orow, ocol = np.divmod(np.arange(layer.gemm_n, dtype=np.int64), layer.out_w)
        pr, pc = orow * layer.stride_h, ocol * layer.stride_w
        crow, rem = np.divmod(np.arange(layer.gemm_k, dtype=np.int64), layer.kernel_w * c)
        ccol, ch = np.divmod(rem, c)
        tr, tc = crow * layer.dilation_h, ccol * layer.dilation_w
        valid = ((pr[:, None] + tr[None, :]) < h) & ((pc[:, None] + tc[None, :]) < w)
        addr = ((pr * w + pc) * c)[:, None] + ((tr * w + tc) * c + ch)[None, :]
        self.ifmap = np.where(valid, addr, -1)  # (N, K) SCALE-Sim's ifmap operand matrix
        self.ifmap_words = h * w * c
        self.k, self.m, self.n = layer.gemm_k, layer.gemm_m, layer.gemm_n


@lru_cache(maxsize=256)
def _skew(s: int, w: int):
    """Fold rows and (s, c) of a skewed s x w block (element (s, c) at row s + c), in request order."""
    d = np.arange(s + w - 1)[:, None]
    c = np.arange(w)[None, :]
    ss = d - c
    ok = (ss >= 0) & (ss < s)
    dd = np.broadcast_to(d, ok.shape)[ok]
    cc = np.broadcast_to(c, ok.shape)[ok]
    return dd, ss[ok], cc


@lru_cache(maxsize=256)
def _stationary(kf: int, w: int, rows: int):
    """Fold rows and (k, c) of a stationary kf x w block loaded last tap first (row rows-1-k), in order."""
    k = np.repeat(np.arange(kf - 1, -1, -1), w)
    c = np.tile(np.arange(w), kf)
    return rows - 1 - k, k, c


def _interval_counts(a0, a1, b0, b1, x):
    """#{(a, b): a0 <= a < a1, b0 <= b < b1, a + b = x} for each x (vectorised)."""
    lo = np.maximum(a0, x - (b1 - 1))
    hi = np.minimum(a1 - 1, x - b0)
    return np.maximum(0, hi - lo + 1)


def _folds(layer: Layer, arch: ArchConfig, geo: _Geometry):
    """Per fold, in SCALE-Sim's order: (ifmap rows, ifmap addresses, filter rows, filter addresses,
    ofmap words per fold row). Rows are fold-local; invalid (-1) ifmap requests are already dropped."""
    mp = mapping(layer, arch)
    r, c, length = mp.rows, mp.cols, mp.fold_cycles
    k_all, m_all, n_all = geo.k, geo.m, geo.n
    x = np.arange(length)
    for fc in range(mp.col_folds):
        for fr in range(mp.row_folds):
            if arch.dataflow == "ws_systolic":
                kf, mf = min(r, k_all - fr * r), min(c, m_all - fc * c)
                d, t, j = _skew(n_all, kf)
                i_rows, i_addr = r + d, geo.ifmap[t, fr * r + j]
                f_rows, kk, mm = _stationary(kf, mf, r)
                f_addr = (fc * c + mm) * k_all + fr * r + kk
                out = _interval_counts(0, n_all, 0, mf, x - (2 * r - 1))
            elif arch.dataflow == "os_systolic":
                nf, mf = min(r, n_all - fr * r), min(c, m_all - fc * c)
                d, kk, rr = _skew(k_all, nf)
                i_rows, i_addr = d, geo.ifmap[fr * r + rr, kk]
                f_rows, kk2, cc = _skew(k_all, mf)
                f_addr = (fc * c + cc) * k_all + kk2
                out = _interval_counts(r - nf, r, 0, mf, x - (k_all - 1))
            else:  # is_systolic
                kf, nf = min(r, k_all - fr * r), min(c, n_all - fc * c)
                i_rows, kk, nn = _stationary(kf, nf, r)
                i_addr = geo.ifmap[fc * c + nn, fr * r + kk]
                d, mm, kk2 = _skew(m_all, kf)
                f_rows, f_addr = r + d, mm * k_all + fr * r + kk2
                out = _interval_counts(0, m_all, 0, nf, x - (2 * r - 1))
            ok = i_addr >= 0
            if not ok.all():
                i_rows, i_addr = i_rows[ok], i_addr[ok]
            yield i_rows, i_addr, f_rows, f_addr, out


# ------------------------------------------------------------------------------------------ read buffer
class _ReadBuffer:
    """SCALE-Sim's estimate-bandwidth read buffer: DRAM reads are the distinct addresses of each epoch."""

    def __init__(self, size_words: int, space: int):
        self.items = size_words // 100
        if self.items < 1:
            raise ValueError(f"dram_model 'scalesim': an SRAM of {size_words} words is below SCALE-Sim's "
                             "minimum of 100 words (it splits each buffer into 100 sets)")
        self.first_epoch = 50 * self.items  # active half: 50 sets
        self.later_epoch = 50 * self.items  # prefetch half: 50 sets
        self.stamp = np.zeros(space, dtype=np.int32)
        self.scratch = np.zeros(space, dtype=np.int64)
        self.epoch = 1
        self.count = 0
        self.reads = 0
        self.epochs_done = 0
        self.first_cycle = None
        self.last_cycle = None
        self.last_epoch_end = None

    def feed(self, cycles: np.ndarray, addrs: np.ndarray) -> None:
        """Requests in order (cycles non-decreasing, addresses >= 0)."""
        if addrs.size == 0:
            return
        if self.first_cycle is None:
            self.first_cycle = int(cycles[0])
        self.last_cycle = int(cycles[-1])
        pos, total = 0, addrs.size
        while pos < total:
            need = (self.first_epoch if self.epochs_done == 0 else self.later_epoch) - self.count
            end = min(total, pos + max(2 * need, 1 << 16))
            window = addrs[pos:end]
            idx = np.arange(window.size)
            self.scratch[window[::-1]] = idx[::-1]  # repeated indices: the last write (first occurrence) wins
            new = (self.scratch[window] == idx) & (self.stamp[window] != self.epoch)
            seen = np.cumsum(new)
            if seen[-1] >= need:
                close = int(np.searchsorted(seen, need))
                self.reads += need + self.count
                self.count = 0
                self.epochs_done += 1
                self.epoch += 1
                self.last_epoch_end = int(cycles[pos + close])
                pos += close + 1
            else:
                self.stamp[window[new]] = self.epoch
                self.count += int(seen[-1])
                pos = end

    def report(self) -> tuple[int, int, int]:
        """(DRAM trace start cycle, stop cycle, reads), as SCALE-Sim's DETAILED_ACCESS_REPORT gives them."""
        reads = self.reads + self.count
        if self.epochs_done == 0:
            sets = math.ceil(self.count / self.items)
            return -math.ceil(sets * self.items / PREFETCH_WORDS_PER_CYCLE), -1, reads
        start = self.first_cycle - math.ceil(self.first_epoch / PREFETCH_WORDS_PER_CYCLE)
        return start, self.last_epoch_end + 1, reads


# ----------------------------------------------------------------------------------------- write buffer
class _WriteBuffer:
    """SCALE-Sim's ofmap write buffer: lines of ``line_words``, drains of half the buffer, one line per cycle."""

    def __init__(self, size_words: int, line_words: int):
        self.size, self.line = size_words, line_words
        drain_size = size_words - math.ceil(size_words * 0.5)
        self.threshold = size_words - drain_size  # a drain starts when free space falls below this
        self.drain_lines = math.ceil(drain_size / line_words)
        self.free, self.fill, self.lines, self.partial = size_words, 0, 0, {}
        self.drained_to, self.writes, self.first, self.last = 0, 0, None, None

    def store(self, n: int) -> None:
        self.free -= n
        self.fill += n
        self.lines += self.fill // self.line
        self.fill %= self.line

    def drain(self, cycle: int) -> int:
        """Close the partial line, drain up to ``drain_lines`` lines from ``cycle`` on; returns the end cycle."""
        if self.fill:
            self.partial[self.lines] = self.fill
            self.lines += 1
            self.fill = 0
        end = min(self.drained_to + self.drain_lines, self.lines)
        count = end - self.drained_to
        data = count * self.line - (self.line - self.partial.get(end - 1, self.line))  # only the last line's gaps
        self.writes += data
        self.free += data
        self.drained_to = end
        self.first = cycle if self.first is None else self.first
        self.last = max(self.last or cycle, cycle + count - 1)  # the final drains overlap a running one
        return cycle + count - 1

    def pending(self) -> bool:
        return self.drained_to < self.lines or self.fill > 0


def _write_buffer(words_per_row: np.ndarray, size_words: int, line_words: int) -> dict:
    """SCALE-Sim's ofmap write buffer over the words written in each demand row (one row per cycle)."""
    buf = _WriteBuffer(size_words, line_words)
    cum = np.concatenate(([0], np.cumsum(words_per_row, dtype=np.int64)))
    n_words, n_rows = int(cum[-1]), words_per_row.size
    drain_end, stall, stall_events, p = 0, 0, [], 0

    def row_of(q):
        return int(np.searchsorted(cum, q, side="right")) - 1

    while p < n_words:
        row = row_of(p)
        if row + stall < drain_end:  # a drain is running: words go in until it ends or the buffer is full
            avail = int(cum[min(drain_end - stall, n_rows)]) - p
            if avail < buf.free:
                buf.store(avail)
                p += avail
                continue
            k = max(buf.free, 1)  # this word finds the buffer full: the array waits for the drain
            buf.store(k)
            p += k
            stalled_row = row_of(p - 1)
            stall = drain_end - stalled_row
            stall_events.append((stalled_row, stall))
            continue
        k = max(1, buf.free - buf.threshold + 1)  # words until free space falls below the threshold
        if p + k > n_words:
            buf.store(n_words - p)
            break
        buf.store(k)
        p += k
        drain_end = buf.drain(row_of(p - 1) + stall)
    total_cycles = cycle = n_rows - 1 + stall
    while buf.pending():
        cycle = buf.drain(cycle) + 1
    nonempty = np.flatnonzero(words_per_row)
    return {"writes": buf.writes, "start": buf.first, "stop": buf.last, "stall_cycles": stall,
            "total_cycles": total_cycles, "stall_events": stall_events,
            "first_row": int(nonempty[0]), "last_row": int(nonempty[-1])}


def _stall_before(rows: np.ndarray, events, inclusive: bool = False) -> np.ndarray:
    """Stall cycles accumulated before (or, inclusive, after) each row."""
    if not events:
        return np.zeros_like(rows)
    ev_rows = np.array([e[0] for e in events])
    ev_stall = np.concatenate(([0], [e[1] for e in events]))
    return ev_stall[np.searchsorted(ev_rows, rows, side="right" if inclusive else "left")]


# ---------------------------------------------------------------------------------------------- reports
def layer_report(layer: Layer, arch: ArchConfig) -> dict:
    """SCALE-Sim v3.0.0's COMPUTE_REPORT and DETAILED_ACCESS_REPORT entries of one conv group
    (:data:`GOLDEN_COLUMNS`) for ``layer`` on ``arch`` (CALC mode, one-byte words)."""
    if layer.groups != 1:
        raise ValueError(f"layer {layer.name!r}: SCALE-Sim has no grouped convolution; layer_report takes "
                         f"groups=1 (got {layer.groups}); counts of grouped layers add up per group")
    geo = _Geometry(layer)
    mp = mapping(layer, arch)
    length = mp.fold_cycles
    ifmap = _ReadBuffer(arch.ifmap_sram_kb * 1024, geo.ifmap_words)
    filt = _ReadBuffer(arch.filter_sram_kb * 1024, geo.k * geo.m)
    per_fold = list(_folds(layer, arch, geo))
    out_rows = np.concatenate([f[4] for f in per_fold])
    wb = _write_buffer(out_rows, arch.ofmap_sram_kb * 1024, arch.array_cols)
    events = wb["stall_events"]
    sram = {}
    for name, buf, ri, ai in (("ifmap", ifmap, 0, 1), ("filter", filt, 2, 3)):
        first = last = None
        for f, fold in enumerate(per_fold):
            rows, addrs = fold[ri], fold[ai]
            if rows.size == 0:
                continue
            cycles = f * length + rows
            cycles = cycles + _stall_before(cycles, events)
            buf.feed(cycles, addrs)
            first = int(cycles[0]) if first is None else first
            last = int(cycles[-1])
        sram[name] = (first + 1, last + 1)  # SCALE-Sim's SRAM hit latency is one cycle
    dense = dense_counts(layer, arch.replace(spill_psums_per_row_fold=True))
    total_cycles = wb["total_cycles"]
    i_start, i_stop, i_reads = ifmap.report()
    f_start, f_stop, f_reads = filt.report()
    first_out = wb["first_row"] + int(_stall_before(np.array([wb["first_row"]]), events, True)[0])
    last_out = wb["last_row"] + int(_stall_before(np.array([wb["last_row"]]), events, True)[0])
    return {
        "total_cycles_incl_prefetch": int(wb["stop"] - min(i_start, f_start)),
        "total_cycles": total_cycles, "stall_cycles": wb["stall_cycles"],
        "overall_util_pct": layer.macs * 100 / (total_cycles * arch.num_pes),
        "mapping_efficiency_pct": dense["mapping_efficiency_pct"], "compute_util_pct": dense["compute_util_pct"],
        "ifmap_sram_start": sram["ifmap"][0], "ifmap_sram_stop": sram["ifmap"][1],
        "ifmap_sram_reads": dense["ifmap_sram_reads"],
        "filter_sram_start": sram["filter"][0], "filter_sram_stop": sram["filter"][1],
        "filter_sram_reads": dense["filter_sram_reads"],
        "ofmap_sram_start": first_out, "ofmap_sram_stop": last_out, "ofmap_sram_writes": dense["ofmap_sram_writes"],
        "ifmap_dram_start": i_start, "ifmap_dram_stop": i_stop, "ifmap_dram_reads": i_reads,
        "filter_dram_start": f_start, "filter_dram_stop": f_stop, "filter_dram_reads": f_reads,
        "ofmap_dram_start": wb["start"], "ofmap_dram_stop": wb["stop"], "ofmap_dram_writes": wb["writes"],
    }


@lru_cache(maxsize=512)
def dram_counts(layer: Layer, arch: ArchConfig) -> dict:
    """DRAM words and cycles of a layer under SCALE-Sim's memory model (all groups, one after another).

    Cached: the dense, codebook and shift-add designs of one run share the same buffer behaviour."""
    one = layer if layer.groups == 1 else _one_group(layer)
    rep = layer_report(one, arch)
    g = layer.groups
    return {"ifmap_dram_reads": g * rep["ifmap_dram_reads"], "filter_dram_reads": g * rep["filter_dram_reads"],
            "ofmap_dram_writes": g * rep["ofmap_dram_writes"], "stall_cycles": g * rep["stall_cycles"],
            "cycles_incl_prefetch": g * rep["total_cycles_incl_prefetch"]}


def _one_group(layer: Layer) -> Layer:
    import dataclasses

    return dataclasses.replace(layer, in_channels=layer.in_channels // layer.groups,
                               out_channels=layer.out_channels // layer.groups, groups=1)


def arch_from_config(path, base: ArchConfig | None = None) -> ArchConfig:
    """The ArchConfig of a SCALE-Sim ``.cfg`` file (array, SRAM sizes, dataflow; CALC mode only)."""
    import configparser

    cfg = configparser.ConfigParser()
    if not cfg.read(path):
        raise FileNotFoundError(f"SCALE-Sim config {str(path)!r}: no such file")
    try:
        arch = cfg["architecture_presets"]
        dataflow = {"ws": "ws_systolic", "os": "os_systolic", "is": "is_systolic"}[arch["Dataflow"].strip()]
        fields = {"array_rows": int(arch["ArrayHeight"]), "array_cols": int(arch["ArrayWidth"]),
                  "ifmap_sram_kb": int(arch["IfmapSramSzkB"]), "filter_sram_kb": int(arch["FilterSramSzkB"]),
                  "ofmap_sram_kb": int(arch["OfmapSramSzkB"]), "dataflow": dataflow}
        mode = cfg["run_presets"]["InterfaceBandwidth"].strip()
    except KeyError as exc:
        raise ValueError(f"SCALE-Sim config {str(path)!r}: missing or unknown entry {exc}") from None
    if mode != "CALC":
        raise ValueError(f"SCALE-Sim config {str(path)!r}: InterfaceBandwidth {mode!r}; only CALC is reproduced")
    base = base if base is not None else ArchConfig()
    return base.replace(name=cfg["general"].get("run_name", base.name).strip(), dram_model="scalesim", **fields)
