"""The noisy forward pass, hetmoe against IBM aihwkit 1.2, one thread each, same weights and tokens.

Cases (``--cases``):

- ``olmoe-scaled``: the random OLMoE-shaped checkpoint of ``bench_accuracy.py`` (hidden 512, 4 layers,
  64 experts of width 256, top-8, vocabulary 8,192; 113 M weights), 8 sequences x 512 tokens, on
  ``aimc-3d-moe`` (512 x 512 slots, 8-bit DAC and ADC, out_noise 0.06, PCM programming and drift to
  one hour with global drift compensation), every matrix analog (``all-analog``: attention, router,
  experts, lm_head);
- ``tiny-moe-8x2``: the trained byte-level OLMoE of ``../shared/data`` (skipped when absent), its 96
  windows x 256 tokens, ``hermes-64`` set to aihwkit's defaults (7-bit DAC, 9-bit ADC, PCM, g_max 25),
  routed experts analog (``maxnn`` at fraction 0), the job the aihwkit cross-check in the README runs.

aihwkit gets the same model as a torch module (``nn.Linear`` per matrix, the same forward: RMSNorm,
q/k norm, RoPE, causal attention, softmax top-k routing, SwiGLU experts) whose analog matrices are
converted with ``convert_to_analog`` under an ``InferenceRPUConfig`` holding hetmoe's settings
(inp_res = 1/(2^dac - 2), out_res = 1/(2^adc - 2), out_bound, out_noise, ABS_MAX, ITERATIVE, tiles of
the slot size, weight_scaling_omega 1, ``PCMLikeNoiseModel``, ``GlobalDriftCompensation``), then
``program_analog_weights`` and ``drift_analog_weights(t_inference)``, then the tokens in the same
batches.

Timings (seconds, min / median / max of ``--repeats``, every process at one thread: OMP/OpenBLAS/MKL
threads 1, ``torch.set_num_threads(1)``), as CPU time (user + system of the process: what the work
costs, and what a shared machine's other load leaves alone) and as wall time:

- *pass*: programming (and drift) of the analog matrices plus the noisy model's forward pass over all
  tokens, in-process, after imports and compilation (hetmoe: ``ForwardRun.seconds`` program + noisy;
  its clean pass runs beside it and is not counted);
- *whole*: a fresh process end to end (hetmoe: ``python -m sim.cli accuracy``, which also runs the clean
  model and writes its reports; aihwkit: imports, reading, conversion, the pass).

aihwkit is run by ``--aihwkit-python`` (default: ``$AIHWKIT_PYTHON``, else this interpreter): it needs
torch, aihwkit and safetensors there, never in hetmoe's environment. When it cannot import them the
aihwkit rows are skipped with the reason.

Run: ``python benchmarks/bench_noisy_pass.py [--repeats 3] [--cases olmoe-scaled,tiny-moe-8x2]
[--aihwkit-python /path/to/venv/bin/python] [--devices numpy,cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "tiny-moe-8x2"
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}


# ----------------------------------------------------------------------------- cases

def cases(work: Path, names: list[str]) -> list[dict]:
    out = []
    for name in names:
        if name == "olmoe-scaled":
            sys.path.insert(0, str(ROOT))
            from benchmarks.bench_accuracy import SCALED
            from tests.moe_checkpoints import write_olmoe

            ckpt = work / "olmoe-scaled"
            if not ckpt.exists():
                write_olmoe(ckpt, SCALED, seed=0, shards=2, dtype="float16")
            ids = np.random.default_rng(0).integers(0, SCALED["vocab_size"], (8, 513))
            np.save(work / "olmoe-scaled.npy", ids)
            out.append(dict(name=name, checkpoint=str(ckpt), eval=str(work / "olmoe-scaled.npy"), hw="aimc-3d-moe",
                            sets=[], policy="all-analog", fraction=0.125, analog="all", batch=8, bits=None))
        elif name == "tiny-moe-8x2":
            if not SHARED.is_dir():
                print(f"{name}: skipped ({SHARED} is not present)")
                continue
            sets = ["analog.dac.bits=7", "precision.activation_bits=7", "analog.adc.bits=9",
                    "analog.noise.programming.model=pcm", "analog.noise.programming.g_max_us=25"]
            out.append(dict(name=name, checkpoint=str(SHARED / "checkpoint"), eval=str(SHARED / "eval_ids.npy"),
                            hw="hermes-64", sets=sets, policy="maxnn", fraction=0.0, analog="experts", batch=32,
                            bits=16))
        else:
            raise SystemExit(f"unknown case {name!r}")
    return out


def hetmoe_setup(case: dict, device: str = "numpy"):
    sys.path.insert(0, str(ROOT))
    from arch import load_chip
    from arch.noise import slot_physics
    from sim.functional.architecture import read_architecture
    from sim.functional.backend import backend
    from sim.functional.forward import ForwardRun
    from sim.placement import POLICIES, PlacementContext
    from workloads.checkpoints.stats import compute_stats

    from sim.cli.common import parse_overrides

    over = parse_overrides(case["sets"])
    chip = load_chip(case["hw"], over)
    phys = slot_physics(chip)
    ckpt = Path(case["checkpoint"])
    arch = read_architecture(ckpt)
    stats = compute_stats(ckpt, arch.shape, cache=False)
    placement = POLICIES[case["policy"]](PlacementContext(arch.shape, None, stats, case["fraction"]))

    def make() -> ForwardRun:
        return ForwardRun(arch, ckpt, phys, [placement], [0], backend(device), seed=0,
                          digital_weight_bits=case["bits"] or 16, batch_sequences=case["batch"])
    return chip, phys, make


def warm_up() -> None:
    """Compile (or load from numba's cache) the noise kernels outside the timed region."""
    from arch.noise import NormalStream, block_mvm, program
    from arch.spec import NoiseSpec, ProgrammingNoiseSpec

    s = NormalStream([0])
    x = s((4, 8))
    block_mvm(x, x, NoiseSpec(out_noise=0.06), 8, 8, s)
    program(x / np.abs(x).max(), NoiseSpec(programming=ProgrammingNoiseSpec(model="pcm", t_inference_s=10.0)),
            0.1, s)
    from sim.functional.forward import _rotate

    _rotate(s((1, 2, 1, 4)), s((2, 4)), s((2, 4)), None)


def hetmoe_pass(case: dict, repeats: int, device: str) -> tuple[list[float], list[float], dict]:
    _, _, make = hetmoe_setup(case, device)
    ids = np.load(case["eval"])
    warm_up()
    walls, cpus, last = [], [], {}
    for _ in range(repeats):
        run = make()
        tallies = run.run(ids)
        walls.append(run.seconds["program"] + run.seconds["noisy"])
        cpus.append(run.cpu_seconds["program"] + run.cpu_seconds["noisy"])
        t = list(tallies.values())
        last = dict(seconds=dict(run.cpu_seconds), ce_bits=t[1].ce_nats / t[1].tokens / np.log(2),
                    clean_bits=t[0].ce_nats / t[0].tokens / np.log(2), tokens=t[1].tokens)
    return walls, cpus, last


def timed(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd``; its wall seconds and its CPU seconds (user + system of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def hetmoe_whole(case: dict, repeats: int, device: str, work: Path) -> tuple[list[float], list[float]]:
    cmd = [sys.executable, "-m", "sim.cli", "accuracy", "--checkpoint", case["checkpoint"], "--eval", case["eval"],
           "--hw", case["hw"], "--policy", case["policy"], "--fraction", str(case["fraction"]), "--noise-seeds", "1",
           "--batch-sequences", str(case["batch"]), "--device", device, "--quiet", "--out", str(work / "out")]
    for s in case["sets"]:
        cmd += ["--set", s]
    if case["bits"]:
        cmd += ["--digital-weight-bits", str(case["bits"])]
    walls, cpus = [], []
    for _ in range(repeats):
        proc, wall, cpu = timed(cmd, cwd=ROOT, env={**os.environ, **ONE_THREAD})
        walls.append(wall)
        cpus.append(cpu)
        if proc.returncode:
            raise SystemExit(f"hetmoe accuracy failed:\n{proc.stderr}")
    return walls, cpus


# ----------------------------------------------------------------------------- aihwkit side

def aihwkit_spec(case: dict) -> dict:
    chip, phys, _ = hetmoe_setup(case)
    n, p = phys.noise, phys.noise.programming
    if p.model not in ("pcm", "hermes"):
        raise SystemExit(f"{case['name']}: the aihwkit side needs a pcm or hermes device model, not {p.model}")
    if n.out_noise_relative > 0 or n.out_range != "fixed":
        raise SystemExit(f"{case['name']}: aihwkit has no relative output noise or calibrated ADC range")
    return dict(checkpoint=case["checkpoint"], eval=case["eval"], batch=case["batch"], analog=case["analog"],
                inp_res=1.0 / (2 ** phys.dac_bits - 2), out_res=1.0 / (2 ** phys.adc_bits - 2),
                inp_bound=n.inp_bound, out_bound=n.out_bound, out_noise=n.out_noise, w_noise=n.w_noise,
                inp_noise=n.inp_noise, nm=n.noise_management, bm=n.bound_management, max_bm_res=n.max_bm_res,
                rows=phys.rows, cols=phys.cols, model=p.model, g_max=p.g_max_us, num_devices=p.num_devices,
                prog_noise_scale=p.prog_noise_scale, read_noise_scale=p.read_noise_scale,
                drift_scale=p.drift_scale, t_inference=p.t_inference_s, compensation=p.drift_compensation,
                weight_scaling=n.weight_scaling)


def aihwkit_main(spec: dict) -> None:
    """Runs in the aihwkit interpreter: torch + aihwkit + safetensors, nothing of hetmoe's."""
    t_start = time.perf_counter()
    import torch
    import torch.nn.functional as F
    from aihwkit.inference import GlobalDriftCompensation, HermesNoiseModel, PCMLikeNoiseModel
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.nn.modules.base import AnalogLayerBase
    from aihwkit.simulator.configs import InferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ckpt = Path(spec["checkpoint"])
    cfg = json.loads((ckpt / "config.json").read_text())
    tensors = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        tensors.update({k: v.float() for k, v in load_file(str(f)).items()})
    H, L, E, K = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_experts"], cfg["num_experts_per_tok"]
    nh = cfg["num_attention_heads"]
    hd = H // nh
    eps = cfg.get("rms_norm_eps", 1e-5)

    rpu = InferenceRPUConfig()
    rpu.forward.inp_res, rpu.forward.out_res = spec["inp_res"], spec["out_res"]
    rpu.forward.inp_bound, rpu.forward.out_bound = spec["inp_bound"], spec["out_bound"]
    rpu.forward.out_noise, rpu.forward.w_noise, rpu.forward.inp_noise = (spec["out_noise"], spec["w_noise"],
                                                                         spec["inp_noise"])
    rpu.forward.noise_management = (NoiseManagementType.ABS_MAX if spec["nm"] == "abs_max"
                                    else NoiseManagementType.NONE)
    rpu.forward.bound_management = (BoundManagementType.ITERATIVE if spec["bm"] == "iterative"
                                    else BoundManagementType.NONE)
    rpu.forward.max_bm_res = spec["max_bm_res"]
    rpu.mapping.max_input_size, rpu.mapping.max_output_size = spec["rows"], spec["cols"]
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = False
    scales = dict(prog_noise_scale=spec["prog_noise_scale"], read_noise_scale=spec["read_noise_scale"],
                  drift_scale=spec["drift_scale"])
    rpu.noise_model = (PCMLikeNoiseModel(g_max=spec["g_max"] or 25.0, **scales) if spec["model"] == "pcm" else
                       HermesNoiseModel(num_devices=spec["num_devices"], g_max=spec["g_max"], **scales))
    if spec["compensation"] == "global":
        rpu.drift_compensation = GlobalDriftCompensation()
    else:
        rpu.drift_compensation = None

    def linear(name: str, analog: bool) -> torch.nn.Module:
        w = tensors[name]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        return convert_to_analog(lin, rpu) if analog else lin

    everything = spec["analog"] == "all"
    layers = []
    for i in range(L):
        p = f"model.layers.{i}."
        layer = {n: linear(p + f"self_attn.{n}.weight", everything) for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        layer["router"] = linear(p + "mlp.gate.weight", everything)
        layer["experts"] = [{n: linear(p + f"mlp.experts.{e}.{n}.weight", True)
                             for n in ("gate_proj", "up_proj", "down_proj")} for e in range(E)]
        layer.update({n: tensors[p + n + ".weight"] for n in ("input_layernorm", "post_attention_layernorm")})
        layer.update({n: tensors[p + f"self_attn.{n}.weight"] for n in ("q_norm", "k_norm")})
        layers.append(layer)
    lm_head = linear("lm_head.weight", everything)
    analog_modules = [m for layer in layers for m in
                      [layer[n] for n in ("q_proj", "k_proj", "v_proj", "o_proj", "router")]
                      + [ex[n] for ex in layer["experts"] for n in ex]] + [lm_head]
    analog_modules = [m for m in analog_modules if isinstance(m, AnalogLayerBase)]
    for m in analog_modules:
        m.eval()
    t_ready = time.perf_counter()

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))

    def forward(ids: torch.Tensor) -> torch.Tensor:
        b, T = ids.shape
        h = tensors["model.embed_tokens.weight"][ids]
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()

        def rope(x: torch.Tensor) -> torch.Tensor:
            half = x.shape[-1] // 2
            return x * cos[None, None] + torch.cat([-x[..., half:], x[..., :half]], -1) * sin[None, None]

        for layer in layers:
            x = rms(h, layer["input_layernorm"]).reshape(b * T, H)
            q, k, v = (layer[n](x) for n in ("q_proj", "k_proj", "v_proj"))
            q, k = rms(q, layer["q_norm"]), rms(k, layer["k_norm"])
            q, k, v = (t.reshape(b, T, nh, hd).transpose(1, 2) for t in (q, k, v))
            ctx = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
            h = h + layer["o_proj"](ctx.transpose(1, 2).reshape(b * T, H)).reshape(b, T, H)
            x = rms(h, layer["post_attention_layernorm"]).reshape(b * T, H)
            probs = torch.softmax(layer["router"](x), -1)
            w, top = torch.topk(probs, K, dim=-1)
            if cfg.get("norm_topk_prob"):
                w = w / w.sum(-1, keepdim=True)
            out = torch.zeros_like(x)
            for e in range(E):
                tok, slot = torch.nonzero(top == e, as_tuple=True)
                if tok.numel() == 0:
                    continue
                ex = layer["experts"][e]
                xe = x[tok]
                ye = ex["down_proj"](F.silu(ex["gate_proj"](xe)) * ex["up_proj"](xe))
                out.index_add_(0, tok, ye * w[tok, slot][:, None])
            h = h + out.reshape(b, T, H)
        x = rms(h, tensors["model.norm.weight"]).reshape(b * T, H)
        return lm_head(x).reshape(b, T, -1)

    ids = torch.from_numpy(np.load(spec["eval"]).astype(np.int64))
    t0, c0 = time.perf_counter(), time.process_time()
    for m in analog_modules:
        m.program_analog_weights()
        m.drift_analog_weights(spec["t_inference"])
    t1, c1 = time.perf_counter(), time.process_time()
    nats, tokens = 0.0, 0
    with torch.no_grad():
        for s in range(0, ids.shape[0], spec["batch"]):
            chunk = ids[s:s + spec["batch"]]
            logits = forward(chunk[:, :-1])
            lp = torch.log_softmax(logits.float(), -1)
            nats -= float(lp.gather(-1, chunk[:, 1:, None]).sum())
            tokens += chunk[:, 1:].numel()
    t2, c2 = time.perf_counter(), time.process_time()
    print("AIHWKIT_RESULT", json.dumps(dict(program=c1 - c0, forward=c2 - c1, pass_s=t2 - t0, pass_cpu=c2 - c0,
                                            setup=t_ready - t_start, ce_bits=nats / tokens / np.log(2),
                                            tokens=tokens, analog_layers=len(analog_modules))))


def aihwkit_runs(case: dict, repeats: int, python: str) -> tuple[dict, dict] | str:
    probe = subprocess.run([python, "-c", "import torch, aihwkit, safetensors; print(aihwkit.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"aihwkit is not importable by {python} ({last})"
    spec = aihwkit_spec(case)
    t = {k: [] for k in ("pass", "pass_cpu", "whole", "whole_cpu")}
    info: dict = {}
    for _ in range(repeats):
        proc, wall, cpu = timed([python, str(Path(__file__).resolve()), "--aihwkit-side", json.dumps(spec)],
                                env={**os.environ, **ONE_THREAD})
        if proc.returncode:
            return f"aihwkit run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
        info = json.loads(proc.stdout.rsplit("AIHWKIT_RESULT", 1)[1])
        for k, v in (("pass", info["pass_s"]), ("pass_cpu", info["pass_cpu"]), ("whole", wall), ("whole_cpu", cpu)):
            t[k].append(v)
    info["version"] = probe.stdout.strip()
    return t, info


# ----------------------------------------------------------------------------- table

def mmm(v: list[float]) -> str:
    return f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="olmoe-scaled,tiny-moe-8x2")
    ap.add_argument("--devices", default="numpy", help="hetmoe backends to time: numpy and/or cpu (torch)")
    ap.add_argument("--aihwkit-python", default=os.environ.get("AIHWKIT_PYTHON", sys.executable))
    ap.add_argument("--no-whole", action="store_true", help="time the passes only")
    ap.add_argument("--aihwkit-side", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.aihwkit_side:
        aihwkit_main(json.loads(args.aihwkit_side))
        return
    if any(os.environ.get(k) != "1" for k in ONE_THREAD):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ONE_THREAD})
    work = Path(tempfile.mkdtemp(prefix="hetmoe-bench-noisy-"))
    rows = []
    devices = args.devices.split(",")
    for case in cases(work, args.cases.split(",")):
        print(f"== {case['name']}: {case['hw']} {' '.join(case['sets'])}, policy {case['policy']} "
              f"{case['fraction']}, batches of {case['batch']} sequences", flush=True)
        ours = {d: dict(case=case["name"], impl=f"hetmoe {d}", pass_cpu=[], pass_wall=[], whole_cpu=[],
                        whole_wall=[]) for d in devices}
        theirs = dict(case=case["name"], impl="aihwkit", pass_cpu=[], pass_wall=[], whole_cpu=[], whole_wall=[])
        skipped = None
        for _ in range(args.repeats):          # interleaved, so that a shared machine's load falls on both
            for d in devices:
                passes, cpus, info = hetmoe_pass(case, 1, d)
                ours[d]["pass_wall"] += passes
                ours[d]["pass_cpu"] += cpus
                if not args.no_whole:
                    walls, wcpus = hetmoe_whole(case, 1, d, work)
                    ours[d]["whole_wall"] += walls
                    ours[d]["whole_cpu"] += wcpus
                s = info["seconds"]
                print(f"hetmoe {d}: {info['tokens']} tokens; CPU s: program {s['program']:.2f}, noisy {s['noisy']:.2f} "
                      f"(clean {s['clean']:.2f}, not counted); Δ bits/token "
                      f"{info['ce_bits'] - info['clean_bits']:+.4f}", flush=True)
            if skipped:
                continue
            got = aihwkit_runs(case, 1, args.aihwkit_python)
            if isinstance(got, str):
                skipped = got
                print(f"aihwkit: skipped: {got}", flush=True)
                continue
            t, info = got
            theirs["impl"] = f"aihwkit {info['version']}"
            for k, v in (("pass_cpu", "pass_cpu"), ("pass_wall", "pass"), ("whole_cpu", "whole_cpu"),
                         ("whole_wall", "whole")):
                theirs[k] += t[v]
            print(f"{theirs['impl']}: {info['tokens']} tokens, {info['analog_layers']} analog layers; CPU s: "
                  f"program+drift {info['program']:.2f}, forward {info['forward']:.2f}; noisy bits/token "
                  f"{info['ce_bits']:.4f}", flush=True)
        rows += list(ours.values()) + ([] if skipped else [theirs])
    print()
    print(f"seconds, min / median / max of {args.repeats} (runs interleaved), one thread; CPU = user + system "
          "time of the process")
    print("| case | implementation | pass CPU | pass wall | whole process CPU | whole process wall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [mmm(r[k]) if r[k] else "-" for k in ("pass_cpu", "pass_wall", "whole_cpu", "whole_wall")]
        print(f"| {r['case']} | {r['impl']} | " + " | ".join(cells) + " |")
    for name in dict.fromkeys(r["case"] for r in rows):
        ref = next((r for r in rows if r["case"] == name and r["impl"].startswith("aihwkit")), None)
        if ref is None:
            continue
        for r in rows:
            if r["case"] == name and r["impl"].startswith("hetmoe"):
                ratios = [f"{k.replace('_', ' ')} {statistics.median(r[k]) / statistics.median(ref[k]):.2f}x"
                          for k in ("pass_cpu", "pass_wall", "whole_cpu", "whole_wall") if r[k] and ref[k]]
                print(f"{name}: {r['impl']} / aihwkit, medians: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
