#!/usr/bin/env python3
"""PyTorch's time for the ops of `xent bench`, on the same shapes, as JSON.

    python3 scripts/pytorch_peer.py --device cuda --json torch-cuda.json
    xent bench --peer torch-cuda.json
    python3 scripts/pytorch_peer.py --device cpu --quick --json torch-cpu.json
    xent bench --quick --peer torch-cpu.json     # beside xent's CPU column

Each op is what a PyTorch user writes for the same result (eager mode, f32): cross-entropy
and BCE are the loss and its backward (mean reduction, as `xent bench` times them), the
information-theory ops start from logits like the bench's, linear cross-entropy is F.linear,
F.cross_entropy and the backward for the hidden states and the weight (`--linear-shapes`). Times are the median of CUDA-event
timed repetitions after a warm-up, over three inputs in turn so that no cache holds the input
(as the bench does). On the CPU (`--device cpu`, PyTorch's default thread count: one per
core) each repetition is timed by the wall clock (PyTorch's CPU ops return when done).
"""

import argparse
import json
import math
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# Twins of `Plan::full`, `OPS` and `table_rows` in src/bench.rs (this script runs where no
# Rust is built).
SHAPES = [
    (65_536, 10),
    (65_536, 1000),
    (32, 1000),
    (1, 262_144),
    (8, 131_072),
    (4096, 32_000),
    (512, 128_256),
]
OPS = [
    "softmax",
    "softmax_bf16",
    "softmax_f16",
    "log_softmax",
    "logsumexp",
    "sigmoid",
    "logit",
    "cross_entropy",
    "cross_entropy_bf16",
    "cross_entropy_f16",
    "bce",
    "entropy",
    "kl",
    "js",
    "joint",
]


# Twin of `Plan::quick().shapes`.
QUICK_SHAPES = [(65_536, 10), (32, 1000), (1, 262_144), (8, 131_072), (4096, 4096)]

# Twin of `Plan::full().linear` and `Plan::quick().linear`: linear cross-entropy's N, H, V.
LINEAR_SHAPES = [(1024, 512, 32_000), (1024, 512, 128_256)]
QUICK_LINEAR_SHAPES = [(128, 256, 32_000)]
LINEAR = "linear_cross_entropy"


def table_rows(cells):
    """X of an X x Y table of `cells` cells: the largest divisor up to its square root."""
    return next(x for x in range(math.isqrt(cells), 0, -1) if cells % x == 0)


# An op ending in _bf16 or _f16 is the op on tensors of that type (as in xent's table).
TYPES = {"_bf16": torch.bfloat16, "_f16": torch.float16}


def op_fn(op, rows, cols, dev):
    """A closure running `op` on input k of three, and the inputs' setup."""
    dtype = torch.float32
    for suffix, t in TYPES.items():
        if op.endswith(suffix):
            op, dtype = op[: -len(suffix)], t
    xs = [(torch.rand(rows, cols, device=dev) * 16 - 8).to(dtype) for _ in range(3)]
    q = torch.rand(rows, cols, device=dev) * 16 - 8
    probs = torch.sigmoid(xs[0])
    classes = (torch.arange(rows, device=dev) * 7919) % cols

    def loss_and_grad(x, f):
        x = x.detach().requires_grad_()
        f(x).backward()
        return x.grad

    def js(x):
        p, qq = torch.softmax(x, -1), torch.softmax(q, -1)
        m = 0.5 * (p + qq)
        return 0.5 * (torch.xlogy(p, p) - p * m.log()).sum(-1) + 0.5 * (
            torch.xlogy(qq, qq) - qq * m.log()
        ).sum(-1)

    def joint(_):
        t = probs.view(rows, table_rows(cols), -1)
        t = t / t.sum((1, 2), keepdim=True)
        hxy = -torch.xlogy(t, t).sum((1, 2))
        px, py = t.sum(2), t.sum(1)
        hx, hy = -torch.xlogy(px, px).sum(-1), -torch.xlogy(py, py).sum(-1)
        return torch.stack([hxy, hx, hy, hxy - hy, hxy - hx, hx + hy - hxy])

    def entropy(x):
        lp = torch.log_softmax(x, -1)
        return -(lp.exp() * lp).sum(-1)

    def kl(x):
        lp, lq = torch.log_softmax(x, -1), torch.log_softmax(q, -1)
        return (lp.exp() * (lp - lq)).sum(-1)

    fns = {
        "softmax": lambda x: torch.softmax(x, -1),
        "log_softmax": lambda x: torch.log_softmax(x, -1),
        "logsumexp": lambda x: torch.logsumexp(x, -1),
        "sigmoid": torch.sigmoid,
        "logit": torch.logit,
        "cross_entropy": lambda x: loss_and_grad(
            x, lambda v: F.cross_entropy(v, classes)
        ),
        "bce": lambda x: loss_and_grad(
            x, lambda v: F.binary_cross_entropy_with_logits(v, probs)
        ),
        "entropy": entropy,
        "kl": kl,
        "js": js,
        "joint": joint,
    }
    if op == "logit":
        xs = [torch.sigmoid(x) for x in xs]
    f = fns[op]
    return lambda k: f(xs[k])


