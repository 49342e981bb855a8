"""hetmoe's noisy model in EleutherAI's lm-evaluation-harness, offline: a local multiple-choice task.

The task (tests/lmeval_task/) is 20 hand-written byte-level completions read by lm-eval from a local
JSONL (``dataset_path: json``), and the same texts as a rolling log-likelihood task. The checkpoints
are written here: a random OLMoE for the Hugging Face comparison, and a byte *bigram* OLMoE whose
lm_head holds the log bigram probabilities of the task's texts (its other matrices are small), so the
clean model is a good model of the task and noise has something to lose.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.moe_checkpoints import olmoe_config, write_checkpoint, write_olmoe

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # lm-eval and datasets read these when first imported
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
TASKS = "tests/lmeval_task"                           # data_files in the YAMLs are relative to the repository root
MC, ROLLING = "hetmoe_bytes_mc", "hetmoe_bytes_rolling"
HAVE_LMEVAL = importlib.util.find_spec("lm_eval") is not None
needs_lmeval = pytest.mark.skipif(not HAVE_LMEVAL, reason="lm-eval is not installed (pip install 'hetmoe[lmeval]')")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hetmoe-cache"))


def task_texts() -> list[str]:
    docs = [json.loads(line) for line in (ROOT / TASKS / "hetmoe_bytes_mc.jsonl").read_text().splitlines() if line]
    return [d["context"] + d["choices"][d["answer"]] for d in docs]


def bigram_checkpoint(directory: Path, texts: list[str], *, hidden: int = 128, small: float = 0.05) -> Path:
    """An OLMoE whose logits are the add-0.05 byte bigram log-probabilities of ``texts``: each byte of the texts
    has its own one-hot embedding (every other byte shares the last one), the lm_head reads the bigram table
    off it, and attention and expert matrices are random at ``small`` times the usual scale."""
    cfg = olmoe_config(hidden=hidden, vocab=256, width=16)
    write_olmoe(directory, cfg, seed=0)
    from safetensors.numpy import load_file

    t = {k: v.astype(np.float64) for k, v in load_file(str(directory / "model.safetensors")).items()}
    counts = np.full((256, 256), 0.05)
    for s in texts:
        b = np.frombuffer(s.encode(), np.uint8)
        np.add.at(counts, (b[:-1], b[1:]), 1.0)
    used = sorted({b for s in texts for b in s.encode()})
    assert len(used) < hidden
    dim = np.full(256, hidden - 1)
    dim[used] = np.arange(len(used))
    t["model.embed_tokens.weight"] = np.eye(hidden)[dim]
    t["model.norm.weight"] = np.ones(hidden)
    head = np.zeros((256, hidden))                      # an RMS-normed one-hot is sqrt(hidden) at its dimension
    head[:, dim[used]] = np.log(counts / counts.sum(axis=1, keepdims=True))[used].T / np.sqrt(hidden)
    t["lm_head.weight"] = head
    t.update({k: v * small for k, v in t.items() if k.startswith("model.layers.") and k.endswith("proj.weight")})
    return write_checkpoint(directory, cfg, t)


@pytest.fixture(scope="module")
def bigram(tmp_path_factory) -> Path:
    return bigram_checkpoint(tmp_path_factory.mktemp("bigram"), task_texts())


def lls(out: dict, task: str) -> dict[int, list[float]]:
    """Per example: the log-likelihood of each choice (multiple choice) or of the text (rolling)."""
    got = {}
    for s in out["samples"][task]:
        got[s["doc_id"]] = [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in s["resps"]]
    return got


def evaluate(model, tasks=(MC, ROLLING), **kw) -> dict:
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=TASKS, include_defaults=False)
    return simple_evaluate(model=model, tasks=list(tasks), task_manager=tm, log_samples=True, bootstrap_iters=100,
                           **kw)


# ----------------------------------------------------------------------------- the model in lm-eval

@needs_lmeval
def test_hetmoe_is_an_lm_eval_model():
    from lm_eval.api.model import LM
    from lm_eval.api.registry import get_model

    from sim.functional.lmeval import HetmoeLM

    assert get_model("hetmoe") is HetmoeLM and issubclass(HetmoeLM, LM)
    with pytest.raises(NotImplementedError, match="log-likelihoods"):
        HetmoeLM.generate_until(object.__new__(HetmoeLM), [])


@needs_lmeval
def test_local_task_runs_end_to_end_through_lm_evals_command_line(bigram, tmp_path, capsys):
    """`lm-eval run --model hetmoe --model_args ...` (lm-eval's own command line; the registry builds the model
    from its name and the argument string), on the local task read from JSONL."""
    from sim.cli import main

    status = main(["lm-eval", "run", "--model", "hetmoe", "--model_args",
                   f"checkpoint={bigram},hw=hermes-64,policy=maxnn,fraction=0.25,noise_seed=0",
                   "--tasks", MC, ROLLING, "--include_path", TASKS, "--device", "cpu", "--log_samples",
                   "--output_path", str(tmp_path)])
    assert status == 0
    assert MC in capsys.readouterr().out                        # lm-eval's table
    files = list(tmp_path.rglob("results_*.json"))
    assert len(files) == 1
    res = json.loads(files[0].read_text())["results"]
    assert 0.5 <= res[MC]["acc,none"] <= 1.0                    # chance is 0.25: the bigram model knows these texts
    assert 0 < res[ROLLING]["bits_per_byte,none"] < 8
    samples = [json.loads(line) for f in tmp_path.rglob(f"samples_{MC}_*.jsonl") for line in f.read_text().splitlines()]
    assert len(samples) == 20 and all(len(s["resps"]) == 4 for s in samples)


@needs_lmeval
def test_all_digital_16_bit_equals_lm_evals_hugging_face_backend(tmp_path):
    """Accuracy and every per-example log-likelihood within 1e-4 of lm-eval's own `hf` model, on a checkpoint
    written by transformers, tokenised by the tokenizer.json beside it (byte-level BPE without merges)."""
    torch = pytest.importorskip("torch", reason="the reference extra (torch, transformers) is not installed")
    transformers = pytest.importorskip("transformers", reason="the reference extra is not installed")
    pytest.importorskip("accelerate", reason="lm-eval's hf backend needs accelerate (pip install accelerate)")
    from lm_eval.models.huggingface import HFLM

    from sim.functional.lmeval import HetmoeLM

    torch.manual_seed(0)
    cfg = transformers.OlmoeConfig(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=4, intermediate_size=16, num_experts=6, num_experts_per_tok=2,
                                   max_position_embeddings=256, eos_token_id=10, bos_token_id=None, pad_token_id=None)
    model = transformers.OlmoeForCausalLM(cfg).eval()
    with torch.no_grad():          # larger weights than the default init make routing and norms matter
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    model.save_pretrained(tmp_path)
    write_byte_tokenizer(tmp_path)
    ours = HetmoeLM(checkpoint=str(tmp_path), policy="all-digital", digital_weight_bits=16, progress=False)
    assert ours.hetmoe.tokenizer.name.endswith("tokenizer.json") and ours.prefix_token_id == 10
    hf = evaluate(HFLM(pretrained=str(tmp_path), dtype="float32", device="cpu", batch_size=4))
    mine = evaluate(ours)
    for task in (MC, ROLLING):
        a, b = lls(hf, task), lls(mine, task)
        assert a.keys() == b.keys() and len(a) == 20
        assert max(abs(x - y) for d in a for x, y in zip(a[d], b[d])) <= 1e-4
        for k, v in hf["results"][task].items():
            if "," in k and isinstance(v, float):
                assert mine["results"][task][k] == pytest.approx(v, rel=1e-4, abs=1e-9), k
    assert mine["results"][MC]["acc,none"] == hf["results"][MC]["acc,none"]


def write_byte_tokenizer(directory: Path) -> None:
    """tokenizer.json mapping each UTF-8 byte to its value as id (GPT-2's byte alphabet, no merges); EOS = '\\n'."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = byte_alphabet()
    tok = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": alphabet[10], "model_max_length": 256}))


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (bytes_to_unicode)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


@needs_lmeval
def test_byte_tokenizer_json_gives_the_bytes(tmp_path):
    pytest.importorskip("tokenizers", reason="tokenizers is not installed")
    from sim.functional.lmeval import load_tokenizer

    write_byte_tokenizer(tmp_path)
    text = "déjà vu:\n\tx = f'{y!r}'  # ünïcode"
    tok = load_tokenizer(None, tmp_path, 256)
    assert tok.name.endswith("tokenizer.json") and tok.eos_id == 10
    assert tok.encode(text) == list(text.encode()) == load_tokenizer("bytes", tmp_path, 256).encode(text)
    assert tok.decode(tok.encode(text)) == text


@needs_lmeval
def test_loglikelihoods_equal_a_clean_forward_pass_per_example(bigram):
    """Without transformers: every choice's log-likelihood equals hetmoe's clean forward pass of that one sequence
    alone (no padding, no chunking), with lm-eval's context/continuation split."""
    from arch import load_chip
    from arch.noise import slot_physics
    from sim.functional.architecture import read_architecture
    from sim.functional.backend import backend
    from sim.functional.forward import ForwardRun, Variant
    from sim.functional.lmeval import HetmoeLM

    out = evaluate(HetmoeLM(checkpoint=str(bigram), policy="all-digital", digital_weight_bits=16, chunk_tokens=256,
                            progress=False), tasks=[MC])
    run = ForwardRun(read_architecture(bigram), bigram, slot_physics(load_chip("hermes-64")), [], [],
                     backend("numpy"), keep_logits=True)
    worst = 0.0
    for s in out["samples"][MC]:
        ctx = s["doc"]["context"]
        for choice, (ll, _) in zip(s["doc"]["choices"], (r[0] for r in s["resps"])):
            n = len(ctx) - len(ctx.rstrip())            # lm-eval moves the context's trailing blanks over
            head, tail = (ctx[:-n], ctx[-n:] + choice) if n else (ctx, choice)
            seq = list((head + tail).encode())
            run.run(np.asarray([seq]))
            z = np.concatenate(run.logits[Variant(None, None)])[0].astype(np.float64)
            lp = z - (z.max(1, keepdims=True) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)))
            k = len(tail.encode())
            ref = lp[np.arange(len(seq) - 1 - k, len(seq) - 1), seq[len(seq) - k:]].sum()
            worst = max(worst, abs(ref - ll))
    assert worst <= 1e-4


