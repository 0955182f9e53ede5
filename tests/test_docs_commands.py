"""Every command block of the README and docs/*.md marked runnable (a ``<!-- runnable -->``
line right above the block) runs as written, in order, from a scratch folder holding a copy
of ``examples/``, with the installed ``offramp`` on the PATH. A command the docs show that
stops working fails here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARK = "<!-- runnable -->"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def marked_blocks(path: Path) -> list[tuple[str, list[str]]]:
    """(language, lines) of each block marked runnable in ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        assert lines[i + 1].startswith("```"), f"{path.name}:{i + 1}: {MARK} not above a block"
        body = []
        for text in lines[i + 2:]:
            if text.startswith("```"):
                break
            body.append(text)
        blocks.append((lines[i + 1].removeprefix("```").strip(), body))
    return blocks


def runnable_blocks(path: Path) -> list[list[str]]:
    """The commands of each shell block marked runnable in ``path`` (continuation lines
    joined)."""
    blocks = []
    for lang, body in marked_blocks(path):
        if lang == "python":
            continue
        joined = re.sub(r"\\\n\s*", " ", "\n".join(body))
        blocks.append([c.strip() for c in joined.splitlines() if c.strip()
                       and not c.strip().startswith("#")])
    return blocks


def python_script(path: Path) -> str:
    """The Python blocks marked runnable in ``path``, in order, as one script (notebook style:
    a block sees what the blocks above it defined)."""
    return "\n\n".join("\n".join(body) for lang, body in marked_blocks(path) if lang == "python")


BLOCKS = [(p.relative_to(REPO).as_posix(), j, cmds) for p in DOCS
          for j, cmds in enumerate(runnable_blocks(p))]
SCRIPTS = [(p.relative_to(REPO).as_posix(), python_script(p)) for p in DOCS if python_script(p)]


def test_the_docs_mark_their_commands():
    assert sum(1 for doc, _, _ in BLOCKS if doc == "README.md") >= 2


@pytest.mark.parametrize("doc,index,commands", BLOCKS, ids=[f"{d}#{j}" for d, j, _ in BLOCKS])
def test_runnable_block(doc, index, commands, tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for cmd in commands:
        done = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{doc} block {index}: `{cmd}` exited {done.returncode}:\n" \
                                     f"{done.stderr[-2000:]}"


def test_the_api_walk_through_is_there():
    assert any(doc == "docs/api.md" for doc, _ in SCRIPTS)


@pytest.mark.parametrize("doc,script", SCRIPTS, ids=[d for d, _ in SCRIPTS])
def test_python_blocks_run_in_order(doc, script, tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    (tmp_path / "walk_through.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "walk_through.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{doc}'s Python blocks failed:\n{done.stderr[-3000:]}"
