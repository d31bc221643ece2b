"""Bad input to ``loraml solve``, ``verify`` and ``figures``: one line, exit 2, nothing written.

The contract (README, "Bad input"): a user's mistake is reported as exactly one line on stderr
naming the argument and the fix, with exit code 2 and no traceback; it is found before any
computation starts; no file is written and no input changes. Outputs never replace an input
(also through links) or a special file. The fuzz tests at the end generate malformed instance
files and arguments with hypothesis and hold every run to that contract.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loraml.theory as th
from loraml.cli import main
from loraml.theory import checks
from loraml.theory.io import save_family

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _call(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in this process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as done:  # argparse's own errors
            code = done.code if isinstance(done.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(folder.rglob("*"))
        if not p.is_symlink() and (p.is_file() or p.is_dir())
    }


def _assert_refused(argv: list[str], folder: Path, *fragments: str) -> str:
    before = _snapshot(folder)
    code, out, err = _call(argv)
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert _snapshot(folder) == before, "a file was written or changed"
    return err


@pytest.fixture
def population(tmp_path, rng) -> Path:
    path = tmp_path / "in.npz"
    save_family(path, th.draw_family(6, 3, 1, rng))
    return path


@pytest.fixture
def no_compute(monkeypatch):
    """Any method run counts as computation started: the checks must come first."""
    import loraml.theory.cli as solve_cli

    def boom(*args, **kwargs):
        raise AssertionError("the computation started before the arguments were checked")

    for name in list(solve_cli.METHODS):
        monkeypatch.setitem(solve_cli.METHODS, name, boom)


def _solve(instance: Path, out: str, *extra: str) -> list[str]:
    return ["solve", "--instance", str(instance), "--method", "sr", "--out", out, *extra]


# ---------------------------------------------------------------------------------------------
# Never destroy what the user has
# ---------------------------------------------------------------------------------------------
def test_out_equal_to_the_input_is_refused(population, tmp_path, no_compute):
    os.link(population, tmp_path / "hard.npz")
    os.symlink(population, tmp_path / "soft.npz")
    for out in (population, tmp_path / "hard.npz", tmp_path / "soft.npz"):
        _assert_refused(_solve(population, str(out)), tmp_path, "--out", "is the input")
    # and the input given through a link, the output by its real name
    _assert_refused(_solve(tmp_path / "soft.npz", str(population)), tmp_path, "is the input")


def test_out_onto_a_named_pipe_is_refused(population, tmp_path, no_compute):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _assert_refused(_solve(population, str(fifo)), tmp_path, "named pipe")
    assert fifo.is_fifo()


def test_out_onto_a_character_device_writes_it_and_never_replaces_it(population, tmp_path):
    """A private copy of /dev/null (never the real one: a regression would replace it)."""
    import stat

    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with open(null, "wb") as fh:
            fh.write(b"probe")
    except OSError:
        pytest.skip("cannot create or write a device node here (needs CAP_MKNOD, no nodev)")
    before = os.stat(null)
    code, out, err = _call(_solve(population, str(null)))
    assert code == 0, err
    after = os.stat(null)
    assert stat.S_ISCHR(after.st_mode), "the device was replaced by a regular file"
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "null"]


@pytest.mark.parametrize(
    "make_out, fragment",
    [
        (lambda d: str(d), "is a folder"),
        (lambda d: "", "is empty"),
        (lambda d: str(d / ("x" * 300 + ".npz")), "too long"),
        (lambda d: str(d / "afile" / "out.npz"), "which is a file"),
        (lambda d: str(d / "no" / "such" / "out.npz"), "does not exist"),
    ],
)
def test_bad_out_is_one_line_before_any_work(make_out, fragment, population, tmp_path, no_compute):
    (tmp_path / "afile").write_text("x")
    _assert_refused(_solve(population, make_out(tmp_path)), tmp_path, fragment)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_folder_is_refused(population, tmp_path, no_compute):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _assert_refused(_solve(population, str(locked / "o.npz")), tmp_path, "not writable")
    finally:
        locked.chmod(0o755)


def test_out_that_cannot_be_created_is_refused_even_as_root(population, tmp_path, no_compute):
    if not Path("/proc").is_dir():
        pytest.skip("no /proc")
    _assert_refused(_solve(population, "/proc/out.npz"), tmp_path, "--out")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["figures", "spectrum", "--out", "{file}"], "not a folder"),
        (["figures", "spectrum", "--out", "{file}/sub"], "which is a file"),
        (["figures", "spectrum", "--out", ""], "is empty"),
        (["figures", "spectrum", "--jobs", "100000"], "--jobs"),
        (["verify", "--only", "theorem1", "--save-dir", "{file}"], "--save-dir"),
        (["verify", "--only", "theorem1", "--save-dir", ""], "--save-dir"),
    ],
)
def test_other_commands_check_their_outputs_first(argv, fragment, tmp_path, monkeypatch):
    from loraml.theory import checks as ch

    monkeypatch.setattr(ch, "check_theorem1", lambda *a, **k: pytest.fail("computed"))
    (tmp_path / "afile").write_text("x")
    argv = [a.replace("{file}", str(tmp_path / "afile")) for a in argv]
    _assert_refused(argv, tmp_path, fragment)


# ---------------------------------------------------------------------------------------------
# Clear errors, checked up front
# ---------------------------------------------------------------------------------------------
def _data(rng, **extra):
    X = rng.standard_normal((2, 4, 10))
    return {"X": X, "Y": rng.standard_normal((2, 4, 10)), **extra}


def _member_data_range(path: Path, key: str) -> tuple[int, int]:
    """Byte range of a stored member's content in the archive (local header skipped)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    return start, start + info.compress_size