# ----------------------------------------------------------------------------- noise and seeds

@pytest.fixture(scope="module")
def accuracy_run(bigram, tmp_path_factory):
    """`hetmoe accuracy --tasks` beside the perplexity it already reports: all-analog and maxnn, two noise seeds."""
    if not HAVE_LMEVAL:
        pytest.skip("lm-eval is not installed (pip install 'hetmoe[lmeval]')")
    out = tmp_path_factory.mktemp("acc")
    text = out / "eval.txt"
    text.write_text("\n".join(task_texts()))
    return at_root(["accuracy", "--checkpoint", str(bigram), "--eval", str(text), "--tokenizer", "bytes",
                    "--seq-len", "64", "--tasks", f"{MC},{ROLLING}", "--include-path", TASKS,
                    "--policy", "all-analog", "--policy", "maxnn", "--fraction", "0.25", "--noise-seeds", "2",
                    "--digital-weight-bits", "16", "--out", str(out), "--quiet"], out)


def at_root(argv: list[str], out: Path) -> Path:
    """Run the command line from the repository root (the task YAMLs name their data from there); exit 0."""
    from sim.cli import main

    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        status = main(argv)
    finally:
        os.chdir(cwd)
    assert status == 0
    return out


@needs_lmeval
def test_accuracy_tasks_tabulates_metrics_beside_perplexity(accuracy_run):
    res = json.loads((accuracy_run / "accuracy.json").read_text())
    assert [r["label"] for r in res["placements"]] == ["all-analog", "maxnn 25%"]      # the perplexity side
    t = res["tasks"]
    assert t["tasks"] == [MC, ROLLING] and t["reference"] == "all-digital" and t["noise_seeds"] == [0, 1]
    labels = [r["label"] for r in t["placements"]]
    assert labels == ["all-digital", "all-analog", "maxnn 25%"]
    ref = t["placements"][0]
    assert ref["mean"][MC]["acc"] == t["clean"][MC]["acc"]                 # 16-bit all-digital is the clean model
    for r in t["placements"]:
        for task, metric in t["metrics"]:
            d = r["delta"][task][metric]
            assert d["per_seed"] == pytest.approx(np.subtract(r["per_seed"][task][metric],
                                                              ref["per_seed"][task][metric]).tolist())
            assert r["mean"][task][metric] == pytest.approx(np.mean(r["per_seed"][task][metric]))
    csv = (accuracy_run / "accuracy_tasks.csv").read_text().splitlines()
    assert csv[0].startswith("label,policy,fraction,task,metric,mean,std,delta_mean")
    assert len(csv) == 1 + len(t["metrics"]) * 4                         # clean + three placements per metric
    assert (accuracy_run / "accuracy.csv").is_file()


