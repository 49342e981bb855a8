"""Mutation testing of the core physics, pricing, noise and scheduling code (issue #32, part 4).

A small AST mutator: each mutant changes one expression of one function in one module, the mapped test
files run against it in a private copy of the repository, and the mutant is *killed* when they fail (or
time out) and *survives* when they pass. Hand-checked equivalent mutants are listed, with a reason each,
in ``benchmarks/mutation_equivalent.txt`` and left out of the kill rate.

Operators (each applied at one site at a time):

- ``arith``: ``+`` <-> ``-``, ``*`` <-> ``/`` (also ``//`` -> ``*``, ``**`` -> ``*``);
- ``const``: a number ``c`` -> ``c + 1``, ``0`` and ``2c`` (``0`` -> ``1``);
- ``cmp``: ``<`` <-> ``<=``, ``>`` <-> ``>=``;
- ``drop``: one term of a sum or difference dropped (``a + b`` -> ``a`` and -> ``b``);
- ``minmax``: ``max`` <-> ``min``.

Index arithmetic (inside ``x[...]``), docstrings and booleans are not mutated: they locate data rather than
compute a cost, and mutating them mostly makes the program crash, which says nothing about the tests.

The repository is copied once per worker (``git ls-files --cached --others --exclude-standard``, so the
working tree as it is, uncommitted edits included) under ``--workdir``; a worker writes one mutant into its
copy, runs ``python -m pytest -x -q -p no:cacheprovider <mapped tests>`` there with ``PYTHONPATH`` set to the
copy and a private Numba cache (``NUMBA_CACHE_DIR`` and ``HETMOE_CACHE_DIR`` under the copy), then restores
the file. The repository itself is never written. ``NUMBA_DISABLE_JIT=1`` does not work for the engine's
kernel (its record-array tables have no attribute access in pure Python), so a mutant of a numba-compiled
module recompiles it in the copy: about a minute per ``sim/engine/kernel.py`` mutant on two cores.

Usage::

    python benchmarks/mutation.py                                # every module, every mutant
    python benchmarks/mutation.py --modules arch/costs.py --max-mutants 40 --seed 0 --jobs 2
    python benchmarks/mutation.py --list --modules sim/metrics.py   # print the mutants, run nothing
    python benchmarks/mutation.py --modules sim/metrics.py --only 'sim/metrics.py:percentiles_us:const:3 -> 0#0'

Prints a table per module (mutants, killed, survived, equivalent, kill rate of the non-equivalent ones)
and the surviving mutants; ``--json PATH`` writes every outcome.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT_FILE = Path(__file__).with_name("mutation_equivalent.txt")


@dataclass(frozen=True)
class Target:
    """A module to mutate: the functions whose bodies are mutated (None: every function), the tests that
    must kill its mutants, and whether it is numba-compiled (then the mutant runs with the JIT off)."""

    tests: tuple[str, ...]
    functions: tuple[str, ...] | None = None
    numba: bool = False


# module -> tests (picked by which tests import the module and pin its numbers)
TARGETS: dict[str, Target] = {
    "arch/costs.py": Target(("tests/test_arch_costs.py", "tests/test_pricing_closed_forms.py",
                             "tests/test_cost_review3.py", "tests/test_mutation_killers.py",
                             "tests/test_area.py")),
    "arch/area.py": Target(("tests/test_area.py", "tests/test_pricing_closed_forms.py",
                            "tests/test_mutation_killers.py", "tests/test_buildable.py")),
    "arch/noise.py": Target(("tests/test_noise_closed_forms.py", "tests/test_noise.py",
                             "tests/test_relative_out_noise.py", "tests/test_mutation_killers.py",
                             "tests/test_noise_speed.py"),
                            functions=("converter_step", "quantize", "slot_grid", "device_model", "program",
                                       "_readout", "_program_fused", "output_noise_std", "noisy", "block_mvm",
                                       "_adc_params", "_block_absmax", "_adc", "_adc_fused", "_dac", "_k_adc",
                                       "_k_dac", "_nu_params", "_q_s", "_device", "_k_program",
                                       "quantize_weights_per_channel"),
                            numba=False),
    "sim/metrics.py": Target(("tests/test_pricing_closed_forms.py", "tests/test_mutation_killers.py",
                              "tests/test_engine.py", "tests/test_cost_review3.py", "tests/test_schedule.py")),
    "sim/engine/kernel.py": Target(("tests/test_engine.py", "tests/test_engine_streams.py",
                                    "tests/test_pricing_closed_forms.py", "tests/test_mutation_killers.py",
                                    "tests/test_schedule.py"),
                                   functions=("ps", "dram_ns", "simd_op", "vec", "gemm_cost", "digital_chain",
                                              "ld_op", "block_width", "analog_run", "feed_from",
                                              "gather_to_simd", "analog_chain", "ffn_chain", "routed_experts",
                                              "attention_stage", "ffn_stage", "lm_head_stage", "xfer"),
                                   numba=False),
}

ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
         ast.Pow: ast.Mult}
CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}


@dataclass(frozen=True)
class Mutant:
    module: str
    function: str
    line: int
    kind: str
    before: str          # source of the mutated expression
    after: str           # its replacement
    start: tuple[int, int]
    end: tuple[int, int]
    occurrence: int = 0  # among mutants of the same function with the same before -> after

    @property
    def key(self) -> str:
        """A name that survives edits elsewhere in the file: module:function:kind:before -> after#n."""
        return f"{self.module}:{self.function}:{self.kind}:{self.before} -> {self.after}#{self.occurrence}"