@pytest.mark.parametrize("where", [0.0, 0.3, 0.6, 0.99])
def test_one_flipped_byte_is_one_line(where, population, tmp_path, no_compute):
    start, stop = _member_data_range(population, "U_star")
    raw = bytearray(population.read_bytes())
    raw[start + int(where * (stop - start - 1))] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    _assert_refused(_solve(bad, str(tmp_path / "o.npz")), tmp_path, "--instance", "flipped.npz")


def test_folder_or_unreadable_instance(tmp_path, no_compute):
    (tmp_path / "dir.npz").mkdir()
    _assert_refused(_solve(tmp_path / "dir.npz", str(tmp_path / "o.npz")), tmp_path, "is a folder")
    if os.geteuid() != 0:
        secret = tmp_path / "secret.npz"
        np.savez(secret, A_star=np.eye(2), U_star=np.ones((1, 2, 1)))
        secret.chmod(0)
        _assert_refused(_solve(secret, str(tmp_path / "o.npz")), tmp_path, "permission")


@pytest.mark.parametrize(
    "k, fragment",
    [(np.array(2.7), "integer"), (np.array(True), "integer"), (np.array([1, 2]), "one integer")],
)
def test_rank_in_the_file_must_be_an_integer(k, fragment, tmp_path, rng, no_compute):
    np.savez(tmp_path / "d.npz", **_data(rng, k=k))
    _assert_refused(_solve(tmp_path / "d.npz", str(tmp_path / "o.npz")), tmp_path, "'k'", fragment)


def test_u_star_of_the_wrong_dimension_is_refused_for_data(tmp_path, rng, no_compute):
    np.savez(tmp_path / "d.npz", **_data(rng, k=np.array(1), U_star=np.ones((2, 5, 1))))
    _assert_refused(_solve(tmp_path / "d.npz", str(tmp_path / "o.npz")), tmp_path, "'U_star'")


@pytest.mark.parametrize("value", ["-1", str(2**63), "1e3", "seven"])
def test_seed_out_of_range_is_refused(value, population, tmp_path, no_compute):
    argv = _solve(population, str(tmp_path / "o.npz"), "--seed", value)
    _assert_refused(argv, tmp_path, "--seed")
    _assert_refused(["verify", "--seed", value], tmp_path, "--seed")


def test_a_small_file_asking_for_a_lot_of_memory_is_refused(tmp_path, monkeypatch, no_compute):
    monkeypatch.setenv("LORAML_MEMORY_LIMIT", str(2**30))
    # 640 KB on disk; the d x d moments of d = 40000 need about 13 GB
    np.savez(tmp_path / "big.npz", X=np.zeros((1, 40000, 1)), Y=np.zeros((1, 40000, 1)))
    err = _assert_refused(_solve(tmp_path / "big.npz", str(tmp_path / "o.npz")), tmp_path, "GiB")
    assert "limit of 1 GiB" in err