@needs_lmeval
def test_noise_lowers_the_loglikelihood(accuracy_run):
    t = json.loads((accuracy_run / "accuracy.json").read_text())["tasks"]
    analog = next(r for r in t["placements"] if r["label"] == "all-analog")
    assert min(analog["delta"][ROLLING]["bits_per_byte"]["per_seed"]) > 0.05       # every seed loses
    assert analog["std"][ROLLING]["bits_per_byte"] > 0                               # and the seeds differ
    ppl = json.loads((accuracy_run / "accuracy.json").read_text())["placements"][0]
    assert ppl["label"] == "all-analog" and ppl["mean"]["delta_bits_per_token"] > 0


@needs_lmeval
def test_seeds_are_distinct_and_reproducible(bigram, accuracy_run):
    """Two noise seeds are two chips; a seed is the same chip again, even from a single-placement lm-eval run
    (the numbers of a placement and seed do not depend on what runs beside it)."""
    from sim.functional.lmeval import HetmoeLM

    t = json.loads((accuracy_run / "accuracy.json").read_text())["tasks"]
    analog = next(r for r in t["placements"] if r["label"] == "all-analog")
    a, b = analog["per_seed"][ROLLING]["bits_per_byte"]
    assert abs(a - b) > 1e-3
    out = evaluate(HetmoeLM(checkpoint=str(bigram), policy="all-analog", noise_seed=1, digital_weight_bits=16,
                            progress=False))
    assert out["results"][ROLLING]["bits_per_byte,none"] == b
    assert out["results"][MC]["acc,none"] == analog["per_seed"][MC]["acc"][1]
    assert out["results"][MC]["acc_norm,none"] == analog["per_seed"][MC]["acc_norm"][1]


