"""Issue 30, items 2 and 6-8: checkpoints and configs that lie, traces and eval data at their edges, and bombs
that the memory guard must stop. Each case is one line, exit status 2 (or a sane result), never exit 70 or 1.

Configs are checked field by field in one place (:mod:`workloads.hfconfig`); bombs are built small by
lowering ``--max-memory-gib``. The bad-file corpus (``tests/corpus/``) holds the single-file cases; the cases
here need a checkpoint, an option or a generated file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.moe_checkpoints import olmoe_config, write_checkpoint, write_olmoe
from workloads.hfconfig import FIELDS, ConfigError, validate_config
from tests.cli_helpers import cli, one_line

QWEN = "qwen1.5-moe-a2.7b"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A 2-layer, 8-expert random OLMoE checkpoint (copied per test that edits it)."""
    return write_olmoe(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def eval_ids(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "ids.npy"
    np.save(path, np.arange(40).reshape(4, 10) % 64)
    return path


def edited(base: Path, tmp_path: Path, raw: str | None = None, **fields) -> Path:
    """A copy of ``base`` whose config.json has ``fields`` set (or is the text ``raw``)."""
    folder = tmp_path / "ckpt"
    shutil.copytree(base, folder)
    cfg = {**json.loads((base / "config.json").read_text()), **fields}
    text = json.dumps(cfg).replace("-Infinity", "-1e400").replace("Infinity", "1e400")    # JSON's own overflow
    (folder / "config.json").write_text(raw if raw is not None else text)
    return folder


def commands(ckpt: Path, eval_ids: Path, tmp_path: Path) -> dict[str, list]:
    return {"stats": ["stats", ckpt, "--no-cache", "--json"],       # --json: no progress bar on stderr
            "run": ["run", "--model", ckpt, "--tokens", 64, "--out", tmp_path / "run", "--quiet"],
            "accuracy": ["accuracy", "--checkpoint", ckpt, "--eval", eval_ids, "--out", tmp_path / "acc", "--quiet",
                         "--noise-seeds", 1, "--policy", "all-analog"]}


# ----------------------------------------------------------------------------- 6: a config.json that lies

LYING = [
    ("hidden_size", "abc", "hidden_size: 'abc' is not an integer"),
    ("hidden_size", 0, "hidden_size: 0 is out of range"),
    ("hidden_size", -32, "hidden_size: -32 is out of range"),
    ("hidden_size", 2048.0, "hidden_size: 2048.0 is not an integer"),
    ("num_attention_heads", 0, "num_attention_heads: 0 is out of range"),
    ("decoder_sparse_step", 0, "decoder_sparse_step: 0 is out of range"),
    ("moe_layer_freq", 0, "moe_layer_freq: 0 is out of range"),
    ("rms_norm_eps", "abc", "rms_norm_eps: 'abc' is not a number"),
    ("rms_norm_eps", -1e-5, "rms_norm_eps: -1e-05 is out of range"),
    ("rope_theta", "abc", "rope_theta: 'abc' is not a number"),
    ("rope_theta", -10000.0, "rope_theta: -10000.0 is out of range"),
    ("rope_scaling", "str", "rope_scaling: 'str' is not a JSON object"),
    ("rope_scaling", {"rope_type": 7}, "rope_scaling.rope_type: 7 is not a string"),
    ("routed_scaling_factor", "x", "routed_scaling_factor: 'x' is not a number"),
    ("mlp_only_layers", 3, "mlp_only_layers: 3 is not a list of integers"),
    ("mlp_only_layers", [5], "mlp_only_layers: layer 5 is not a layer"),
    ("vocab_size", 10**9, "vocab_size: 1,000,000,000 is out of range"),
    ("num_experts", 10**8, "num_experts: 100,000,000 is out of range"),
    ("num_hidden_layers", 10**9, "num_hidden_layers: 1,000,000,000 is out of range"),
    ("tie_word_embeddings", "false", "tie_word_embeddings: 'false' is not a JSON boolean"),
    ("norm_topk_prob", 1, "norm_topk_prob: 1 is not a JSON boolean"),
    ("num_key_value_heads", 3, "num_key_value_heads: 3 does not divide num_attention_heads 4"),
    ("num_experts_per_tok", 9, "num_experts_per_tok: 9 is more than the 8 experts"),
    ("clip_qkv", "big", "clip_qkv: 'big' is not a number"),
]


@pytest.mark.parametrize("command", ["stats", "run", "accuracy"])
@pytest.mark.parametrize("key,value,fragment", LYING, ids=[f"{k}={v!r}"[:40] for k, v, _ in LYING])
def test_a_lying_config_is_one_line_naming_the_field(key, value, fragment, command, base, eval_ids, tmp_path,
                                                     capsys):
    ckpt = edited(base, tmp_path, **{key: value})
    rc, _, err = cli(commands(ckpt, eval_ids, tmp_path)[command], capsys)
    assert rc == 2, err
    one_line(err, "hetmoe: error: ", "config.json", fragment)


@pytest.mark.parametrize("command", ["stats", "run", "accuracy"])
def test_an_infinite_hidden_size_is_refused(command, base, eval_ids, tmp_path, capsys):
    raw = (base / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": 1e400')
    ckpt = edited(base, tmp_path, raw=raw)
    rc, _, err = cli(commands(ckpt, eval_ids, tmp_path)[command], capsys)
    assert rc == 2, err
    one_line(err, "config.json: hidden_size: inf is not an integer")


def test_presets_and_the_shared_checkpoint_config_pass():
    import yaml

    from workloads.shapes import PRESET_DIR

    for preset in sorted(PRESET_DIR.glob("*.yaml")):
        validate_config(yaml.safe_load(preset.read_text()), str(preset))
    validate_config(olmoe_config(), "olmoe_config()")


def test_null_means_the_default(base, tmp_path):
    from sim.functional.architecture import read_architecture

    ckpt = edited(base, tmp_path, rms_norm_eps=None, rope_theta=None, clip_qkv=None, routed_scaling_factor=None,
                  tie_word_embeddings=None, hidden_act=None, rope_scaling=None)
    arch = read_architecture(ckpt)
    assert (arch.rms_norm_eps, arch.rope_theta, arch.clip_qkv, arch.routed_scaling_factor) == (1e-6, 10000.0, None, 1.0)
    assert arch.shape.tie_word_embeddings is False


# ----------------------------------------------------------------------------- 2: checkpoints that disagree

def test_fewer_layers_in_the_config_than_the_checkpoint_is_refused(base, eval_ids, tmp_path, capsys):
    """num_hidden_layers 1 on a 2-layer checkpoint would evaluate half the model without a word."""
    ckpt = edited(base, tmp_path, num_hidden_layers=1)
    for name in ("stats", "accuracy"):
        rc, _, err = cli(commands(ckpt, eval_ids, tmp_path)[name], capsys)
        assert rc == 2, err
        one_line(err, "num_hidden_layers: 1, but the checkpoint", "holds 2 decoder layers",
                 "tensor model.layers.1.")


@pytest.mark.parametrize("fields,fragment", [
    ({"num_hidden_layers": 3}, "no tensor of decoder layer 2"),
    ({"num_experts": 4}, "num_experts: 4, but the checkpoint"),
    ({"vocab_size": 100}, "vocab_size: 100, but the checkpoint"),
    ({"intermediate_size": 8}, "moe_intermediate_size (or intermediate_size): 8, but in the checkpoint"),
    ({"num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 8}, "num_attention_heads 8 x head_dim 8"),
])
def test_a_config_that_disagrees_with_the_tensors_names_field_and_tensor(fields, fragment, base, eval_ids, tmp_path,
                                                                         capsys):
    ckpt = edited(base, tmp_path, **fields)
    for name in ("stats", "accuracy"):
        rc, _, err = cli(commands(ckpt, eval_ids, tmp_path)[name], capsys)
        assert rc == 2, (name, err)
        one_line(err, fragment)


def test_a_tied_config_on_an_untied_checkpoint_is_refused(base, eval_ids, tmp_path, capsys):
    """tie_word_embeddings true would use the embedding as the head and ignore the checkpoint's own lm_head."""
    ckpt = edited(base, tmp_path, tie_word_embeddings=True)
    rc, _, err = cli(commands(ckpt, eval_ids, tmp_path)["accuracy"], capsys)
    assert rc == 2, err
    one_line(err, "tie_word_embeddings is true, but tensor lm_head.weight", "differs from model.embed_tokens.weight")


def test_an_untied_config_without_lm_head_is_refused(base, eval_ids, tmp_path, capsys):
    from safetensors.numpy import load_file

    tensors = load_file(str(base / "model.safetensors"))
    del tensors["lm_head.weight"]
    ckpt = write_checkpoint(tmp_path / "untied", olmoe_config(), tensors)
    rc, _, err = cli(commands(ckpt, eval_ids, tmp_path)["accuracy"], capsys)
    assert rc == 2, err
    one_line(err, "tie_word_embeddings: false, but the checkpoint", "has no tensor lm_head.weight")


def test_a_tensor_in_two_shards_is_refused(base, tmp_path, capsys):
    """A second shard holding a tensor again never overrides the one the index names."""
    from safetensors.numpy import load_file, save_file

    ckpt = write_olmoe(tmp_path / "sharded", shards=2)
    first, second = sorted(ckpt.glob("model-*.safetensors"))
    dup = load_file(str(first))
    name = sorted(dup)[0]
    extra = load_file(str(second))
    extra[name] = dup[name] * 2
    save_file(extra, str(second))
    rc, _, err = cli(["stats", ckpt, "--no-cache"], capsys)
    assert rc == 2, err
    one_line(err, f"tensor {name} is in two shards", first.name, second.name)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_weights_are_refused(bad, eval_ids, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    ckpt = write_olmoe(tmp_path / "inf")
    tensors = load_file(str(ckpt / "model.safetensors"))
    name = "model.layers.1.mlp.experts.3.up_proj.weight"
    tensors[name][2, 5] = bad
    save_file(tensors, str(ckpt / "model.safetensors"))
    for command in ("stats", "accuracy"):
        rc, _, err = cli(commands(ckpt, eval_ids, tmp_path)[command], capsys)
        assert rc == 2, (command, err)
        one_line(err, f"tensor {name} holds 1 non-finite value", "the first at index [2, 5]")


# ----------------------------------------------------------------------------- 7: trace and eval edges

def _npz(path: Path, arrays: dict, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, arr)
            z.writestr(name + ".npy", buf.getvalue())
    return path


def _trace_arrays(tokens: int, layers: int = 24, k: int = 4) -> dict:
    return {"experts": np.zeros((tokens, layers, k), np.int16), "weights": np.zeros((tokens, layers, k), np.float32),
            "request": np.zeros(tokens, np.int32), "position": np.zeros(tokens, np.int32),
            "phase": np.zeros(tokens, np.int8), "observed": np.ones(layers, bool), "num_experts": np.int32(60)}


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_a_trace_of_zero_tokens_is_one_line(command, tmp_path, capsys):
    path = _npz(tmp_path / "empty.npz", _trace_arrays(0))
    argv = (["trace", "inspect", path, "--model", QWEN] if command == "inspect" else
            ["run", "--trace", path, "--model", QWEN, "--out", tmp_path / "out", "--quiet"])
    rc, _, err = cli(argv, capsys)
    assert rc == 2, err
    one_line(err, "empty.npz", "the trace holds no tokens")


@pytest.mark.parametrize("option,value", [("--seq-len", 0), ("--seq-len", -3), ("--max-sequences", 0),
                                          ("--max-sequences", -1)])
def test_bad_sequence_options_are_one_line(option, value, base, eval_ids, tmp_path, capsys):
    argv = commands(base, eval_ids, tmp_path)["accuracy"] + [option, value]
    rc, _, err = cli(argv, capsys)
    assert rc == 2, err
    one_line(err, f"{option} {value}: allowed an integer >= 1")


def test_an_eval_id_past_64_bits_is_one_line(base, tmp_path, capsys):
    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps({"input_ids": [1, 2, 3]}) + "\n" + json.dumps({"input_ids": [4, 10**30, 6]}) + "\n")
    rc, _, err = cli(commands(base, path, tmp_path)["accuracy"], capsys)
    assert rc == 2, err
    one_line(err, "ids.jsonl:2: input_ids[1] = 1000000000000000000000000000000 outside the model's vocabulary [0, 63]")


# ----------------------------------------------------------------------------- 8: bombs past the memory guard

def _rows(n: int) -> bytes:
    rng = np.random.default_rng(0)
    lines = [json.dumps({"type": "meta", "top_k": 4})]
    for i in range(n):
        lines.append(json.dumps({"type": "route", "req_id": "r1", "token_idx": i, "layer": 0,
                                 "topk_ids": rng.choice(60, 4, replace=False).tolist(),
                                 "topk_weights": [0.4, 0.3, 0.2, 0.1]}))
    return ("\n".join(lines) + "\n").encode()


LIMIT_GIB = 0.01      # 10 MiB: 1.7 MiB of JSON text as Python objects


@pytest.fixture(scope="module")
def multi_member_gzip(tmp_path_factory) -> tuple[Path, int]:
    """A gzip of two members: ~5 MB of repetitive rows, then one newline whose trailer records 1 byte, so the
    trailer (and 8x the file's 0.2 MB) understates the text ~3x; the guard must count as it decompresses."""
    text = _rows(1000) + _rows(1000).split(b"\n", 1)[1] * 19
    path = tmp_path_factory.mktemp("bomb") / "multi.jsonl.gz"
    path.write_bytes(gzip.compress(text, 9) + gzip.compress(b"\n"))
    return path, len(text)


def _argv(command: str, path: Path, tmp_path: Path, gib: float = LIMIT_GIB) -> list:
    if command == "inspect":
        return ["trace", "inspect", path, "--model", QWEN, "--max-memory-gib", gib]
    return ["run", "--trace", path, "--model", QWEN, "--fill", "replicate", "--max-memory-gib", gib,
            "--out", tmp_path / "out", "--quiet"]


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_a_multi_member_gzip_stops_at_the_limit_as_it_streams(command, multi_member_gzip, tmp_path, capsys):
    from sim.resources import GZIP_RATIO, READER_BYTES_PER_FILE_BYTE

    path, text = multi_member_gzip
    assert READER_BYTES_PER_FILE_BYTE * GZIP_RATIO * path.stat().st_size < LIMIT_GIB * 2**30      # passes up front
    assert READER_BYTES_PER_FILE_BYTE * text > LIMIT_GIB * 2**30                                   # but not in full
    rc, _, err = cli(_argv(command, path, tmp_path), capsys)
    assert rc == 2, err
    one_line(err, "reading", "multi.jsonl.gz", "counted as it was decompressed", "--max-memory-gib")


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_a_gzip_inside_a_gzip_is_one_line(command, multi_member_gzip, tmp_path, capsys):
    path = tmp_path / "nested.jsonl.gz"
    path.write_bytes(gzip.compress(gzip.compress(_rows(2000), 9), 9))
    rc, _, err = cli(_argv(command, path, tmp_path), capsys)
    assert rc == 2, err
    one_line(err, "nested.jsonl.gz")


@pytest.fixture(scope="module")
def deflated_npz(tmp_path_factory) -> Path:
    """A valid trace of 100,000 tokens (~48 MB of arrays) deflated to ~50 KB."""
    return _npz(tmp_path_factory.mktemp("npz") / "deflated.npz", _trace_arrays(100_000), zipfile.ZIP_DEFLATED)


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_a_deflated_npz_is_bounded_by_the_limit_before_it_is_inflated(command, deflated_npz, tmp_path, capsys,
                                                                     monkeypatch):
    import arch.safeio

    def never(*args, **kwargs):
        raise AssertionError("a member was inflated before the archive was refused")

    monkeypatch.setattr(arch.safeio, "_read_array", never)
    assert deflated_npz.stat().st_size < 2**20
    rc, _, err = cli(_argv(command, deflated_npz, tmp_path), capsys)
    assert rc == 2, err
    one_line(err, "reading", "deflated.npz", "as its 7 members declare them", "limit of 10.2 MiB (--max-memory-gib)")


def test_an_npz_member_that_understates_its_size_is_one_line(tmp_path, capsys):
    """A member whose directory entry claims fewer bytes than it inflates to is read no further than claimed."""
    path = _npz(tmp_path / "liar.npz", _trace_arrays(50_000), zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("experts.npy")
    true = info.file_size.to_bytes(4, "little")
    small = (1024).to_bytes(4, "little")
    assert data.count(true) >= 2
    path.write_bytes(bytes(data).replace(true, small))
    rc, _, err = cli(_argv("inspect", path, tmp_path, gib=1), capsys)
    assert rc == 2, err
    one_line(err, "liar.npz")


def test_trace_synth_checks_memory_before_drawing(tmp_path, capsys, monkeypatch):
    import sim.cli.workloads

    def never(*args, **kwargs):
        raise AssertionError("the trace was drawn before the run was refused")

    monkeypatch.setattr(sim.cli.workloads, "synthesize", never)
    rc, _, err = cli(["trace", "synth", "--model", QWEN, "--tokens", 10**8, "--max-memory-gib", 4,
                      "--out", tmp_path / "t.npz"], capsys)
    assert rc == 2, err
    one_line(err, "simulating 100,000,000 tokens", "limit of 4.0 GiB (--max-memory-gib)")
    assert not (tmp_path / "t.npz").exists()


def test_trace_synth_counts_the_calibration_over_many_experts(tmp_path, capsys, monkeypatch):
    import sim.cli.workloads
    from sim.resources import SYNTH_BYTES_PER_EXPERT

    monkeypatch.setattr(sim.cli.workloads, "synthesize", lambda *a, **k: pytest.fail("drawn before the refusal"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(olmoe_config(layers=2, experts=8192)))
    rc, _, err = cli(["trace", "synth", "--model", path, "--tokens", 64, "--max-memory-gib", 0.5,
                      "--out", tmp_path / "t.npz"], capsys)
    assert rc == 2, err
    one_line(err, f"{SYNTH_BYTES_PER_EXPERT // 1024} KiB x 8,192 experts to calibrate a synthetic trace",
             "limit of 512.0 MiB")


def test_many_experts_and_layers_are_refused_by_the_memory_guard(tmp_path, capsys, monkeypatch):
    """16 layers x 8,192 experts: about 400,000 weight matrices, 1.5 GiB of tables; refused before any is built."""
    import sim.api
    from sim.resources import MODEL_BYTES_PER_MATRIX

    def never(*args, **kwargs):
        raise AssertionError("the trace was drawn before the run was refused")

    monkeypatch.setattr(sim.api, "synthesize", never)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(olmoe_config(layers=16, experts=8192)))
    rc, _, err = cli(["run", "--model", path, "--tokens", 64, "--max-memory-gib", 1, "--out", tmp_path / "out",
                      "--quiet"], capsys)
    assert rc == 2, err
    line = one_line(err, "(16 layers, 8,192 experts)", f"{MODEL_BYTES_PER_MATRIX // 1024} KiB x", "weight matrices",
                    "limit of 1.0 GiB (--max-memory-gib)")
    assert "fewer layers or experts" in line


def test_too_many_weight_matrices_are_refused_without_a_limit():
    with pytest.raises(ConfigError, match="weight matrices, more than the 4,000,000 hetmoe enumerates"):
        validate_config(olmoe_config(layers=5000, experts=32767), "c.json")


# ----------------------------------------------------------------------------- property: random config fields

PROPERTY = settings(max_examples=int(os.environ.get("HETMOE_PROPERTY_EXAMPLES", 60)),
                    derandomize="HETMOE_PROPERTY_EXAMPLES" not in os.environ, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HOSTILE = (st.none() | st.booleans() | st.sampled_from([0, -1, 1, 2, 3, 7, 64, 10**9, 10**30, -10**30]) |
           st.integers(-3, 70) | st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0, 1e-300, 1e300, 0.5]) |
           st.text(max_size=6) | st.lists(st.integers(-2, 5), max_size=3) | st.lists(st.text(max_size=2), max_size=2) |
           st.dictionaries(st.sampled_from(["rope_type", "type", "rope_theta", "factor"]),
                           st.none() | st.integers(-2, 3) | st.text(max_size=4) | st.floats(allow_nan=False),
                           max_size=2))
# what an error about a field may name instead of the field itself (a synonym the config also sets, a rule
# that ties it to another field, the tensors it disagrees with)
RELATED = {"num_experts": ["Mixture-of-Experts"], "num_attention_heads": ["num_key_value_heads", "head_dim"],
           "num_key_value_heads": ["num_attention_heads"], "head_dim": ["num_attention_heads", "num_key_value_heads"],
           "intermediate_size": ["moe_intermediate_size"], "moe_intermediate_size": ["intermediate_size"],
           "num_experts_per_tok": ["n_group", "topk_group"], "n_group": ["num_experts_per_tok"],
           "topk_group": ["num_experts_per_tok"], "first_k_dense_replace": ["MoE layer"],
           "moe_layer_freq": ["MoE layer"], "decoder_sparse_step": ["MoE layer"], "mlp_only_layers": ["MoE layer"],
           "kv_lora_rank": ["qk_rope_head_dim", "v_head_dim"]}


@PROPERTY
@given(key=st.sampled_from(sorted(FIELDS)), value=HOSTILE)
def test_random_config_fields_give_one_line_naming_the_field_or_a_sane_result(key, value, base, tmp_path, capsys):
    import math

    from sim.functional.architecture import read_architecture

    import tempfile

    folder = Path(tempfile.mkdtemp(dir=tmp_path))       # one per example (tmp_path is shared by all of them)
    ckpt = edited(base, folder, **{key: value})
    for argv in (["stats", ckpt, "--no-cache", "--json"],
                 ["trace", "synth", "--model", ckpt, "--tokens", 8, "--out", folder / "t.npz"]):
        rc, _, err = cli(argv, capsys)
        assert rc in (0, 2), (key, value, err)
        if rc == 2:
            line = one_line(err, "hetmoe: error: ")
            assert any(k in line for k in [key, *RELATED.get(key, [])]), (key, value, line)
    try:
        arch = read_architecture(ckpt)
    except Exception as exc:  # noqa: BLE001 - only project errors may come out
        from arch.errors import HetmoeError

        assert isinstance(exc, HetmoeError), (key, value, exc)
        return
    assert math.isfinite(arch.rms_norm_eps) and arch.rms_norm_eps > 0
    assert math.isfinite(arch.rope_theta) and arch.rope_theta > 0
    assert math.isfinite(arch.routed_scaling_factor) and arch.routed_scaling_factor > 0
    assert isinstance(arch.shape.tie_word_embeddings, bool)