def _index_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside a subscript's index (not mutated)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            out.update(id(n) for n in ast.walk(node.slice))
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _replacements(node: ast.AST) -> list[tuple[str, ast.AST]]:
    """(kind, replacement node) for every mutation of ``node`` itself."""
    out: list[tuple[str, ast.AST]] = []
    if isinstance(node, ast.BinOp):
        new = ARITH.get(type(node.op))
        if new is not None:
            out.append(("arith", ast.BinOp(node.left, new(), node.right)))
        if isinstance(node.op, (ast.Add, ast.Sub)):
            out.append(("drop", node.left))
            if isinstance(node.op, ast.Add):
                out.append(("drop", node.right))
    elif isinstance(node, ast.AugAssign):
        new = ARITH.get(type(node.op))
        if new is not None:
            out.append(("arith", ast.AugAssign(node.target, new(), node.value)))
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in CMP:
        out.append(("cmp", ast.Compare(node.left, [CMP[type(node.ops[0])]()], node.comparators)))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        c = node.value
        values = [1] if c == 0 else list(dict.fromkeys(v for v in (c + 1, 0, c * 2) if v != c))
        out.extend(("const", ast.Constant(type(c)(v))) for v in values)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("max", "min"):
        other = "min" if node.func.id == "max" else "max"
        out.append(("minmax", ast.Call(ast.Name(other, ast.Load()), node.args, node.keywords)))
    return out


def mutants_of(module: str, target: Target, root: Path = ROOT) -> list[Mutant]:
    """Every mutant of ``module`` (relative path) in the functions ``target`` names."""
    source = (root / module).read_text()
    tree = ast.parse(source)
    skip = _index_nodes(tree) | _docstrings(tree)
    out: list[Mutant] = []
    seen: dict[tuple, int] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if target.functions is not None and fn.name not in target.functions:
            continue
        for node in ast.walk(fn):
            if node is fn or id(node) in skip or not hasattr(node, "lineno"):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            before = ast.get_source_segment(source, node)
            if before is None:
                continue
            for kind, new in _replacements(node):
                after = ast.unparse(ast.fix_missing_locations(new))
                if isinstance(node, ast.AugAssign):
                    before_text = before
                else:
                    before_text = before
                    after = f"({after})" if isinstance(new, (ast.BinOp, ast.Compare)) else after
                k = (fn.name, kind, before_text, after)
                n = seen.get(k, 0)
                seen[k] = n + 1
                out.append(Mutant(module, fn.name, node.lineno, kind, before_text, after,
                                  (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset), n))
    out.sort(key=lambda m: (m.start, m.end, m.kind, m.after))
    return out


def apply(source: str, m: Mutant) -> str:
    """``source`` with the span of ``m`` replaced by its mutation (one line's or several lines' text)."""
    lines = source.splitlines(keepends=True)
    (l0, c0), (l1, c1) = m.start, m.end
    # ast offsets are in UTF-8 bytes
    head = lines[l0 - 1].encode()[:c0].decode()
    tail = lines[l1 - 1].encode()[c1:].decode()
    return "".join(lines[:l0 - 1]) + head + m.after + tail + "".join(lines[l1:])


def load_equivalent(path: Path = EQUIVALENT_FILE) -> dict[str, str]:
    """key -> reason, from lines ``key | reason`` (``#`` starts a comment line)."""
    out: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, reason = line.partition(" | ")
                out[key.strip()] = reason.strip()
    return out