# ----------------------------------------------------------------------------- refusals

def test_tasks_without_lm_eval_is_one_line_and_exit_2(bigram, monkeypatch, capsys, tmp_path):
    from sim.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    status = main(["accuracy", "--checkpoint", str(bigram), "--tasks", MC, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "pip install 'hetmoe[lmeval]'" in err
    assert not (tmp_path / "o").exists()


def test_accuracy_needs_eval_or_tasks(bigram, capsys, tmp_path):
    from sim.cli import main

    assert main(["accuracy", "--checkpoint", str(bigram), "--out", str(tmp_path)]) == 2
    assert "--tasks" in capsys.readouterr().err


@needs_lmeval
def test_generation_and_unknown_tasks_are_refused_before_any_pass(bigram, tmp_path, capsys):
    from sim.cli import main

    (tmp_path / "gen.yaml").write_text(
        "task: hetmoe_bytes_gen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {ROOT / TASKS / 'hetmoe_bytes_mc.jsonl'}\ntest_split: test\noutput_type: generate_until\n"
        "doc_to_text: '{{context}}'\ndoc_to_target: '{{choices[answer]}}'\ngeneration_kwargs:\n  until: ['\\n']\n"
        "metric_list:\n  - metric: exact_match\n")
    for task, why in (("hetmoe_bytes_gen", "generate_until"), ("no_such_task", "not one of lm-eval's")):
        status = main(["accuracy", "--checkpoint", str(bigram), "--tasks", task, "--include-path", str(tmp_path),
                       "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert status == 2 and why in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- compare --tasks

@pytest.fixture(scope="module")
def compare_tasks(bigram, tmp_path_factory):
    """`hetmoe compare --tasks` on a noisy chip: task accuracy on the report's accuracy axis."""
    if not HAVE_LMEVAL:
        pytest.skip("lm-eval is not installed (pip install 'hetmoe[lmeval]')")
    out = tmp_path_factory.mktemp("cmp") / "out"
    return at_root(["compare", "--checkpoint", str(bigram), "--hw", "hermes-64", "--set", "analog.noise.out_noise=0.3",
                    "--tasks", MC, "--include-path", TASKS, "--noise-seeds", "2", "--tokens", "64",
                    "--baseline", "none", "--out", str(out), "--quiet"], out)


@needs_lmeval
def test_compare_tasks_puts_task_accuracy_on_the_accuracy_axis(compare_tasks):
    acc = json.loads((compare_tasks / "accuracy.json").read_text())
    t = acc["tasks"]
    assert acc["accuracy_axis"] == "tasks" and acc["placements"] == []     # no --eval: no perplexity side
    clean = t["clean"][MC]["acc"]
    rows = {r["label"]: r for r in t["placements"]}
    lines = (compare_tasks / "tradeoff.csv").read_text().splitlines()
    head = lines[0].split(",")
    assert head[6:8] == ["task_accuracy_drop_mean", "task_accuracy_drop_std"]
    seen = set()
    for line in lines[1:]:
        cells = line.split(",")
        per = [clean - v for v in rows[cells[0]]["per_seed"][MC]["acc"]]      # points lost on each seed
        mean = sum(per) / 2
        std = abs(per[0] - per[1]) / 2 ** 0.5                                  # sample std of two values
        assert float(cells[6]) == pytest.approx(mean, abs=1e-9)
        assert float(cells[7]) == pytest.approx(std, abs=1e-9)
        seen.add(cells[0])
    assert {"all-analog", "all-digital", "maxnn 12.5%", "random 25%"} <= seen
    analog = [clean - v for v in rows["all-analog"]["per_seed"][MC]["acc"]]
    assert min(analog) > 0                                                     # out_noise 0.3 costs every seed
    report = (compare_tasks / "report.md").read_text()
    assert "lm-eval task accuracy at most 1 points below the clean model's" in report
    assert f"All-analog costs {100 * sum(analog) / 2:+.3g} points" in report
    assert "| placement | tokens/s | energy/token (µJ) | tokens/s/W | task accuracy drop (points) |" in report


def test_task_axis_separates_policies_by_their_paired_seeds():
    """A planted task result: maxnn and random differ by less than their paired seed error at 12.5 % (not
    separable) and by far more at 25 % (separable, maxnn better)."""
    from sim.report import tradeoff

    def row(label, accs):
        return {"label": label, "per_seed": {"t": {"acc": accs}}}

    acc = {"noise_seeds": 4, "placements": [], "tasks": {
        "metrics": [["t", "acc"], ["t", "acc_norm"]], "noise_seeds": [0, 1, 2, 3], "clean": {"t": {"acc": 0.8}},
        "placements": [row("maxnn 12.5%", [0.70, 0.78, 0.72, 0.76]), row("random 12.5%", [0.71, 0.75, 0.74, 0.75]),
                       row("maxnn 25%", [0.79, 0.78, 0.79, 0.78]), row("random 25%", [0.70, 0.70, 0.69, 0.71])]}}
    ax = tradeoff.axis(acc)
    assert ax["kind"] == "tasks" and ax["primary"] == {"t": "acc"}
    by = {k: {"loss_per_seed": v[2]} for k, v in ax["rows"].items()}
    assert by["random 25%"]["loss_per_seed"] == pytest.approx([0.10, 0.10, 0.11, 0.09])
    close = tradeoff.separation(by, "maxnn 12.5%", "random 12.5%", ax)
    assert "not separable from random 12.5%" in close
    d = np.array([0.01, 0.02, 0.01, 0.02]) - np.array([0.10, 0.10, 0.11, 0.09])     # maxnn − random, 25 %
    far = tradeoff.separation(by, "maxnn 25%", "random 25%", ax)
    assert f"{100 * d.mean():+.3g} points" in far and "maxnn 25% damages less than random 25%" in far
    assert d.mean() / (d.std(ddof=1) / 2) < -2.35            # the planted gap is beyond the 95 % one-sided t bound