def test_a_header_claiming_huge_arrays_is_refused(tmp_path, no_compute):
    # a valid archive whose .npy header claims 200000 x 200000 doubles (298 GiB) over 72 bytes
    header = {"descr": "<f8", "fortran_order": False, "shape": (200000, 200000)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("A_star.npy", buf.getvalue() + bytes(72))
        zf.writestr("U_star.npy", _npy(np.ones((2, 3, 1))))
    _assert_refused(_solve(tmp_path / "huge.npz", str(tmp_path / "o.npz")), tmp_path, "298 GiB")


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# verify --instance decides with scale-free tolerances
# ---------------------------------------------------------------------------------------------
def _verify_json(path: Path) -> tuple[int, dict]:
    import json

    code, out, err = _call(["verify", "--instance", str(path), "--quick", "--json"])
    assert "Traceback" not in err, err
    return code, json.loads(out)


@pytest.mark.parametrize("d, T, k", [(1, 2, 1), (3, 2, 3), (5, 1, 1)])
def test_verify_on_edge_instances_says_not_applicable(d, T, k, tmp_path, rng):
    A = rng.standard_normal((d, d))
    path = tmp_path / "edge.npz"
    np.savez(path, A_star=A + A.T, U_star=rng.standard_normal((T, d, k)))
    code, report = _verify_json(path)
    assert code == 0
    verdicts = {key: report[key]["verdict"] for key in report.get("not_applicable", [])}
    assert verdicts and set(verdicts.values()) == {"not applicable"}
    if T != 2:
        assert report["theorem4"]["verdict"] == "not applicable"
    if 2 * k >= d:
        assert report["theorem2"]["verdict"] == "not applicable"


def test_verify_says_when_no_claim_could_be_decided(tmp_path, rng):
    np.savez(tmp_path / "data.npz", **_data(rng))  # no rank, a data instance: nothing applies
    code, out, err = _call(["verify", "--instance", str(tmp_path / "data.npz"), "--quick"])
    assert code == 0 and "every claim" not in out
    assert "no claim of the paper could be decided" in out


def _scaled(rng, d=8, T=4, k=1, scales=(1.0, 1e3, 1e-3, 1.0)) -> th.TaskFamily:
    fam = checks.draw_generic_family(rng, d, T, k)
    U = fam.U_star * np.asarray(scales)[:, None, None]
    return th.TaskFamily(fam.A_star, U, fam.U_star[:0])


def test_tasks_differing_in_scale_by_1e6_never_fail_a_claim(rng):
    fam = _scaled(rng)  # ||U_t U_t^T|| spans 1e-6 .. 1e6
    loo = th.TaskFamily(fam.A_star, fam.U_star[:-1], fam.U_star[-1:])
    results = [
        checks.check_theorem1(rng, families=[fam], rank_rtol=None),
        checks.check_corollary1(rng, families=[loo], reps_for_T=0, zero_rtol=None),
        checks.check_theorem2(rng, families=[fam], starts=2),
        checks.check_theorem3(rng, families=[fam], starts=2),
    ]
    for res in results:
        assert res.verdict() in ("held", "undecided"), (res.key, res.failures)


def test_near_collinear_factors_are_decided_not_failed(rng):
    fam = checks.draw_generic_family(rng, 8, 4, 1)
    U = fam.U_star.copy()
    U[1] = U[0] + 1e-4 * rng.standard_normal(U[0].shape)  # generic, barely
    fam = th.TaskFamily(fam.A_star, U, U[:0])
    res = checks.check_theorem1(rng, families=[fam], rank_rtol=None)
    assert res.verdict() == "held", res.failures + res.undecided


def test_a_clearly_false_claim_still_fails_with_scale_free_tolerances(rng):
    fam = checks.draw_generic_family(rng, 8, 3, 1)
    U = fam.U_star.copy()
    U[2] = U[1]  # dependent factors: rank(A_SR - A*) = 2 < kT = 3
    res = checks.check_theorem1(rng, families=[th.TaskFamily(fam.A_star, U, U[:0])], rank_rtol=None)
    assert res.verdict() == "FAILED"


def test_the_rate_is_measured_where_it_applies_at_large_d(rng):
    """At d = 40 the fixed n = 100..1600 sit below k(2d - k); the instance's n do not."""
    fam = checks.draw_generic_family(rng, 40, 3, 1)
    res = checks.check_rate(rng, families=[fam], reps=6, ns=None, noise_std=None)
    assert res.verdict() == "held", res.numbers["slope"]


def test_verify_progress_goes_to_stderr_and_stdout_holds_only_json():
    import json

    code, out, err = _call(["verify", "--only", "theorem1", "--instances", "2", "--json"])
    assert code == 0
    json.loads(out)  # stdout is exactly the JSON object
    assert len(out.strip().splitlines()) == 1
    assert "theorem1" in err  # the progress bar names the statement it runs


# ---------------------------------------------------------------------------------------------
# Fuzz: generated malformed instances and arguments
# ---------------------------------------------------------------------------------------------
#: Examples per fuzz test: a multiple of the profile's count (ci: 25, thorough: 400).
FUZZ = settings(
    max_examples=4 * settings.default.max_examples,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
)

_BAD_VALUES = [np.nan, np.inf, -np.inf]


@st.composite
def malformed_instances(draw) -> tuple[str, dict[str, np.ndarray] | bytes]:
    """A description and the arrays (or raw bytes) of an instance that must be refused."""
    d = draw(st.integers(1, 5))
    T = draw(st.integers(1, 3))
    k = draw(st.integers(1, d))
    N = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["population", "data"]))
    arrays: dict[str, np.ndarray] = (
        {"A_star": rng.standard_normal((d, d)), "U_star": rng.standard_normal((T, d, k))}
        if kind == "population"
        else {
            "X": rng.standard_normal((T, d, N)),
            "Y": rng.standard_normal((T, d, N)),
            "k": np.array(k),
        }
    )
    fault = draw(
        st.sampled_from(
            ["nonfinite", "ndim", "shape", "dtype", "missing", "empty", "k", "bytes", "truncate",
             "header", "single", "extra_d"]
        )
    )  # fmt: skip
    key = draw(st.sampled_from(sorted(arrays)))
    if fault == "nonfinite":
        key = draw(st.sampled_from([kk for kk in sorted(arrays) if kk != "k"]))
        a = arrays[key].copy()
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(_BAD_VALUES))
        arrays[key] = a
    elif fault == "ndim":
        key = draw(st.sampled_from([kk for kk in sorted(arrays) if kk != "k"]))
        arrays[key] = arrays[key].reshape(-1) if draw(st.booleans()) else arrays[key][..., None]
    elif fault == "shape":
        if kind == "population":
            arrays["U_star"] = rng.standard_normal((T, d + draw(st.integers(1, 3)), k))
        else:
            arrays["Y"] = rng.standard_normal((T, d, N + draw(st.integers(1, 3))))
    elif fault == "dtype":
        key = draw(st.sampled_from([kk for kk in sorted(arrays) if kk != "k"]))
        a = arrays[key]
        arrays[key] = a.astype(complex) + 1j if draw(st.booleans()) else a.astype(str)
    elif fault == "missing":
        key = draw(st.sampled_from([kk for kk in sorted(arrays) if kk != "k"]))
        del arrays[key]
    elif fault == "empty":
        if kind == "population":
            arrays["U_star"] = np.zeros((0, d, k))
        else:
            arrays["X"], arrays["Y"] = np.zeros((T, d, 0)), np.zeros((T, d, 0))
    elif fault == "k":
        choice = draw(st.sampled_from(["0", "-1", "d+1", "2.5", "True", "[1,1]", "nan", "'2'"]))
        value = {
            "0": np.array(0), "-1": np.array(-1), "d+1": np.array(d + 1), "2.5": np.array(2.5),
            "True": np.array(True), "[1,1]": np.array([1, 1]), "nan": np.array(np.nan),
            "'2'": np.array("2"),
        }[choice]  # fmt: skip
        if (
            kind == "population"
            and value.ndim == 0
            and value.dtype.kind in "iu"
            and 1 <= value <= d
        ):
            value = np.array(k + 0.5)
        arrays["k"] = value
    elif fault == "extra_d":
        arrays["A_star"] = rng.standard_normal((d + 1, d + 1))
        if kind == "population":
            arrays["A_star"] = rng.standard_normal((d, d + 1))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = buf.getvalue()
    if fault == "bytes":
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            info = zf.getinfo(f"{key}.npy")
        name_len, extra_len = struct.unpack(
            "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
        )
        start = info.header_offset + 30 + name_len + extra_len
        pos = draw(st.integers(start, start + info.compress_size - 1))
        flipped = bytearray(raw)
        flipped[pos] ^= draw(st.integers(1, 255))
        return f"{kind}/{fault}@{pos}", bytes(flipped)
    if fault == "truncate":
        return f"{kind}/{fault}", raw[: draw(st.integers(0, len(raw) - 1))]
    if fault == "header":  # a header claiming far more than the member holds
        shape = draw(st.sampled_from([(10**6, 10**6), (2**40,), (3, 10**9, 2)]))
        hbuf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            hbuf, {"descr": "<f8", "fortran_order": False, "shape": shape}
        )
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for name, a in arrays.items():
                zf.writestr(f"{name}.npy", hbuf.getvalue() + bytes(8) if name == key else _npy(a))
        return f"{kind}/{fault}", out.getvalue()
    if fault == "single":  # one bare .npy array, not an archive
        return f"{kind}/{fault}", _npy(next(iter(arrays.values())))
    return f"{kind}/{fault}", arrays