def make_copy(dest: Path) -> Path:
    """The working tree's tracked and untracked-but-not-ignored files, copied to ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in files:
        src = ROOT / f
        if f and src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def _env(copy: Path, numba_off: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["NUMBA_CACHE_DIR"] = str(copy / ".numba-cache")
    env["HETMOE_CACHE_DIR"] = str(copy / ".hetmoe-cache")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if numba_off:
        env["NUMBA_DISABLE_JIT"] = "1"
    return env


def run_tests(copy: Path, tests: tuple[str, ...], numba_off: bool, timeout_s: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout', seconds, last lines of output)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        p = subprocess.run(cmd, cwd=copy, env=_env(copy, numba_off), capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-3:])
    return ("pass" if p.returncode == 0 else "fail"), time.perf_counter() - t0, tail


def _worker(copy: Path, jobs: list[Mutant], timeout_s: float, log) -> list[dict]:
    out = []
    for m in jobs:
        target = TARGETS[m.module]
        path = copy / m.module
        original = path.read_text()
        try:
            path.write_text(apply(original, m))
            try:
                compile(path.read_text(), str(path), "exec")
                status, secs, tail = run_tests(copy, target.tests, target.numba, timeout_s)
            except SyntaxError as e:
                status, secs, tail = "fail", 0.0, f"syntax error: {e}"
        finally:
            path.write_text(original)
        res = {**asdict(m), "key": m.key, "status": status, "seconds": round(secs, 1), "tail": tail}
        log(res)
        out.append(res)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--max-mutants", type=int, default=None, help="per module; a deterministic sample by --seed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="workers, each with its own copy of the repository")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (a timeout counts as killed)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hetmoe-mutation"))
    ap.add_argument("--json", type=Path, default=None, help="write every outcome here")
    ap.add_argument("--only", nargs="+", default=None, metavar="KEY",
                    help="run just these mutants (keys as --list prints them; --max-mutants is then ignored)")
    ap.add_argument("--list", action="store_true", help="print the selected mutants and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each module's tests")
    args = ap.parse_args(argv)

    equivalent = load_equivalent()
    selected: list[Mutant] = []
    for mod in args.modules:
        ms = mutants_of(mod, TARGETS[mod])
        if args.only is not None:
            selected.extend(m for m in ms if m.key in args.only)
            continue
        if args.max_mutants is not None and len(ms) > args.max_mutants:
            ms = sorted(random.Random(f"{args.seed}:{mod}").sample(ms, args.max_mutants),
                        key=lambda m: (m.start, m.kind, m.after))
        selected.extend(ms)
    if args.only is not None:
        missing = set(args.only) - {m.key for m in selected}
        if missing:
            print("no such mutant: " + "; ".join(sorted(missing)), file=sys.stderr)
            return 2
    if args.list:
        for m in selected:
            print(f"{m.module}:{m.line}  {m.key}")
        print(f"{len(selected)} mutants")
        return 0

    jobs = max(1, args.jobs)
    copies = [make_copy(args.workdir / f"w{j}") for j in range(jobs)]
    if not args.no_baseline:
        for mod in args.modules:
            t = TARGETS[mod]
            status, secs, tail = run_tests(copies[0], t.tests, t.numba, args.timeout)
            print(f"baseline {mod}: {status} in {secs:.0f} s", flush=True)
            if status != "pass":
                print(tail, file=sys.stderr)
                return 1
    todo = [m for m in selected if m.key not in equivalent]
    skipped = [m for m in selected if m.key in equivalent]
    done = [0]

    def log(res: dict) -> None:
        done[0] += 1
        mark = "survived" if res["status"] == "pass" else "killed" + (" (timeout)" if res["status"] == "timeout" else "")
        print(f"[{done[0]}/{len(todo)}] {mark:17s} {res['seconds']:6.1f} s  {res['module']}:{res['line']} "
              f"{res['function']}: {res['before']} -> {res['after']}", flush=True)

    results: list[dict] = []
    with cf.ThreadPoolExecutor(jobs) as pool:
        parts = [todo[j::jobs] for j in range(jobs)]
        for fut in [pool.submit(_worker, copies[j], parts[j], args.timeout, log) for j in range(jobs)]:
            results.extend(fut.result())
    results.extend({**asdict(m), "key": m.key, "status": "equivalent", "reason": equivalent[m.key]} for m in skipped)

    print()
    print("| module | mutants | killed | survived | equivalent | kill rate (non-equivalent) |")
    print("|---|---:|---:|---:|---:|---:|")
    for mod in args.modules:
        rs = [r for r in results if r["module"] == mod]
        k = sum(r["status"] in ("fail", "timeout") for r in rs)
        s = sum(r["status"] == "pass" for r in rs)
        e = sum(r["status"] == "equivalent" for r in rs)
        rate = f"{100 * k / (k + s):.1f} %" if k + s else "-"
        print(f"| {mod} | {len(rs)} | {k} | {s} | {e} | {rate} |")
    survivors = [r for r in results if r["status"] == "pass"]
    if survivors:
        print("\nsurvivors:")
        for r in sorted(survivors, key=lambda r: (r["module"], r["line"])):
            print(f"  {r['module']}:{r['line']}  {r['key']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
