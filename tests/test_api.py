"""API conventions: seeds or Generators, compact result reprs, submodules as package attributes."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import loraml.theory as th
from loraml.theory.rng import RNGLike, as_generator

ALL_MODULES = ("adaptation", "checks", "convex", "family", "finetune", "io", "landscape")
ALL_MODULES += ("linalg", "metrics", "objectives", "retraining", "rng", "reprs")
ALL_MODULES += ("check_record", "checks_theorems", "checks_measurements")  # behind checks


# ---------------------------------------------------------------------------------------------
# rng: an int seed, a Generator or None, everywhere
# ---------------------------------------------------------------------------------------------
def test_as_generator_accepts_seed_generator_none_and_names_bad_input():
    g = np.random.default_rng(3)
    assert as_generator(g) is g  # the caller's stream, advanced by the callee
    assert as_generator(7).random() == np.random.default_rng(7).random()
    assert as_generator(np.int64(7)).random() == np.random.default_rng(7).random()
    assert isinstance(as_generator(None), np.random.Generator)
    for bad in (0.5, "0", np.random.RandomState(0), True):
        with pytest.raises(TypeError, match="rng must be an int seed"):
            as_generator(bad)
    with pytest.raises(ValueError, match="non-negative"):
        as_generator(-1)


def _public_functions_with_rng() -> list[tuple[str, Callable[..., Any]]]:
    out = []
    for mod_name in ALL_MODULES:
        mod = importlib.import_module(f"loraml.theory.{mod_name}")
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ == mod.__name__ and not name.startswith("_"):
                if "rng" in inspect.signature(fn).parameters:
                    out.append((f"{mod_name}.{name}", fn))
    return out


def test_every_public_rng_parameter_is_annotated_as_seed_or_generator():
    found = _public_functions_with_rng()
    assert len(found) >= 20  # family, finetune, retraining, landscape, adaptation, checks
    for name, fn in found:
        annotation = inspect.signature(fn).parameters["rng"].annotation
        assert annotation in ("RNGLike", RNGLike), (name, annotation)


TWO = np.stack([np.eye(3)] * 2)  # two 3 x 3 task targets


def _fam():
    return th.draw_family(6, 3, 1, np.random.default_rng(5))


# Each call takes the rng last; small sizes. The result is reduced to an array to compare.
CALLS: dict[str, Callable[[Any], Any]] = {
    "draw_family": lambda rng: th.draw_family(6, 3, 1, rng).A_star,
    "sample_task_data": lambda rng: th.sample_task_data(np.eye(4), 5, 0.1, rng)[1],
    "sample_family_data": lambda rng: th.sample_family_data(TWO, 4, 0.1, rng)[1],
    "finetune_gd": lambda rng: (
        th.finetune_gd(
            th.Quadratics.population(_fam().test_targets()), _fam().A_star, 1, rng, steps=3
        ).U
    ),
    "lora_ml_paper_gd": lambda rng: th.lora_ml_paper_gd(_fam().population(), 1, rng, rounds=2).A,
    "finetune_excess_risk": lambda rng: th.adaptation.finetune_excess_risk(
        _fam().A_star, _fam().test_targets()[0], 1, 20, 0.1, rng
    ),
    "random_start": lambda rng: th.landscape.random_start(_fam().population(), 1, rng)[1],
    "draw_generic_family": lambda rng: th.checks.draw_generic_family(rng, 6, 3, 1).U_star,
    "check_theorem1": lambda rng: th.checks.check_theorem1(rng, instances=1).worst_margin,
}


@pytest.mark.parametrize("name", list(CALLS))
def test_public_functions_take_an_int_seed_a_generator_or_none(name):
    call = CALLS[name]
    by_seed = np.asarray(call(0))
    np.testing.assert_array_equal(by_seed, np.asarray(call(np.random.default_rng(0))))
    np.testing.assert_array_equal(by_seed, np.asarray(call(0)))  # a seed is reproducible
    assert np.asarray(call(None)).shape == by_seed.shape
    g = np.random.default_rng(0)
    call(g)  # a Generator passed in is the stream used: it advances
    assert g.bit_generator.state != np.random.default_rng(0).bit_generator.state


def test_figure_runs_take_a_seed_too():
    from loraml.figures import linear, ours, shallow

    for mod in (linear, ours, shallow):
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if name.endswith("_run") and fn.__module__ == mod.__name__:
                annotation = inspect.signature(fn).parameters["rng"].annotation
                assert annotation in ("RNGLike", RNGLike), (name, annotation)
    by_seed = ours.spectrum_run(4, d=6, T=2, k=1, instances=1)["sv"]
    by_gen = ours.spectrum_run(np.random.default_rng(4), d=6, T=2, k=1, instances=1)["sv"]
    np.testing.assert_array_equal(by_seed, by_gen)


# ---------------------------------------------------------------------------------------------
# Result objects print as one short line of shapes and key numbers
# ---------------------------------------------------------------------------------------------
def test_lora_ml_result_repr_is_one_short_line_with_the_key_numbers():
    fam = th.draw_family(20, 3, 1, 0)
    res = th.solve_lora_ml(fam.population(), 1)
    text = repr(res)
    assert "\n" not in text and len(text) < 400, text  # the default repr ran to 153 lines
    assert text.startswith("LoraMLResult(A=<20x20 float64 array>, U=<3x20x1 float64 array>")
    assert f"objective={res.objective:.4g}" in text
    assert f"grad_norm={res.grad_norm:.4g}" in text
    assert f"iterations={res.iterations}" in text and f"converged={res.converged}" in text


def test_other_result_reprs_are_short_and_show_their_numbers():
    fam = th.draw_family(20, 3, 1, 1)
    q = fam.population()
    gd = th.lora_ml_paper_gd(q, 1, 0, rounds=2)
    ft = th.finetune_gd(th.Quadratics.population(fam.test_targets()), gd.A, 1, 0, steps=5)
    err = th.base_error(gd.A, fam.A_star)
    check = th.checks.check_theorem1(0, instances=1)
    for obj, numbers in (
        (gd, ["losses=<3 float64 array>", "A=<20x20 float64 array>"]),
        (ft, [f"loss={ft.loss:.4g}", "U=<20x1 float64 array>"]),
        (err, [f"fro={err.fro:.4g}", f"relative={err.relative:.4g}"]),
        (check, ["held=True", f"worst_margin={check.worst_margin:.4g}", "instances=1"]),
        (fam, ["A_star=<20x20 float64 array>"]),
        (q, ["C=<3x20x20 float64 array>"]),
    ):
        text = repr(obj)
        assert "\n" not in text and len(text) < 400, text
        assert text.startswith(type(obj).__name__ + "(")
        for piece in numbers:
            assert piece in text, (piece, text)


# ---------------------------------------------------------------------------------------------
# Submodules are attributes of loraml.theory, imported on first use
# ---------------------------------------------------------------------------------------------
def test_submodules_are_attributes_imported_lazily():
    code = (
        "import sys, loraml.theory as th\n"
        "lazy = ('convex', 'landscape', 'checks', 'adaptation')\n"
        "before = [f'loraml.theory.{m}' in sys.modules for m in lazy] + ['cvxpy' in sys.modules]\n"
        "ok = [callable(th.convex.nuclear_relaxation), callable(th.landscape.perturbed_gd),\n"
        "      callable(th.checks.check_theorem1), callable(th.adaptation.sr_floor)]\n"
        "print(any(before), all(ok), all(m in dir(th) for m in lazy), 'cvxpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Nothing heavy on import; every submodule reachable as an attribute; cvxpy still not
    # imported (only the convex solvers import it, when they run).
    assert out.stdout.split() == ["False", "True", "True", "False"], out.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        th.nope  # noqa: B018
