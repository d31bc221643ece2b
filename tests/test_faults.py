"""Faults a user meets: killed runs, stale temporaries, corrupt caches, missing extras, slow help.

Each test fails on the code before issue 11: pool workers outlived a ``kill -9`` of their parent,
hidden ``.tmp-PID`` files stayed forever, a corrupt ``.partial`` run blocked the figure even with
``--force``, a truncated cache file raised, a resumed figure forgot the compute time of its
earlier part, a missing extra gave a traceback, and ``loraml --help`` imported numpy and scipy.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from loraml.cli import main

TINY = {"d": 8, "k": 1, "Ts": [2, 3], "instances": 2}


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return bool(re.search(r"^State:\s+Z", state, re.M))


def _make(name, out, **kw):
    from loraml.figures.generate import generate

    return generate([name], quick=True, out=out, jobs=1, progress=False, draw=False, **kw)[0]


def _overrides():
    return {"spectrum": TINY}


# ---------------------------------------------------------------------------------------------
# kill -9: the pool's workers end with their parent
# ---------------------------------------------------------------------------------------------
_POOL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    from loraml.figures import generate as gen
    from loraml.figures.registry import Run
    import sleepy

    runs = [Run(sleepy.sleepy, {"folder": sys.argv[1]}, (i,), 1.0) for i in range(2)]
    spec = type("Spec", (), {"seed": 0})()
    pending = {"x": {"runs": runs, "spec": spec}}
    gen._run_in_pool([("x", 0), ("x", 1)], pending, 2, lambda *a: None)
    """
)

_SLEEPY = textwrap.dedent(
    """
    import os, time
    import numpy as np

    def sleepy(rng, folder):
        with open(os.path.join(folder, f"worker-{os.getpid()}"), "w") as fh:
            fh.write("up")
        time.sleep(120)
        return {"x": np.zeros(1)}
    """
)


def test_pool_workers_die_with_a_killed_parent(tmp_path):
    pytest.importorskip("tqdm")
    (tmp_path / "sleepy.py").write_text(_SLEEPY)
    proc = subprocess.Popen(
        [sys.executable, "-c", _POOL_SCRIPT, str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(tmp_path.glob("worker-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
        assert len(workers) == 2, "the workers did not start"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = [pid for pid in workers if not _gone(pid)]
        assert not alive, f"workers {alive} outlived their killed parent"
    finally:
        for p in tmp_path.glob("worker-*"):
            pid = int(p.name.split("-")[1])
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------------------------------------
# Stale temporaries, corrupt caches, --force, resumed compute time
# ---------------------------------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    from loraml.figures.generate import generate

    dead = tmp_path / f".spectrum.npz.tmp-{_dead_pid()}"
    dead.write_bytes(b"x" * 1000)
    live = tmp_path / ".spectrum.npz.tmp-1"  # pid 1 is alive: its temporary stays
    live.write_bytes(b"y")
    generate(["spectrum"], quick=True, out=tmp_path, progress=False, draw=False,
             overrides=_overrides())  # fmt: skip
    assert not dead.exists()
    assert live.exists()


def test_solve_removes_stale_temporaries_beside_its_output(tmp_path, rng):
    import loraml.theory as th
    from loraml.theory.io import save_family

    save_family(tmp_path / "in.npz", th.draw_family(6, 3, 1, rng))
    dead = tmp_path / f".out.npz.tmp-{_dead_pid()}"
    dead.write_bytes(b"x")
    argv = ["solve", "--instance", str(tmp_path / "in.npz"), "--method", "sr"]
    assert main([*argv, "--out", str(tmp_path / "out.npz")]) == 0
    assert not dead.exists()


def _spectrum_partial(out: Path) -> Path:
    from loraml.figures import cache
    from loraml.figures.registry import registry

    spec = registry()["spectrum"]
    settings = {**spec.quick, **TINY}
    key = cache.settings_key("spectrum", settings, spec.seed, spec.version)
    return cache.partial_dir(out / "spectrum", key)


@pytest.mark.parametrize("force", [False, True])
def test_a_corrupt_partial_run_is_recomputed(tmp_path, force, capsys):
    from loraml.figures.generate import generate

    ref = generate(["spectrum"], quick=True, out=tmp_path / "ref", progress=False, draw=False,
                   overrides=_overrides())[0]  # fmt: skip
    folder = _spectrum_partial(tmp_path / "b")
    folder.mkdir(parents=True)
    (folder / "run-00000.npz").write_bytes(b"PK\x03\x04 truncated by kill -9")
    out = generate(["spectrum"], quick=True, out=tmp_path / "b", progress=False, draw=False,
                   force=force, overrides=_overrides())[0]  # fmt: skip
    np.testing.assert_array_equal(out.data["sv"], ref.data["sv"])
    assert not folder.exists()


def test_a_truncated_cache_file_is_recomputed_with_a_warning(tmp_path, capsys):
    from loraml.figures.generate import generate

    kw = dict(quick=True, out=tmp_path, progress=False, draw=False, overrides=_overrides())
    first = generate(["spectrum"], **kw)[0]
    data = first.stem.with_suffix(".npz")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    capsys.readouterr()
    again = generate(["spectrum"], **kw)[0]
    assert not again.cached
    np.testing.assert_array_equal(again.data["sv"], first.data["sv"])
    err = capsys.readouterr().err
    assert "warning" in err and "spectrum.npz" in err and "recomputing" in err


def test_compute_seconds_add_the_part_before_a_resume(tmp_path, monkeypatch):
    import loraml.figures.generate as gen

    real = gen.execute
    calls = {"n": 0}

    def fake(run, seed):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # interrupted after one finished run
        return real(run, seed)[0], 5.0

    monkeypatch.setattr(gen, "execute", fake)
    kw = dict(quick=True, out=tmp_path, progress=False, draw=False, overrides=_overrides())
    with pytest.raises(KeyboardInterrupt):
        gen.generate(["spectrum"], **kw)
    out = gen.generate(["spectrum"], **kw)[0]
    runs = calls["n"] - 1  # every run but the interrupted call
    meta = json.loads(out.stem.with_suffix(".json").read_text())
    assert meta["compute_seconds"] == pytest.approx(5.0 * runs)
    assert out.seconds == pytest.approx(5.0 * runs)


# ---------------------------------------------------------------------------------------------
# Missing extras, and a light `loraml --help`
# ---------------------------------------------------------------------------------------------
def _run_blocked(blocked: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from loraml.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.mark.parametrize("module", ["matplotlib", "tqdm"])
def test_figures_without_its_extra_names_the_install_line(module, tmp_path):
    out = _run_blocked([module], ["figures", "spectrum", "--out", str(tmp_path / "o")], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert module in out.stderr and "pip install 'loraml[figures]'" in out.stderr
    assert not (tmp_path / "o").exists()


def test_figures_list_needs_no_matplotlib(tmp_path):
    out = _run_blocked(["matplotlib", "tqdm"], ["figures", "--list"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "spectrum" in out.stdout and "Traceback" not in out.stderr


def test_help_imports_neither_numpy_nor_scipy():
    code = (
        "import sys\n"
        "from loraml.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('numpy', 'scipy', 'cvxpy', 'torch', 'matplotlib')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stderr, out.stderr
    assert "solve" in out.stdout and "verify" in out.stdout and "figures" in out.stdout


@pytest.mark.parametrize("command", ["solve", "verify", "figures"])
def test_help_text_quotes_no_timings(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert not re.search(r"\d\s*(-\s*\d+\s*)?(s|sec|seconds|min|minutes)\b", text), text
    assert "cores)" not in text
