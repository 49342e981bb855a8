"""Running the command line in-process in tests, and the one-line error rule every refusal keeps."""

from __future__ import annotations

from sim.cli import main


def cli(argv: list, capsys) -> tuple[int, str, str]:
    """Run the command line in-process: exit status, stdout, stderr."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str, *fragments: str) -> str:
    """``err`` is exactly one line, no traceback, holding every fragment, and no internal error unless a
    fragment names one; returns the line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    assert "internal error" not in err or any("internal error" in f for f in fragments), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_tiny(root) -> tuple:
    """A two-node chip YAML and an 8-expert top-2 model config under ``root``: the smallest inputs a command
    runs on (paths of the chip and of the config)."""
    import json

    from tests.test_engine import TINY, TWO_NODE

    (root / "chip.yaml").write_text(TWO_NODE)
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text(json.dumps({**TINY, "num_experts": 8, "num_experts_per_tok": 2}))
    return root / "chip.yaml", root / "model" / "config.json"