def _write(path: Path, content: dict[str, np.ndarray] | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)


def _assert_contract(argv: list[str], folder: Path, what: str) -> None:
    before = _snapshot(folder)
    code, out, err = _call(argv)
    assert code == 2, (what, argv, code, out, err)
    assert "Traceback" not in err, (what, err)
    assert len(err.strip().splitlines()) == 1, (what, err)
    assert _snapshot(folder) == before, (what, "a file was written or changed")


@FUZZ
@given(case=malformed_instances(), command=st.sampled_from(["solve", "verify"]))
def test_fuzz_malformed_instances_are_refused(case, command):
    what, content = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "in.npz"
        _write(path, content)
        if command == "solve":
            argv = _solve(path, str(folder / "out.npz"))
        else:
            argv = ["verify", "--instance", str(path), "--quick", "--save-dir", str(folder)]
        _assert_contract(argv, folder, what)


@FUZZ
@given(
    rank=st.one_of(st.integers(-3, 0), st.integers(7, 10**30), st.sampled_from(["2.5", "x", ""])),
    seed=st.one_of(
        st.none(),
        st.integers(max_value=-1),
        st.integers(min_value=2**63),
        st.sampled_from(["1.5", "", "0x10", "nan"]),
    ),
    method=st.sampled_from(["lora-ml", "sr", "no-such-method", ""]),
)
def test_fuzz_bad_arguments_are_refused(rank, seed, method):
    """A valid instance (d = 6) with a rank outside 1..6, a bad seed or an unknown method."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_family(folder / "in.npz", th.draw_family(6, 3, 1, np.random.default_rng(0)))
        argv = ["solve", "--instance", str(folder / "in.npz"), "--method", method]
        argv += ["--out", str(folder / "out.npz"), "--rank", str(rank)]
        if seed is not None:
            argv += ["--seed", str(seed)]
        _assert_contract(argv, folder, f"rank={rank} seed={seed} method={method}")


@st.composite
def bad_outputs(draw) -> str:
    """An --out that must be refused, as a template over the folder ({d})."""
    return draw(
        st.sampled_from(
            ["{d}", "{d}/in.npz", "{d}/link.npz", "{d}/hard.npz", "", "{d}/afile/o.npz",
             "{d}/pipe", "{d}/sub", "{d}/no/such/o.npz", "{d}/" + "n" * 256,
             "{d}/afile/deeper/o.npz", "{d}/dangling.npz"]
        )
    )  # fmt: skip


@FUZZ
@given(out=bad_outputs(), command=st.sampled_from(["solve", "figures", "verify"]))
def test_fuzz_bad_outputs_are_refused_before_any_work(out, command):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_family(folder / "in.npz", th.draw_family(6, 3, 1, np.random.default_rng(0)))
        (folder / "afile").write_text("x")
        (folder / "sub").mkdir()
        os.mkfifo(folder / "pipe")
        os.symlink(folder / "in.npz", folder / "link.npz")
        os.link(folder / "in.npz", folder / "hard.npz")
        os.symlink(folder / "nowhere" / "x.npz", folder / "dangling.npz")
        target = out.replace("{d}", str(folder))
        if command == "solve":
            argv = _solve(folder / "in.npz", target)
        elif command == "figures":
            if out in ("{d}", "{d}/sub", "{d}/no/such/o.npz"):  # folders figures may use
                target = str(folder / "in.npz")
            argv = ["figures", "spectrum", "--quick", "--out", target]
        else:
            if target in (str(folder), str(folder / "sub")):
                target = str(folder / "afile")
            argv = ["verify", "--instance", str(folder / "in.npz"), "--save-dir", target]
        _assert_contract(argv, folder, f"{command} {out}")
