"""Train a tiny byte-level OLMoE-architecture MoE on text that ships with Python, for accuracy examples.

Why: noise damage says something only on a *trained* model (a random model's loss is flat under
noise). hetmoe downloads no weights, so this recipe builds one in a few minutes on 2 CPU cores.

Data: the ``.py`` files of this Python's standard library (``sysconfig.get_paths()['stdlib']``),
sorted by path, read as UTF-8 bytes; every 20th file is held out. Model: OLMoE architecture
(Hugging Face ``OlmoeForCausalLM``), vocabulary = the 256 byte values, hidden 128, 4 layers, 4 heads,
8 SwiGLU experts of width 64 per layer, top-2 with renormalised weights; ~1.1 M parameters. Training:
AdamW (0.9, 0.95, weight decay 0.1), linear warm-up then cosine to 10 %, batches of 16 x 256 bytes,
router load-balancing loss 0.01, fixed seed, for ``--minutes`` of wall time (or ``--steps``).

Writes ``OUT/checkpoint/`` (``config.json`` + ``model.safetensors``, fp32, Hugging Face layout) and
``OUT/eval_ids.npy`` (``--eval-windows`` evenly spaced held-out windows of 257 byte ids), and prints
held-out bits per byte. Needs the ``train`` extra: ``pip install 'hetmoe[train]'`` (torch and
transformers; the recipe alone uses them).

Run: ``python recipes/train_tiny_moe.py --out models/tiny-moe [--minutes 4]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sysconfig
import time
from pathlib import Path

import numpy as np

SEQ = 256


def corpus(max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) byte arrays from the standard library's sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
    train, held = [], []
    total = 0
    for i, path in enumerate(files):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        (held if i % 20 == 0 else train).append(np.frombuffer(data, np.uint8))
        total += len(data)
        if total >= max_bytes:
            break
    return np.concatenate(train), np.concatenate(held)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--minutes", type=float, default=4.0, help="training wall-time budget (minutes)")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps instead (0: use --minutes)")
    ap.add_argument("--max-bytes", type=int, default=8_000_000, help="bytes of source text to read")
    ap.add_argument("--eval-windows", type=int, default=64, help="held-out windows in eval_ids.npy")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    try:
        import torch
        from transformers import OlmoeConfig, OlmoeForCausalLM
    except ImportError:
        raise SystemExit("this recipe needs torch and transformers: pip install 'hetmoe[train]'") from None

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    train, held = corpus(args.max_bytes)
    cfg = OlmoeConfig(vocab_size=256, hidden_size=128, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, num_experts=8, num_experts_per_tok=2,
                      norm_topk_prob=True, max_position_embeddings=SEQ, rms_norm_eps=1e-5, rope_theta=10000.0,
                      router_aux_loss_coef=0.01, output_router_logits=True, tie_word_embeddings=False,
                      pad_token_id=None, bos_token_id=None, eos_token_id=None)
    model = OlmoeForCausalLM(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95))
    budget_s = args.minutes * 60
    warmup = 50
    t0 = time.perf_counter()
    step = 0
    model.train()
    while True:
        elapsed = time.perf_counter() - t0
        if (args.steps and step >= args.steps) or (not args.steps and elapsed >= budget_s):
            break
        progress = step / args.steps if args.steps else elapsed / budget_s
        lr = 3e-3 * (min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, train.size - SEQ - 1, 16)
        batch = torch.from_numpy(np.stack([train[s:s + SEQ + 1] for s in starts]).astype(np.int64))
        out = model(batch[:, :-1], labels=batch[:, :-1].clone())
        logits = out.logits[:, :-1].reshape(-1, 256)
        ce = torch.nn.functional.cross_entropy(logits, batch[:, 1:-1].reshape(-1))
        loss = ce + cfg.router_aux_loss_coef * out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step}: train {ce.item() / math.log(2):.3f} bits/byte, lr {lr:.2e}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    out_dir = Path(args.out)
    (out_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    model.config.output_router_logits = False
    model.save_pretrained(out_dir / "checkpoint", safe_serialization=True)
    starts = np.linspace(0, held.size - SEQ - 2, args.eval_windows).astype(np.int64)
    ids = np.stack([held[s:s + SEQ + 1] for s in starts]).astype(np.int64)
    np.save(out_dir / "eval_ids.npy", ids)
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(ids)
        logits = model(x[:, :-1]).logits.float()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1)).item()
    info = {"steps": step, "train_seconds": round(time.perf_counter() - t0, 1), "train_bytes": int(train.size),
            "heldout_bytes": int(held.size), "eval_windows": args.eval_windows,
            "heldout_bits_per_byte_on_eval_ids": ce / math.log(2), "seed": args.seed, "torch": torch.__version__,
            "data": f"{sysconfig.get_paths()['stdlib']} *.py, every 20th file held out"}
    (out_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{step} steps in {info['train_seconds']} s; held-out {info['heldout_bits_per_byte_on_eval_ids']:.4f} "
          f"bits/byte on eval_ids.npy; wrote {out_dir}/checkpoint and {out_dir}/eval_ids.npy")


if __name__ == "__main__":
    main()
