"""Checkpoint statistics on tiny safetensors files written here with planted norms."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from workloads.checkpoints.stats import CheckpointError, compute_stats
from workloads.shapes import from_hf_config

H, W, E, L = 8, 4, 3, 2
CFG = {"hidden_size": H, "num_hidden_layers": L, "num_attention_heads": 2, "vocab_size": 16,
       "num_experts": E, "num_experts_per_tok": 1, "moe_intermediate_size": W}


def _planted(layer: int, expert: int):
    """gate/up rows and down columns whose L2 norms are chosen here; one standout neuron each."""
    rng = np.random.default_rng(100 * layer + expert)
    def rows_with_norms(n_rows, n_cols, norms):
        m = rng.normal(size=(n_rows, n_cols))
        return (m / np.linalg.norm(m, axis=1, keepdims=True) * np.asarray(norms)[:, None]).astype(np.float32)
    g_norms = [1.0, 2.0, 0.5, 1.0 + layer + expert]
    u_norms = [0.25, 3.0 + expert, 1.0, 0.5]
    d_norms = [1.0, 0.1, 2.0 + 0.5 * expert + layer, 0.3]
    gate = rows_with_norms(W, H, g_norms)
    up = rows_with_norms(W, H, u_norms)
    down = rows_with_norms(W, H, d_norms).T.copy()  # columns of down carry d_norms
    return gate, up, down


def _expected(layer, expert):
    gate, up, down = (m.astype(np.float64) for m in _planted(layer, expert))
    g = np.linalg.norm(gate, axis=1)
    u = np.linalg.norm(up, axis=1)
    d = np.linalg.norm(down, axis=0)
    return {"gate_rows": g.max(), "up_rows": u.max(), "gate_up_rows": np.sqrt(g ** 2 + u ** 2).max(),
            "down_cols": d.max(), "product": g.max() * u.max() * d.max()}


def _tensors(scheme: str, dtype=np.float32):
    out = {}
    for layer in range(L):
        for e in range(E):
            gate, up, down = _planted(layer, e)
            if scheme == "mixtral":
                base = f"model.layers.{layer}.block_sparse_moe.experts.{e}"
                out.update({f"{base}.w1.weight": gate, f"{base}.w3.weight": up, f"{base}.w2.weight": down})
            else:
                base = f"model.layers.{layer}.mlp.experts.{e}"
                out.update({f"{base}.gate_proj.weight": gate, f"{base}.up_proj.weight": up,
                            f"{base}.down_proj.weight": down})
        router = np.arange(E * H, dtype=np.float32).reshape(E, H) / 10
        key = "block_sparse_moe.gate" if scheme == "mixtral" else "mlp.gate"
        out[f"model.layers.{layer}.{key}.weight"] = router
    return {k: v.astype(dtype) for k, v in out.items()}


def _save_bf16(tensors: dict, path) -> None:
    """Minimal safetensors writer for bf16 (round-to-nearest-even from fp32)."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        bits = np.ascontiguousarray(arr, np.float32).view(np.uint32)
        bf = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(bf)]}
        blobs.append(bf)
        offset += len(bf)
    raw = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@pytest.fixture
def model():
    return from_hf_config(CFG, name="tiny")


@pytest.mark.parametrize("scheme", ["olmoe", "mixtral"])
def test_every_variant_exact_fp32(tmp_path, model, scheme):
    save_file(_tensors(scheme), str(tmp_path / "model.safetensors"))
    stats = compute_stats(tmp_path, model, cache=False)
    for layer in range(L):
        for e in range(E):
            for variant, value in _expected(layer, e).items():
                assert stats.score(variant)[layer, e] == pytest.approx(value, rel=1e-5), (variant, layer, e)
    router = np.arange(E * H).reshape(E, H) / 10
    assert stats.router_row_norm[0] == pytest.approx(np.linalg.norm(router, axis=1), rel=1e-5)
    # per-layer ranking follows the planted gate norms: expert 2 has the largest neuron in every layer
    assert stats.ranking("gate_rows")[:, 2].tolist() == [0, 0]


