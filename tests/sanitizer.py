"""A memory sanitizer for Triton's interpreter: the GPU-only hazards the interpreter lets pass.

The interpreter runs a launch's programs one after another, reads and writes raw host
addresses, and ignores barriers, so a kernel that is wrong only on a GPU passes under it:
an unmasked load past a tensor reads whatever lies there, two programs writing one element
give the last writer's value, a program reading what another wrote in the same launch sees
it only because the interpreter ran that program first. ``sanitize()`` records every masked-in
byte each program of each launch loads and stores (``InterpreterBuilder.create_masked_load``
/ ``create_masked_store``, which every ``tl.load`` / ``tl.store`` goes through), and at the
end of the launch reports:

* ``out-of-bounds``: an access outside every storage the launch received as an argument
  (the only memory a kernel of this project may touch);
* ``write-write race``: one byte stored by two programs of the launch (this project uses no
  atomics, so any such byte is a race: the GPU runs the programs in any order, concurrently);
* ``read-write race``: one byte stored by one program and loaded by another in the same
  launch (on a GPU the load may run before or after the store);
* ``misaligned``: an element not at a multiple of its size (a bf16 pair loaded as one int32
  from an odd bf16 offset: a GPU faults with "misaligned address", the interpreter reads it);
* ``unordered read-after-write``: a program loads a byte it stored itself since its last
  ``tl.debug_barrier()``. On a GPU the load's thread need not be the store's (the two may
  map elements to threads in different layouts), and nothing orders one thread's global
  store before another thread's load without a CTA barrier (``bar.sync``).

And, the GPU's ``tl.dot`` rule: every operand's inner dimension at least 16 (NVIDIA's
``min_dot_size``; the interpreter accepts 1), raised at the dot like a compile error.

Atomics are not modelled (the project has none): a kernel that uses them is refused by the
sanitizer rather than reported wrongly. Accesses are kept per launch only (launches on one
stream are ordered). An access that strays into *another* argument's storage is not seen (the
storages are told apart by address only); the tests' NaN guard bands around their inputs
(``triton_helpers.guarded``) catch reads past a view inside its own storage. Costs ~10% of the
interpreter's time. The whole suite runs under it (``tests/conftest.py``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import os

import numpy as np

SANITIZE_ENV = "PAC_TRITON_SANITIZE"


def _interp_active() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def suite_sanitized() -> bool:
    """Whether the suite runs every test under ``sanitize()`` (``tests/conftest.py``): whenever
    the interpreter is on, unless ``PAC_TRITON_SANITIZE=0`` (it adds ~10% to the interpreted
    tests' time)."""
    return os.environ.get(SANITIZE_ENV, "1") not in ("", "0") and _interp_active()


@dataclass
class Finding:
    kind: str
    kernel: str
    detail: str

    def __str__(self):
        return f"{self.kind} in {self.kernel}: {self.detail}"


@dataclass
class _Launch:
    kernel: str
    starts: np.ndarray
    ends: np.ndarray
    names: list
    grid: tuple = (1, 1, 1)
    loads: list = field(default_factory=list)    # (bytes uint64 array, program)
    stores: list = field(default_factory=list)
    program: int = 0
    since_barrier: list = field(default_factory=list)  # this program's stored bytes since its last barrier


def _bytes(ptrs, mask, esize):
    p = np.asarray(ptrs, dtype=np.uint64)
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, dtype=bool), p.shape)
        p = p[m]
    p = p.reshape(-1)
    if esize == 1:
        return p
    return (p[:, None] + np.arange(esize, dtype=np.uint64)[None, :]).reshape(-1)


