"""The examples in docs/ run: python blocks in one namespace per page, bash blocks with `set -e`, in order."""
import re
import subprocess
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _blocks(page: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


@pytest.mark.parametrize("page", ["python-api.md", "format.md"])
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(page, "python")
    assert blocks
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, f"{page} example", "exec"), namespace)  # noqa: S102 - our own documentation


def test_cli_examples_run(tmp_path):
    blocks = _blocks("cli.md", "bash")
    assert len(blocks) >= 4
    script = "set -euo pipefail\n" + "\n".join(blocks)
    res = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "digits-back" / "digit1.png").exists() and (tmp_path / "middle.wav").exists()


def test_benchmark_examples_run(tmp_path):
    script = "set -euo pipefail\n" + "\n".join(_blocks("benchmarks.md", "bash"))
    res = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "bench-out" / "results.json").exists()