def test_sharded_fp16_and_bf16(tmp_path, model):
    tensors = _tensors("olmoe")
    names = sorted(tensors)
    half = len(names) // 2
    save_file({n: tensors[n].astype(np.float16) for n in names[:half]}, str(tmp_path / "a.safetensors"))
    _save_bf16({n: tensors[n] for n in names[half:]}, tmp_path / "b.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {**{n: "a.safetensors" for n in names[:half]}, **{n: "b.safetensors" for n in names[half:]}}}))
    stats = compute_stats(tmp_path, model, cache=False)
    for layer in range(L):
        for e in range(E):
            assert stats.score("gate_rows")[layer, e] == pytest.approx(_expected(layer, e)["gate_rows"], rel=1e-2)


def test_cache_round_trip(tmp_path, model, monkeypatch):
    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path / "cache"))
    ck = tmp_path / "ck"
    ck.mkdir()
    save_file(_tensors("olmoe"), str(ck / "model.safetensors"))
    first = compute_stats(ck, model)
    assert list((tmp_path / "cache").glob("stats-*.npz"))
    second = compute_stats(ck, model)
    assert "cache" in second.meta
    assert np.array_equal(first.score("product"), second.score("product"), equal_nan=True)


def test_missing_tensor(tmp_path, model):
    t = _tensors("olmoe")
    del t["model.layers.1.mlp.experts.2.up_proj.weight"]
    save_file(t, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing tensor model.layers.1.mlp.experts.2.up_proj.weight"):
        compute_stats(tmp_path, model, cache=False)


def test_wrong_shape(tmp_path, model):
    t = _tensors("olmoe")
    t["model.layers.0.mlp.experts.0.gate_proj.weight"] = np.zeros((W + 1, H), np.float32)
    save_file(t, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"has shape \(5, 8\), expected \(4, 8\)"):
        compute_stats(tmp_path, model, cache=False)


def test_truncated(tmp_path, model):
    path = tmp_path / "model.safetensors"
    save_file(_tensors("olmoe"), str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        compute_stats(tmp_path, model, cache=False)


def test_not_safetensors(tmp_path, model):
    (tmp_path / "model.safetensors").write_bytes(b"PK\x03\x04 this is a zip, maybe a torch file")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        compute_stats(tmp_path, model, cache=False)
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "stats", str(tmp_path), "--no-cache"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not a safetensors file" in proc.stderr and "Traceback" not in proc.stderr


def test_stats_cli_json(tmp_path):
    save_file(_tensors("olmoe"), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "stats", str(tmp_path), "--json", "--no-cache",
                           "--score", "down_cols"], capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    assert data["layers"]["1"]["scores"][2] == pytest.approx(_expected(1, 2)["down_cols"], rel=1e-5)
    assert data["layers"]["1"]["rank"][2] == 0


def test_editing_the_config_in_place_recomputes_the_scores(tmp_path, monkeypatch):
    """The cache key covers config.json and the model shape, not the model's name."""
    import json as _json

    from tests.moe_checkpoints import olmoe_config, write_olmoe
    from workloads.shapes import load_model

    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = write_olmoe(tmp_path / "m", olmoe_config(experts=8), seed=1)
    first = compute_stats(ckpt, load_model(ckpt))
    again = compute_stats(ckpt, load_model(ckpt))
    assert first.meta["cached"] is False and again.meta["cached"] is True
    cfg = _json.loads((ckpt / "config.json").read_text())
    cfg["num_experts_per_tok"] = 1                       # same tensors, edited config
    (ckpt / "config.json").write_text(_json.dumps(cfg))
    edited = compute_stats(ckpt, load_model(ckpt))
    assert edited.meta["cached"] is False


def test_fused_expert_tensors_name_the_supported_layouts(tmp_path):
    import numpy as np

    from tests.moe_checkpoints import olmoe_config, write_checkpoint
    from workloads.shapes import load_model

    cfg = olmoe_config(layers=1, experts=2)
    write_checkpoint(tmp_path, cfg, {"model.layers.0.mlp.experts.gate_up_proj": np.ones((2, 32, 32))})
    with pytest.raises(CheckpointError, match=r"fused expert tensors .* supported layouts: one tensor per expert"):
        compute_stats(tmp_path, load_model(tmp_path), cache=False)