def _esize(handle):
    ty = handle.get_element_ty()
    return max(1, ty.primitive_bitwidth // 8)


def _nvidia_min_dot_size(lhs_type, rhs_type):
    return (1, 1, 32) if lhs_type.scalar.primitive_bitwidth == 8 else (1, 1, 16)


class Sanitizer:
    """Collects ``findings`` over the launches run inside ``sanitize()``."""

    def __init__(self):
        self.findings: list[Finding] = []
        self.launches = 0
        self._launch: _Launch | None = None

    # --- launch bookkeeping -------------------------------------------------------------------
    def begin(self, kernel, args_hst, kwargs_hst):
        ranges = []

        def add(name, a):
            if hasattr(a, "untyped_storage"):
                s = a.untyped_storage()
                if s.nbytes() > 0:
                    ranges.append((s.data_ptr(), s.data_ptr() + s.nbytes(), name))
            elif isinstance(a, tuple):
                for b in a:
                    add(name, b)
        for i, a in enumerate(args_hst):
            add(f"arg{i}", a)
        for k, a in kwargs_hst.items():
            add(k, a)
        ranges.sort()
        self._launch = _Launch(kernel, np.array([r[0] for r in ranges], dtype=np.uint64),
                               np.array([r[1] for r in ranges], dtype=np.uint64), [r[2] for r in ranges])

    def program(self, x, y, z, grid):
        L = self._launch
        if L is None:
            return
        L.grid = grid
        L.program = x + grid[0] * (y + grid[1] * z)
        L.since_barrier = []

    def barrier(self):
        if self._launch is not None:
            self._launch.since_barrier = []

    def inside(self, ptrs, mask, esize, kind):
        """``mask`` narrowed to the elements inside an argument's storage; an element outside is
        reported (once per kernel and kind) and left out, so that the interpreter neither
        corrupts the heap nor faults on it."""
        L = self._launch
        if L is None:
            return mask
        p = np.asarray(ptrs, dtype=np.uint64)
        m = np.broadcast_to(np.asarray(mask, dtype=bool), p.shape)
        if esize > 1:
            odd = m & (p % np.uint64(esize) != 0)
            if odd.any():
                self._report("misaligned", L, f"program {self._pid(L, L.program)} {kind}s {int(odd.sum())} "
                             f"{esize}-byte element(s) at addresses not a multiple of {esize} (first at "
                             f"{self._where(L, p[odd].reshape(-1)[:1])[0]})")
        ok = ~self._outside(L, p, esize)
        bad = m & ~ok
        if bad.any():
            self._report("out-of-bounds", L, f"program {self._pid(L, L.program)} {kind}s {int(bad.sum())} element(s) "
                         f"outside every argument's storage (first at {self._near(L, p[bad].reshape(-1)[0])})")
            return m & ok
        return mask

    def _record(self, ptrs, mask, esize, kind):
        """The launch and the masked-in bytes of one access, appended to its loads or stores;
        ``None`` outside a launch or for an access with nothing masked in."""
        L = self._launch
        if L is None:
            return None
        b = _bytes(ptrs, mask, esize)
        if b.size == 0:
            return None
        (L.loads if kind == "load" else L.stores).append((b, L.program))
        return L, b

    def load(self, ptrs, mask, esize):
        rec = self._record(ptrs, mask, esize, "load")
        if rec is None:
            return
        L, b = rec
        if L.since_barrier:
            hit = np.isin(b, np.concatenate(L.since_barrier))
            if hit.any():
                self._report("unordered read-after-write", L,
                             f"program {self._pid(L, L.program)} loads {int(hit.sum())} byte(s) it stored since its "
                             f"last tl.debug_barrier() (first at {self._where(L, b[hit][:1])[0]})")

    def store(self, ptrs, mask, esize):
        rec = self._record(ptrs, mask, esize, "store")
        if rec is not None:
            rec[0].since_barrier.append(rec[1])

    def end(self):
        L, self._launch = self._launch, None
        if L is None:
            return
        self.launches += 1
        if not L.stores:
            return
        wb = np.concatenate([a for a, _ in L.stores])
        wp = np.concatenate([np.full(a.size, p, dtype=np.int64) for a, p in L.stores])
        pairs = np.unique(np.stack([wb, wp.astype(np.uint64)], axis=1), axis=0)
        addr, counts = np.unique(pairs[:, 0], return_counts=True)
        multi = addr[counts > 1]
        if multi.size:
            at = pairs[np.isin(pairs[:, 0], multi[:1])]
            self._report("write-write race", L,
                         f"{multi.size} byte(s) stored by more than one program (first at "
                         f"{self._where(L, multi[:1])[0]} by programs {[self._pid(L, int(p)) for p in at[:4, 1]]})")
        # one writer per byte from here on (the first, where there were several)
        owner_addr = pairs[:, 0]
        first = np.r_[True, owner_addr[1:] != owner_addr[:-1]]
        owner_addr, owner_prog = owner_addr[first], pairs[first, 1].astype(np.int64)
        for b, p in L.loads:
            idx = np.searchsorted(owner_addr, b)
            idx_c = np.minimum(idx, owner_addr.size - 1)
            written = owner_addr[idx_c] == b
            other = written & (owner_prog[idx_c] != p)
            if other.any():
                w = int(owner_prog[idx_c][other][0])
                self._report("read-write race", L,
                             f"program {self._pid(L, p)} loads {int(other.sum())} byte(s) that program "
                             f"{self._pid(L, w)} stores in the same launch (first at "
                             f"{self._where(L, b[other][:1])[0]})")
                break

    # --- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _outside(L, p, esize):
        """Elements at ``p`` (``esize`` bytes each) not wholly inside one argument's storage."""
        if L.starts.size == 0:
            return np.ones(p.shape, dtype=bool)
        i = np.searchsorted(L.starts, p, side="right").astype(np.int64) - 1
        ic = np.maximum(i, 0)
        return ~((i >= 0) & (p + np.uint64(esize) <= L.ends[ic]))

    def _near(self, L, addr):
        if L.starts.size == 0:
            return hex(int(addr))
        d = [(abs(int(addr) - int(s)), n, int(addr) - int(s)) for s, n in zip(L.starts, L.names)]
        d += [(abs(int(addr) - int(e)), n, int(addr) - int(e)) for e, n in zip(L.ends, L.names)]
        _, name, off = min(d)
        return f"{off:+d} bytes from {'the end of ' if any(int(addr) - int(e) == off for e in L.ends) else ''}{name}"

    def _where(self, L, addrs):
        out = []
        for a in addrs:
            i = int(np.searchsorted(L.starts, a, side="right")) - 1
            out.append(f"{L.names[i]} byte {int(a) - int(L.starts[i])}" if i >= 0 else hex(int(a)))
        return out

    @staticmethod
    def _pid(L, p):
        gx, gy, _ = L.grid
        return (p % gx, (p // gx) % gy, p // (gx * gy))

    def _report(self, kind, L, detail):
        if not any(f.kind == kind and f.kernel == L.kernel for f in self.findings):
            self.findings.append(Finding(kind, L.kernel, detail))


_ACTIVE: list[Sanitizer] = []


@contextlib.contextmanager
def sanitize(gpu_dot_sizes: bool = True):
    """Run the block with every interpreted launch checked; yields the ``Sanitizer`` whose
    ``findings`` list what was found (empty: nothing). ``gpu_dot_sizes``: hold ``tl.dot`` to
    the GPU's minimum inner dimension (an error at the dot, as compiling would be). Does not
    nest (one at a time); not thread-safe (neither is the interpreter)."""
    if not _interp_active():
        raise RuntimeError("the sanitizer needs Triton's interpreter (TRITON_INTERPRET=1 before triton is imported)")
    if _ACTIVE:
        raise RuntimeError("sanitize() does not nest")
    from triton.runtime import interpreter as _interp
    s = Sanitizer()
    B, G = _interp.InterpreterBuilder, _interp.GridExecutor
    saved = dict(load=B.create_masked_load, store=B.create_masked_store, idx=B.set_grid_idx,
                 barrier=B.create_barrier, rmw=B.create_atomic_rmw, cas=B.create_atomic_cas,
                 init=G._init_args_hst, call=G.__call__)
    builder = _interp.interpreter_builder
    saved_dot = builder.codegen_fns.get("min_dot_size")

    # The builder's trailing arguments (cache / eviction policies, volatility) differ between
    # Triton versions (3.6: cache modifier and eviction policy apart; 3.9: one cache policy):
    # passed through as they come.
    def load(self, ptrs, mask, *rest, **kw):
        e = _esize(ptrs)
        m = s.inside(ptrs.data, mask.data, e, "load")
        if m is not mask.data:
            mask = type(mask)(np.ascontiguousarray(m), mask.dtype)
        s.load(ptrs.data, mask.data, e)
        return saved["load"](self, ptrs, mask, *rest, **kw)

    def store(self, ptrs, value, mask, *rest, **kw):
        e = _esize(ptrs)
        m = s.inside(ptrs.data, mask.data, e, "store")
        if m is not mask.data:
            mask = type(mask)(np.ascontiguousarray(m), mask.dtype)
        s.store(ptrs.data, mask.data, e)
        return saved["store"](self, ptrs, value, mask, *rest, **kw)

    def set_grid_idx(self, x, y, z):
        saved["idx"](self, x, y, z)
        s.program(x, y, z, self.grid_dim)

    def barrier(self):
        s.barrier()
        return saved["barrier"](self)

    def atomic(self, *args, **kwargs):
        raise NotImplementedError("the sanitizer does not model atomics")

    def init_args(self, args_dev, kwargs):
        args_hst, kwargs_hst = saved["init"](self, args_dev, kwargs)
        s.begin(getattr(self.fn, "__name__", str(self.fn)), args_hst, kwargs_hst)
        return args_hst, kwargs_hst

    def call(self, *args, **kwargs):
        try:
            return saved["call"](self, *args, **kwargs)
        finally:
            s.end()

    _ACTIVE.append(s)
    B.create_masked_load, B.create_masked_store, B.set_grid_idx = load, store, set_grid_idx
    B.create_barrier, B.create_atomic_rmw, B.create_atomic_cas = barrier, atomic, atomic
    G._init_args_hst, G.__call__ = init_args, call
    if gpu_dot_sizes:
        builder.codegen_fns["min_dot_size"] = _nvidia_min_dot_size
    try:
        yield s
    finally:
        _ACTIVE.remove(s)
        B.create_masked_load, B.create_masked_store, B.set_grid_idx = saved["load"], saved["store"], saved["idx"]
        B.create_barrier, B.create_atomic_rmw, B.create_atomic_cas = saved["barrier"], saved["rmw"], saved["cas"]
        G._init_args_hst, G.__call__ = saved["init"], saved["call"]
        builder.codegen_fns["min_dot_size"] = saved_dot
