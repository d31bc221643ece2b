"""``loraml solve``: results on population and data instances; bad input gets exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

import loraml.theory as th
from loraml.cli import main
from loraml.theory.io import save_family


@pytest.fixture
def population_file(tmp_path, rng):
    fam = th.draw_family(10, 3, 1, rng)
    path = tmp_path / "pop.npz"
    save_family(path, fam)
    return path, fam


def _run_json(capsys, *argv):
    code = main(list(argv) + ["--json"])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


def test_lora_ml_on_a_population_instance_recovers_a_star(capsys, tmp_path, population_file):
    path, fam = population_file
    out = tmp_path / "out.npz"
    report = _run_json(
        capsys, "solve", "--instance", str(path), "--method", "lora-ml", "--out", str(out)
    )
    for key in ("method", "iterations", "seconds", "objective", "a_error_fro"):
        assert key in report
    assert report["a_error_fro"] <= 1e-8 * np.linalg.norm(fam.A_star)
    with np.load(out) as z:
        assert z["A_hat"].shape == (10, 10) and z["U_hat"].shape == (3, 10, 1)
        np.testing.assert_allclose(z["A_hat"], fam.A_star, atol=1e-7)


def test_sr_error_has_kt_singular_values(capsys, tmp_path, population_file):
    path, _ = population_file
    report = _run_json(
        capsys, "solve", "--instance", str(path), "--method", "sr", "--out", str(tmp_path / "o.npz")
    )
    sv = np.array(report["a_error_singular_values"])
    assert np.sum(sv > 1e-8 * sv[0]) == 3  # k T = 3


def test_data_instance_with_rank_flag(capsys, tmp_path, rng):
    fam = th.draw_family(8, 3, 1, rng)
    X, Y = th.sample_family_data(fam.targets(), 2000, 0.01, rng)
    path = tmp_path / "data.npz"
    np.savez(path, X=X, Y=Y, A_star=fam.A_star)
    out = tmp_path / "o.npz"
    report = _run_json(
        capsys,
        "solve",
        "--instance",
        str(path),
        "--method",
        "lora-ml",
        "--rank",
        "1",
        "--out",
        str(out),
    )
    assert report["kind"] == "data" and report["k"] == 1
    assert report["a_error_fro"] < 0.01


def test_paper_schedule_method_is_seeded(capsys, tmp_path, population_file):
    path, _ = population_file
    runs = []
    for seed in ("1", "1", "2"):
        out = tmp_path / f"o{len(runs)}.npz"
        main(
            [
                "solve",
                "--instance",
                str(path),
                "--method",
                "lora-ml-gd",
                "--seed",
                seed,
                "--out",
                str(out),
            ]
        )
        capsys.readouterr()
        with np.load(out) as z:
            runs.append(z["U_hat"])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_sr_released_reproduces_the_released_scripts_biased_sr(capsys, tmp_path, rng):
    # Population T = 2: SR by the released script ends at A_SR - mean_t U_t0 U_t0^T, where U_t0
    # are lora-ml-gd's initial adapters for the same seed (never updated); the correct SR does not.
    fam = th.draw_family(8, 2, 1, rng)
    path = tmp_path / "pop.npz"
    save_family(path, fam)
    out = {}
    for method in ("sr-released", "sr", "lora-ml-gd"):
        argv = ["solve", "--instance", str(path), "--method", method, "--seed", "3"]
        report = _run_json(capsys, *argv, "--out", str(tmp_path / f"{method}.npz"))
        with np.load(tmp_path / f"{method}.npz") as z:
            out[method] = (report, dict(z))
    U0 = 0.1 * np.random.default_rng(3).standard_normal((2, 8, 1))  # lora-ml-gd's first draw
    bias = (U0 @ U0.transpose(0, 2, 1)).mean(0)
    A_sr = out["sr"][1]["A_hat"]
    np.testing.assert_allclose(out["sr-released"][1]["A_hat"], A_sr - bias, atol=1e-9)
    assert np.linalg.norm(out["sr-released"][1]["A_hat"] - A_sr) > 0.1 * np.linalg.norm(bias)
    report = out["sr-released"][0]
    B = fam.targets() - U0 @ U0.transpose(0, 2, 1)  # its own objective: 1/2 sum ||B_t - mean B||^2
    assert report["objective"] == pytest.approx(0.5 * np.sum((B - B.mean(0)) ** 2), rel=1e-9)
    assert report["sr_objective"] > out["sr"][0]["objective"]  # SR's loss: worse than SR


def _bad_files(tmp_path):
    d = tmp_path
    np.savez(d / "missing.npz", A_star=np.eye(3))
    np.savez(d / "shape.npz", A_star=np.eye(3), U_star=np.ones((2, 4, 1)))
    np.savez(d / "nan.npz", A_star=np.full((3, 3), np.nan), U_star=np.ones((2, 3, 1)))
    np.savez(d / "inf.npz", X=np.full((2, 3, 5), np.inf), Y=np.ones((2, 3, 5)), k=1)
    np.savez(d / "rank.npz", A_star=np.eye(3), U_star=np.ones((2, 3, 4)))
    np.savez(d / "notasks.npz", A_star=np.eye(3), U_star=np.ones((0, 3, 1)))
    np.savez(d / "onlyx.npz", X=np.ones((2, 3, 5)))
    np.savez(d / "xy.npz", X=np.ones((2, 3, 5)), Y=np.ones((2, 3, 6)), k=1)
    np.savez(d / "nok.npz", X=np.ones((2, 3, 5)), Y=np.ones((2, 3, 5)))
    (d / "garbage.npz").write_bytes(b"this is not a zip file")
    return {
        "missing.npz": "A_star",
        "shape.npz": "U_star",
        "nan.npz": "NaN",
        "inf.npz": "NaN or inf",
        "rank.npz": "rank",
        "notasks.npz": "empty",
        "onlyx.npz": "'Y'",
        "xy.npz": "T x d x N",
        "nok.npz": "--rank",
        "garbage.npz": "cannot read",
        "absent.npz": "does not exist",
    }


def test_bad_instances_exit_2_with_one_line_and_write_nothing(capsys, tmp_path):
    for name, fragment in _bad_files(tmp_path).items():
        out = tmp_path / f"out-{name}"
        code = main(
            ["solve", "--instance", str(tmp_path / name), "--method", "lora-ml", "--out", str(out)]
        )
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert fragment in err, (name, err)
        assert not out.exists()


def test_unknown_method_and_missing_arguments(capsys, tmp_path, population_file):
    path, _ = population_file
    code = main(
        ["solve", "--instance", str(path), "--method", "magic", "--out", str(tmp_path / "o.npz")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "sr, lora-ml, lora-ml-gd" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["solve", "--instance", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--method" in err and err.count("\n") == 1


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "solve" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# What the solver found: identifiability, divergence (issues 10 and 11)
# ---------------------------------------------------------------------------------------------
def test_solve_says_when_a_star_is_not_identifiable(capsys, tmp_path):
    fam = th.draw_family(8, 2, 1, np.random.default_rng(4))  # T = 2: a family of zero-loss bases
    path = tmp_path / "t2.npz"
    save_family(path, fam)
    report = _run_json(
        capsys,
        "solve",
        "--instance",
        str(path),
        "--method",
        "lora-ml",
        "--out",
        str(tmp_path / "o.npz"),
    )
    assert report["status"] == "global minimum"
    assert report["identifiable"] is False and "not identifiable" in report["identifiability"]
    code = main(
        ["solve", "--instance", str(path), "--method", "lora-ml", "--out", str(tmp_path / "p.npz")]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "identifiable: no" in out and "not identifiable" in out


def test_a_diverging_paper_schedule_writes_nothing_and_says_which_step(capsys, tmp_path):
    fam = th.draw_family(6, 3, 1, np.random.default_rng(5))
    big = th.TaskFamily(1e6 * fam.A_star, 1e3 * fam.U_star, fam.U_test)  # ||A*|| ~ 1e6
    path, out = tmp_path / "big.npz", tmp_path / "o.npz"
    save_family(path, big)
    code = main(["solve", "--instance", str(path), "--method", "lora-ml-gd", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert not out.exists()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "diverged at round" in captured.err and "lr_u=0.003" in captured.err
    json_out = tmp_path / "j.npz"
    assert (
        main(
            [
                "solve",
                "--instance",
                str(path),
                "--method",
                "lora-ml-gd",
                "--out",
                str(json_out),
                "--json",
            ]
        )
        == 2
    )
    assert capsys.readouterr().out == "" and not json_out.exists()
