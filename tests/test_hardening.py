"""Hostile input, resource limits, interruptions and internal errors: one clear line, never a traceback.

Every bad input under ``tests/corpus/<kind>/`` is fed to the command that reads that kind of file;
each must exit with status 2 and print exactly one line that names the file (and the position,
where the input has one). Property tests throw random and mutated input at every reader.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arch.errors import HetmoeError
from sim.cli import main
from tests.moe_checkpoints import olmoe_config, write_olmoe
from workloads.shapes import load_model
from tests.cli_helpers import cli, one_line as assert_one_line

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"
QWEN = "qwen1.5-moe-a2.7b"

# a fragment each corpus file's error line must hold: its position (line[:column]) or its cause
EXPECT = {
    "config/binary.json": "binary data, not text", "config/duplicate-key.json": "duplicate key 'hidden_size'",
    "config/list.json": "expected a JSON object", "config/nan.json": "NaN is not a JSON number",
    "config/truncated.json": "truncated.json:3: not valid JSON",
    "eval/float-ids.npy": "must be integers", "eval/ids-out-of-vocab.npy": "id 999 outside",
    "eval/nan.jsonl": "nan.jsonl:1: NaN", "eval/not-ids.jsonl": "not-ids.jsonl:1:",
    "eval/random-bytes.npy": "not a readable .npy", "eval/random-bytes.npz": "not a .npz archive",
    "eval/truncated.npy": "is truncated",
    "hw/alias-bomb.yaml": "expand to more than", "hw/binary.yaml": "binary data, not text",
    "hw/deep-nesting.yaml": "nested too deeply", "hw/duplicate-key.yaml": "duplicate-key.yaml:3: name: duplicate key",
    "hw/empty.yaml": "the file is empty", "hw/latin1.yaml": "latin1.yaml:1:10: not UTF-8",
    "hw/nan.yaml": "nan.yaml:3: noc.link_bandwidth_gbps", "hw/not-a-mapping.yaml": "expected a mapping",
    "hw/recursive-alias.yaml": "recursive YAML alias", "hw/zero-clock.yaml": "zero-clock.yaml:4: digital.simd.clock_ghz",
    "placement/alias-bomb.yaml": "expand to more than", "placement/bad-json.json": "bad-json.json:1: not valid JSON",
    "placement/binary.yaml": "binary data", "placement/expert-out-of-range.json": "expert 99 outside",
    "placement/unknown-module.yaml": "toaster",
    "safetensors/bad-dtype.safetensors": "dtype 'Q7'", "safetensors/header-a-list.safetensors": "not a JSON object",
    "safetensors/header-not-json.safetensors": "not a safetensors file",
    "safetensors/header-too-long.safetensors": "header length", "safetensors/info-not-object.safetensors": "tensor w",
    "safetensors/negative-shape.safetensors": "non-negative", "safetensors/offsets-reversed.safetensors": "begin <= end",
    "safetensors/overlap.safetensors": "overlap", "safetensors/short.safetensors": "shorter than",
    "safetensors/tensor-past-end.safetensors": "truncated", "safetensors/wrong-byte-count.safetensors": "needs 16",
    "sweep/alias-bomb.yaml": "expand to more than", "sweep/bad-policy.yaml": "bad-policy.yaml:1: policies",
    "sweep/binary.yaml": "not UTF-8", "sweep/fraction-2.yaml": "fraction-2.yaml:1: fractions",
    "sweep/not-a-mapping.yaml": "expected a mapping", "sweep/overrides-mapping.yaml": "hw_overrides",
    "sweep/policies-nested-list.yaml": "policies-nested-list.yaml:1: policies",
    "sweep/tokens-text.yaml": "tokens-text.yaml:1: tokens", "sweep/unknown-key.yaml": "unknown-key.yaml:2: colour",
    "trace/binary.jsonl": "binary.jsonl:1:", "trace/deep-nesting.jsonl": "deep-nesting.jsonl:2: JSON nested too deeply",
    "trace/duplicate-key.jsonl": "duplicate-key.jsonl:2: duplicate key 'layer'", "trace/empty.jsonl": "empty",
    "trace/float-ids.npz": "array experts", "trace/gzip-truncated.jsonl": "gzip data is corrupt or truncated",
    "trace/huge-header.npz": "claims", "trace/id-out-of-range.jsonl": "id-out-of-range.jsonl:2: topk_ids",
    "trace/id-out-of-range.npz": "experts[0, 0, 0] = 99", "trace/latin1.jsonl": "latin1.jsonl:2:",
    "trace/missing-array.npz": "missing arrays: phase", "trace/list-problem-id.jsonl": "list-problem-id.jsonl:1: problem_id",
    "trace/list-phase.jsonl": "list-phase.jsonl:2: phase", "trace/nan-weight.jsonl": "nan-weight.jsonl:2: NaN",
    "trace/nan-weights.npz": "not a finite number", "trace/negative-id.jsonl": "negative-id.jsonl:2: topk_ids", "trace/layer-list.jsonl": "layer-list.jsonl:2: layer: [1] is not a layer",
    "trace/bool-token-idx.jsonl": "bool-token-idx.jsonl:2: token_idx: False is not an integer",
    "trace/not-an-object.jsonl": "not-an-object.jsonl:2:", "trace/nul-bytes.jsonl": "nul-bytes.jsonl:2: binary",
    "trace/pickled-object.npz": "Python objects", "trace/random-bytes.npz": "not a .npz archive",
    "trace/short-request.npz": "array request", "trace/string-layer.jsonl": "string-layer.jsonl:2: layer",
    "trace/truncated.jsonl": "truncated.jsonl:3: not valid JSON", "trace/unknown-format.jsonl": "unknown trace format",
    "trace/wrong-k.jsonl": "wrong-k.jsonl:2: topk_ids",
    # issue 30: config fields checked in one place (workloads.hfconfig), a trace of no tokens, an id past 64 bits
    "config/eps-negative.json": "rms_norm_eps: -1e-05 is out of range; allowed: a finite number > 0",
    "config/eps-string.json": "rms_norm_eps: 'abc' is not a number",
    "config/experts-1e8.json": "num_experts: 100,000,000 is out of range; allowed: an integer >= 0 and <= 32,767",
    "config/heads-zero.json": "num_attention_heads: 0 is out of range",
    "config/hidden-1e400.json": "hidden_size: inf is not an integer",
    "config/hidden-negative.json": "hidden_size: -64 is out of range",
    "config/hidden-string.json": "hidden_size: 'abc' is not an integer",
    "config/hidden-zero.json": "hidden_size: 0 is out of range",
    "config/layers-1e9.json": "num_hidden_layers: 1,000,000,000 is out of range",
    "config/mlp-only-int.json": "mlp_only_layers: 3 is not a list of integers",
    "config/moe-layer-freq-zero.json": "moe_layer_freq: 0 is out of range",
    "config/rope-scaling-string.json": "rope_scaling: 'str' is not a JSON object",
    "config/rope-theta-negative.json": "rope_theta: -10000.0 is out of range",
    "config/rope-theta-string.json": "rope_theta: 'abc' is not a number",
    "config/routed-scaling-string.json": "routed_scaling_factor: 'x' is not a number",
    "config/sparse-step-zero.json": "decoder_sparse_step: 0 is out of range",
    "config/tie-string.json": "tie_word_embeddings: 'false' is not a JSON boolean",
    "config/top-k-above-experts.json": "num_experts_per_tok: 9 is more than the 8 experts",
    "config/vocab-1e9.json": "vocab_size: 1,000,000,000 is out of range",
    "eval/id-1e30.jsonl": "id-1e30.jsonl:1: input_ids[1] = 1000000000000000000000000000000 outside the model's vocabulary",
    "trace/zero-tokens.npz": "the trace holds no tokens",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_olmoe(tmp_path_factory.mktemp("ckpt") / "tiny")


def _command(kind: str, path: Path, tmp: Path, checkpoint: Path) -> tuple[list[str], str]:
    """The command that reads a file of ``kind``, and the file name its error must mention."""
    out = tmp / "out"
    if kind == "hw":
        return ["hw", "show", path], path.name
    if kind == "trace":
        return ["trace", "inspect", path, "--model", QWEN], path.name
    if kind == "config":
        return ["trace", "synth", "--model", path, "--tokens", 8, "--out", tmp / "t.npz"], path.name
    if kind == "safetensors":
        folder = tmp / path.stem
        folder.mkdir()
        shutil.copy(path, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(olmoe_config()))
        return ["stats", folder, "--no-cache"], f"{path.stem}/model.safetensors"
    if kind == "sweep":
        return ["sweep", path, "--out", out, "--quiet"], path.name
    if kind == "placement":
        return ["run", "--policy", "explicit", "--placement-file", path, "--tokens", 64, "--out", out, "--quiet"], \
            path.name
    assert kind == "eval"
    return ["accuracy", "--checkpoint", checkpoint, "--eval", path, "--out", out, "--quiet", "--noise-seeds", 1], \
        path.name


CORPUS_FILES = sorted(f.relative_to(CORPUS).as_posix() for f in CORPUS.glob("*/*"))


def test_every_corpus_file_has_an_expectation():
    assert set(CORPUS_FILES) == set(EXPECT)


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_bad_input_is_one_clear_line(name, tmp_path, capsys, checkpoint, monkeypatch):
    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path / "cache"))
    path = CORPUS / name
    argv, shown = _command(path.parent.name, path, tmp_path, checkpoint)
    rc, _, err = cli(argv, capsys)
    assert rc == 2, err
    assert_one_line(err, "hetmoe: error: ", shown, EXPECT[name])


# ----------------------------------------------------------------------------- readers, directly

def _log(rows: list[tuple[list[int], list[float]]], layer: int = 0) -> str:
    lines = [{"type": "meta", "top_k": 4}]
    lines += [{"type": "route", "req_id": "r1", "token_idx": i, "layer": layer, "topk_ids": ids, "topk_weights": w}
              for i, (ids, w) in enumerate(rows)]
    return "".join(json.dumps(x) + "\n" for x in lines)


def _real_rows(n: int, seed: int = 0) -> list[tuple[list[int], list[float]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.choice(60, 4, replace=False).tolist()
        w = np.sort(rng.dirichlet(np.ones(60))[:4])[::-1]
        out.append((ids, [round(float(x), 6) for x in w]))
    return out


def test_gzip_trace_is_read_through_whatever_its_name(tmp_path):
    from workloads.traces.readers import read_trace

    text = _log(_real_rows(20))
    plain, packed = tmp_path / "plain.jsonl", tmp_path / "packed.jsonl"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    model = load_model(QWEN)
    a, b = read_trace(plain, model), read_trace(packed, model)
    assert a.tokens == b.tokens == 20
    assert np.array_equal(a.experts, b.experts) and np.array_equal(a.weights, b.weights)


def test_a_line_longer_than_the_limit_is_refused_without_reading_it(tmp_path, capsys):
    from arch.safeio import MAX_LINE_BYTES

    path = tmp_path / "huge.jsonl"
    with open(path, "w") as fh:
        fh.write(_log(_real_rows(1)))
        fh.write('{"type": "route", "pad": "' + "x" * (MAX_LINE_BYTES + 10) + '"}\n')
    rc, _, err = cli(["trace", "inspect", path, "--model", QWEN], capsys)
    assert rc == 2
    assert_one_line(err, "huge.jsonl:3:", f"longer than {MAX_LINE_BYTES // 2**20} MiB")


# ----------------------------------------------------------------------------- warm-up by content

def test_a_dummy_batch_inside_a_counting_request_is_dropped_by_content(tmp_path, capsys):
    """40 identical uniform-weight rows, then 12 real ones; token_idx counts 0..51 without restarting."""
    dummy = [([7, 8, 9, 10], [0.25] * 4)] * 40
    path = tmp_path / "log.jsonl"
    path.write_text(_log(dummy + _real_rows(12)))
    rc, out, err = cli(["trace", "inspect", path, "--model", QWEN, "--json"], capsys)
    assert rc == 0, err
    info = json.loads(out)
    assert info["tokens"] == 12
    assert info["warmup_rows_dropped"] == 40
    # line 1 is the meta line, so the dummy rows are lines 2..41
    assert info["warmup_runs_dropped"] == [{"rule": "run", "reason": "40 consecutive tokens repeat one route at every layer",
                                           "first_line": 2, "last_line": 41, "tokens": 40, "rows": 40}]


def test_a_short_repeat_is_real_decoding_and_kept(tmp_path):
    from workloads.traces.readers import WARMUP_RUN_TOKENS, read_trace

    real = _real_rows(12)
    repeat = [real[3]] * (WARMUP_RUN_TOKENS - 2)      # with real[3] itself: one token short of a warm-up run
    path = tmp_path / "log.jsonl"
    path.write_text(_log(real[:3] + repeat + real[3:]))
    trace = read_trace(path, load_model(QWEN))
    assert trace.tokens == 12 + WARMUP_RUN_TOKENS - 2
    assert trace.meta["warmup_rows_dropped"] == 0


@pytest.mark.parametrize("total,normalised", [(1.0, True), (0.9, False)])
def test_weights_normalised_is_read_from_the_row_sums(tmp_path, total, normalised):
    from workloads.traces.readers import read_trace

    rows = [(ids, [x * total / sum(w) for x in w]) for ids, w in _real_rows(10)]
    path = tmp_path / "log.jsonl"
    path.write_text(_log(rows))
    trace = read_trace(path, load_model(QWEN))
    assert trace.meta["weights_normalised"] is normalised
    lo, hi = trace.meta["weights_row_sum_range"]
    assert lo == pytest.approx(total, abs=1e-5) and hi == pytest.approx(total, abs=1e-5)


# ----------------------------------------------------------------------------- resource guards

def test_a_run_too_large_for_memory_is_refused_before_it_starts(capsys, monkeypatch):
    import sim.api
    from sim.resources import RUN_BASE_BYTES, RUN_BYTES_PER_ROUTE

    model = load_model("olmoe-1b-7b")
    tokens = 100_000_000
    need = RUN_BASE_BYTES + RUN_BYTES_PER_ROUTE * tokens * model.num_layers * model.top_k

    def allocating(*args, **kwargs):
        raise AssertionError("the trace was generated before the run was refused")

    monkeypatch.setattr(sim.api, "synthesize", allocating)   # refused up front, not after allocating
    rc, _, err = cli(["run", "--tokens", tokens, "--max-memory-gib", 64, "--out", "unused"], capsys)
    assert rc == 2
    assert_one_line(err, f"about {need / 2**30:,.1f} GiB", "limit of 64.0 GiB (--max-memory-gib)", "lower --tokens")
    assert not Path("unused").exists()


def test_compare_counts_its_parallel_runs(capsys, tmp_path):
    rc, _, err = cli(["compare", "--tokens", 1_000_000, "--jobs", 3, "--max-memory-gib", 8, "--out", tmp_path], capsys)
    assert rc == 2
    assert_one_line(err, "3 runs side by side", "--jobs")


def test_a_log_too_large_to_read_is_refused(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    path.write_text(_log(_real_rows(4000)))                 # ~0.6 MB of text: ~4 MB as Python objects
    rc, _, err = cli(["run", "--trace", path, "--model", QWEN, "--fill", "replicate", "--max-memory-gib", 0.001,
                      "--out", tmp_path / "out"], capsys)
    assert rc == 2
    assert_one_line(err, "reading", "log.jsonl", "limit of 1.0 MiB")


def test_a_forward_pass_too_large_for_memory_is_refused(capsys, tmp_path, checkpoint):
    from workloads.checkpoints.tensors import index_checkpoint

    weights = 4 * sum(int(np.prod(r.shape)) for r in index_checkpoint(checkpoint).values())
    eval_ids = tmp_path / "ids.npy"
    np.save(eval_ids, np.arange(40).reshape(4, 10) % 64)
    rc, _, err = cli(["accuracy", "--checkpoint", checkpoint, "--eval", eval_ids, "--out", tmp_path / "out",
                      "--max-memory-gib", 2 * weights / 2**30, "--quiet"], capsys)
    assert rc == 2
    assert_one_line(err, "the forward pass of", f"3 x {weights / 2**20:,.1f} MiB of float32 weights")


def test_a_bad_memory_limit_is_an_input_error(capsys, tmp_path):
    rc, _, err = cli(["run", "--max-memory-gib", -1, "--out", tmp_path], capsys)
    assert rc == 2
    assert_one_line(err, "--max-memory-gib -1")


# ----------------------------------------------------------------------------- interruptions

def test_ctrl_c_in_a_run_says_nothing_was_written(monkeypatch, capsys, tmp_path):
    import sim.api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.api, "simulate", interrupted)
    out = tmp_path / "out"
    rc, _, err = cli(["run", "--tokens", 64, "--out", out], capsys)
    assert rc == 130
    assert_one_line(err, "interrupted", f"nothing was written to {out}")
    assert not out.exists()


# Ctrl-C, SIGTERM and kill -9 on a sweep (local and Dask), driven so that they cannot race: tests/test_interrupts.py


def test_no_half_written_file_is_left_behind(tmp_path, monkeypatch):
    """A writer that fails half-way leaves the old file intact and no temporary file."""
    from arch.safeio import atomic_open, write_text

    path = write_text(tmp_path / "result.json", '{"ok": true}\n')
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write('{"partial": ')
            raise RuntimeError("killed")
    assert path.read_text() == '{"ok": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


# ----------------------------------------------------------------------------- internal errors

def test_an_internal_error_is_one_line_and_a_log_file(monkeypatch, capsys, tmp_path):
    import sim.cli.hw

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sim.cli.hw, "run_show", broken)
    rc, _, err = cli(["hw", "show", "aimc-3d-moe"], capsys)
    assert rc == 70
    line = assert_one_line(err, "internal error (ZeroDivisionError: division by zero)", "please report it")
    log = Path(re.search(r"traceback in (\S+)", line).group(1))
    text = log.read_text()
    assert "Traceback" in text and "command: hetmoe hw show aimc-3d-moe" in text
    with pytest.raises(ZeroDivisionError):
        main(["hw", "show", "aimc-3d-moe", "--debug"])
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "hw", "show", "aimc-3d-moe"])


# ----------------------------------------------------------------------------- property tests

# deterministic in the suite (the same examples every run); HETMOE_PROPERTY_EXAMPLES=5000 explores further
PROPERTY = settings(max_examples=int(os.environ.get("HETMOE_PROPERTY_EXAMPLES", 150)),
                    derandomize="HETMOE_PROPERTY_EXAMPLES" not in os.environ, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PRESET = (ROOT / "arch" / "presets" / "hermes-64.yaml").read_bytes()


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


def _only_project_errors(fn) -> None:
    try:
        fn()
    except HetmoeError:
        pass


@PROPERTY
@given(edits=EDITS, cut=st.integers(0, len(PRESET)))
def test_mutated_hardware_yaml_gives_only_project_errors(tmp_path, edits, cut):
    from arch import load_chip

    path = tmp_path / "hw.yaml"
    path.write_bytes(_mutate(PRESET, edits)[:cut] if cut % 3 == 0 else _mutate(PRESET, edits))
    _only_project_errors(lambda: load_chip(str(path)))


@PROPERTY
@given(text=st.text(max_size=300))
def test_random_yaml_text_gives_only_project_errors(tmp_path, text):
    from arch import load_chip

    path = tmp_path / "hw.yaml"
    path.write_text(text)
    _only_project_errors(lambda: load_chip(str(path)))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 70) | st.floats(allow_nan=False) |
                           st.text(max_size=5), lambda inner: st.lists(inner, max_size=5) |
                           st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=12)
ROW_KEYS = ["type", "req_id", "token_idx", "layer", "topk_ids", "topk_weights", "problem_id", "experts",
            "gating_probs", "routed_experts", "request_id", "format", "num_layers", "top_k", "num_experts"]
ROWS = st.lists(st.dictionaries(st.sampled_from(ROW_KEYS), JSON_VALUES | st.lists(st.integers(-2, 70), max_size=5),
                                max_size=7), min_size=1, max_size=6)


@PROPERTY
@given(rows=ROWS, first=st.sampled_from([{"type": "meta"}, {"format": "hetmoe-trace", "num_layers": 24,
                                                                 "top_k": 4, "num_experts": 60}, {}]))
def test_random_jsonl_rows_give_only_project_errors(tmp_path, rows, first):
    from workloads.traces.readers import read_trace

    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ([first] if first else []) + rows))
    _only_project_errors(lambda: read_trace(path, load_model(QWEN)))


def _valid_npz() -> bytes:
    from workloads.traces.format import save_npz
    from workloads.traces.synthetic import SyntheticSpec, synthesize

    trace = synthesize(SyntheticSpec(tokens=8, seed=0), load_model(QWEN))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hetmoe-prop-{os.getpid()}.npz"
    save_npz(trace, path)
    data = path.read_bytes()
    path.unlink()
    return data


VALID_NPZ = _valid_npz()


@PROPERTY
@given(edits=EDITS, cut=st.integers(0, len(VALID_NPZ)), noise=st.binary(max_size=64))
def test_mutated_npz_gives_only_project_errors(tmp_path, edits, cut, noise):
    from workloads.traces.readers import read_trace

    path = tmp_path / "t.npz"
    path.write_bytes(_mutate(VALID_NPZ, edits)[:cut] + noise)
    _only_project_errors(lambda: read_trace(path, load_model(QWEN)))


@PROPERTY
@given(header=st.binary(max_size=200), n=st.integers(0, 400), tail=st.binary(max_size=64))
def test_random_safetensors_headers_give_only_checkpoint_errors(tmp_path, header, n, tail):
    from workloads.checkpoints.tensors import CheckpointError, read_header

    path = tmp_path / "model.safetensors"
    path.write_bytes(n.to_bytes(8, "little") + header + tail)
    with pytest.raises(CheckpointError) if n > len(header) + len(tail) else _maybe(CheckpointError):
        read_header(path)


@PROPERTY
@given(header=st.dictionaries(st.text(max_size=3), JSON_VALUES, max_size=4))
def test_random_safetensors_json_gives_only_checkpoint_errors(tmp_path, header):
    from workloads.checkpoints.tensors import CheckpointError, read_header

    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 32)
    with _maybe(CheckpointError):
        read_header(path)


class _maybe:
    """Like ``pytest.raises`` but also accepts no exception at all."""

    def __init__(self, kind: type[BaseException]) -> None:
        self.kind = kind

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        return kind is None or issubclass(kind, self.kind)


SPEC_KEYS = ["hw", "model", "traces", "trace", "policies", "fractions", "hw_overrides", "modes", "seed", "batch",
             "tokens", "score", "scope", "checkpoint", "context_tokens", "fill", "eval", "noise_seeds",
             "area_budget_mm2", "colour"]


@PROPERTY
@given(spec=st.dictionaries(st.sampled_from(SPEC_KEYS), JSON_VALUES, max_size=5))
def test_random_sweep_specs_give_only_project_errors(tmp_path, spec):
    import yaml

    from sim.sweep import load_sweep_spec, sweep_options

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    _only_project_errors(lambda: (load_sweep_spec(path), sweep_options(path)))


@pytest.mark.parametrize("index,fragment", [
    ({"weight_map": {"w": "../outside.safetensors"}}, "shards must be file names in the folder"),
    ({"weight_map": ["w"]}, "not a safetensors index"),
    ({"weight_map": {"w": "missing.safetensors"}}, "listed in the index but missing"),
])
def test_bad_safetensors_index(tmp_path, capsys, index, fragment):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(olmoe_config()))
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    rc, _, err = cli(["stats", folder, "--no-cache"], capsys)
    assert rc == 2
    assert_one_line(err, "hetmoe: error: ", fragment)


# ----------------------------------------------------------------------------- hostile options

@pytest.mark.parametrize("argv,fragment", [
    (["run", "--set", "analog.tile.tiers=[[["], "--set analog.tile.tiers:1: YAML syntax error"),
    (["run", "--set", "analog.tile.tiers=!!python/object:os.system"], "could not determine a constructor"),
    (["run", "--max-inflight", "0"], "--max-inflight 0: allowed an integer >= 1"),
    (["run", "--seed", "-1"], "seed -1: allowed an integer >= 0"),
    (["compare", "--jobs", "0"], "--jobs 0: allowed an integer >= 1"),
    (["run", "--hw", "."], ".: is a folder"),
    (["run", "--out", "/proc/hetmoe-cannot-be-here"], "/proc/hetmoe-cannot-be-here: "),
    (["run", "--out", "__file__"], "exists and is not a folder"),
])
def test_hostile_options_are_one_line(argv, fragment, capsys, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("")
    argv = [str(afile) if a == "__file__" else a for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    rc, _, err = cli(argv + ["--tokens", "64", "--quiet"], capsys)
    assert rc == 2
    assert_one_line(err, "hetmoe: error: ", fragment)


def test_a_damaged_cache_is_recomputed_not_trusted(tmp_path, monkeypatch, checkpoint):
    """A score cache cut short (a crash while it was written by an older version) is computed again."""
    from sim.functional.architecture import read_architecture
    from workloads.checkpoints.stats import compute_stats

    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path))
    shape = read_architecture(checkpoint).shape
    first = compute_stats(checkpoint, shape)
    cache = Path(first.meta.get("cache") or next(tmp_path.glob("stats-*.npz")))
    assert cache.is_file() and not first.meta["cached"]
    cache.write_bytes(cache.read_bytes()[:100])
    again = compute_stats(checkpoint, shape)
    assert not again.meta["cached"]
    assert np.array_equal(again.score("gate_rows"), first.score("gate_rows"), equal_nan=True)
    assert compute_stats(checkpoint, shape).meta["cached"]          # rewritten whole


def test_a_gzip_log_is_sized_by_its_trailer(tmp_path, capsys):
    """The memory guard counts a gzip log's text as the size its trailer records (computed here from the text)."""
    from sim.resources import READER_BYTES_PER_FILE_BYTE

    text = _log(_real_rows(4000) * 3).encode()
    path = tmp_path / "log.jsonl.gz"
    path.write_bytes(gzip.compress(text))
    need_mib = READER_BYTES_PER_FILE_BYTE * len(text) / 2**20
    rc, _, err = cli(["run", "--trace", path, "--model", QWEN, "--fill", "replicate", "--max-memory-gib", 0.001,
                      "--out", tmp_path / "out"], capsys)
    assert rc == 2
    assert_one_line(err, f"about {need_mib:,.1f} MiB", f"{len(text) / 2**20:,.1f} MiB of text, the size its gzip "
                                                        "trailer records")