def linear_fn(n, hidden, classes, dev):
    """Linear cross-entropy as a PyTorch user writes it: the logits by F.linear, the loss by
    F.cross_entropy (mean), and the backward for the hidden states and the weight (as
    `xent bench` times it: no bias). The whole N x V logits exist, as in eager PyTorch."""
    hs = [
        (torch.rand(n, hidden, device=dev) * 2 - 1).requires_grad_() for _ in range(3)
    ]
    w = ((torch.rand(classes, hidden, device=dev) * 2 - 1) / math.sqrt(hidden))
    w.requires_grad_()
    classes_of = (torch.arange(n, device=dev) * 7919) % classes

    def run(k):
        h = hs[k]
        h.grad, w.grad = None, None
        F.cross_entropy(F.linear(h, w), classes_of).backward()
        return h.grad, w.grad

    return run


def time_op(run, budget_s, clock):
    """Median ms over timed repetitions (3 at least, 51 at most); `clock(f)` runs f and
    returns its milliseconds."""
    clock(lambda: run(0))
    times, spent, k = [], 0.0, 0
    while len(times) < 3 or (spent < budget_s and len(times) < 51):
        k = (k + 1) % 3
        ms = clock(lambda: run(k))
        times.append(ms)
        spent += ms / 1e3
    return statistics.median(times), len(times)


def cuda_clock(f):
    """f's time by CUDA events."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    f()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def wall_clock(f):
    """f's wall-clock time (CPU ops are done when they return)."""
    start = time.perf_counter()
    f()
    return (time.perf_counter() - start) * 1e3


def cpu_name():
    """The processor's model name, where Linux tells it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_shape(text):
    r, c = text.lower().split("x")
    return int(r), int(c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", required=True)
    ap.add_argument("--ops", type=lambda s: s.split(","), default=OPS)
    ap.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")])
    ap.add_argument(
        "--linear-shapes",
        type=lambda s: [tuple(int(d) for d in x.lower().split("x")) for x in s.split(",")],
        help="linear cross-entropy's NxHxV shapes (with --ops " + LINEAR + ")",
    )
    ap.add_argument("--budget", type=float, default=0.4, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true", help="the shapes of `xent bench --quick`")
    args = ap.parse_args()
    if args.device not in ("cuda", "cpu"):
        sys.exit("pytorch_peer: --device cuda or cpu")
    dev = torch.device(args.device)
    on_cpu = args.device == "cpu"
    clock = wall_clock if on_cpu else cuda_clock
    free = (lambda: None) if on_cpu else torch.cuda.empty_cache
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    linear_shapes = args.linear_shapes or (
        QUICK_LINEAR_SHAPES if args.quick else LINEAR_SHAPES
    )
    rows = []

    def measure(label, make_run, row):
        """Times the closure `make_run()` builds and appends `row` with its time; a shape
        the device cannot run (out of memory, say) is reported and skipped."""
        run = None
        try:
            run = make_run()
            ms, reps = time_op(run, args.budget, clock)
        except (RuntimeError, ValueError) as e:
            print(f"{label}: {str(e).splitlines()[0]}", file=sys.stderr)
            return
        finally:
            run = None
            free()
        rows.append({**row, "ms": ms, "reps": reps})
        print(f"{label:>40} {ms:9.3f} ms", flush=True)

    for r, c in shapes:
        for op in args.ops:
            if op in OPS:
                row = {"op": op, "rows": r, "cols": c}
                measure(f"{op} {r}x{c}", lambda: op_fn(op, r, c, dev), row)
    if LINEAR in args.ops or args.ops == OPS:
        for n, hidden, classes in linear_shapes:
            row = {"op": LINEAR, "rows": n, "cols": classes, "hidden": hidden}
            make = lambda: linear_fn(n, hidden, classes, dev)  # noqa: E731
            measure(f"{LINEAR} {n}x{hidden}x{classes}", make, row)
    if on_cpu:
        device = f"{cpu_name()}, {torch.get_num_threads()} threads"
    else:
        device = torch.cuda.get_device_name(dev)
    out = {
        "peer": f"PyTorch {torch.__version__} eager",
        "device": device,
        "device_type": args.device,
        "rows": rows,
    }
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
