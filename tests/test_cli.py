"""CLI tests through typer's runner (in process) for speed."""

import json

import pytest
import torch
from typer.testing import CliRunner

import pfnkit
from pfnkit.cli import app as cli_app
from pfnkit.cli import common as cli_common

runner = CliRunner()
TINY = [
    "--d-model",
    "32",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--rows",
    "24",
    "--batch-size",
    "4",
    "--quiet",
]


def invoke(*args):
    return runner.invoke(cli_app.app, [str(a) for a in args])


def one_error_line(result):
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) >= 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    return " ".join(lines)


@pytest.fixture
def gp_run(tmp_path):
    out = tmp_path / "gp"
    r = invoke("train-prior", "--prior", "gp", "--steps", 3, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    return out


def test_train_by_name_then_info_and_load(gp_run):
    assert (gp_run / "checkpoint.pt").exists() and (gp_run / "metrics.jsonl").exists()
    r = invoke("info", gp_run)
    assert r.exit_code == 0, r.output
    assert "step 3/3" in r.output and '"name": "gp"' in r.output
    r = invoke("info", gp_run, "--json")
    assert json.loads(r.output)["model_config"]["d_model"] == 32
    assert pfnkit.load_checkpoint(gp_run).config.n_layers == 1


def test_resume_to_more_steps(gp_run):
    r = invoke("train-prior", "--resume", gp_run, "--steps", 5, "--quiet")
    assert r.exit_code == 0, r.output
    assert "Resuming" in r.output and "step 5/5" in r.output
    assert torch.load(gp_run / "checkpoint.pt", weights_only=True)["step"] == 5


def test_resume_with_changed_shape_is_refused(gp_run):
    msg = one_error_line(invoke("train-prior", "--resume", gp_run, "--d-model", 64))
    assert "Cannot change the model's d_model" in msg


def test_out_dir_holding_a_run_is_refused_and_kept(gp_run):
    before = (gp_run / "checkpoint.pt").read_bytes()
    msg = one_error_line(
        invoke("train-prior", "--prior", "gp", "--steps", 3, "--out", gp_run, *TINY)
    )
    assert "already holds a run" in msg and "--resume" in msg
    assert (gp_run / "checkpoint.pt").read_bytes() == before


def test_recipe_file(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[prior]\nname = "bnn"\ntask = "classification"\nmax_classes = 3\n'
        "[model]\nn_features = 2\nd_model = 32\nn_layers = 1\nn_heads = 2\n"
        "[train]\nsteps = 2\nrows = 24\nbatch_size = 4\n"
    )
    r = invoke("train-prior", recipe, "--out", tmp_path / "run", "--quiet")
    assert r.exit_code == 0, r.output
    card = pfnkit.load_checkpoint(tmp_path / "run").card
    assert card["prior"]["task"] == "classification" and card["model_config"]["n_classes"] == 3


def test_shipped_recipes_parse():
    from pathlib import Path

    from pfnkit.train.recipe import load_recipe, make_run

    recipes = sorted(Path(__file__).parents[1].joinpath("priors").glob("*.toml"))
    assert recipes
    for path in recipes:
        prior, model, train = make_run(load_recipe(path))
        assert model.task == prior.task and train.steps >= 1


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--prior", "gpp"], "Did you mean 'gp'"),
        (["--prior", "gp", "--ffn", "mpl"], "Unknown FFN block 'mpl'"),
        (
            ["--prior", "gp", "--steps", "-5"],
            "'steps' training parameter must be an int >= 1. Got -5",
        ),
        (
            ["--prior", "gp", "--rows", "8", "--max-context", "10"],
            "rows (8) must be larger than max_context (10)",
        ),
        (["no_such_recipe.toml"], "does not exist"),
        ([], "Give a prior name or recipe file"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path, args, expected):
    msg = one_error_line(invoke("train-prior", *args, "--out", tmp_path / "x", "--quiet"))
    assert expected in msg


def test_misspelled_recipe_field(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[prior]\nname = "gp"\nlenghtscale = 0.5\n')
    assert "Did you mean 'lengthscale'" in one_error_line(invoke("train-prior", recipe))
    recipe.write_text('[prior]\nname = "gp"\n[trian]\nsteps = 3\n')
    assert "Did you mean [train]" in one_error_line(invoke("train-prior", recipe))
    recipe.write_text('[prior]\nname = "gp"\n[train]\nstep = 3\n')
    assert "Did you mean 'steps'" in one_error_line(invoke("train-prior", recipe))
    recipe.write_text("[prior\nname=")
    assert "not valid TOML" in one_error_line(invoke("train-prior", recipe))


def test_info_on_corrupt_checkpoint(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00" * 100)
    assert "corrupt or truncated" in one_error_line(invoke("info", tmp_path))


def test_debug_shows_traceback(tmp_path, monkeypatch):
    from pfnkit.exceptions import UnknownNameError

    monkeypatch.setattr(cli_common, "DEBUG", True)
    r = invoke("train-prior", "--prior", "gpp", "--out", tmp_path / "x")
    assert r.exit_code != 0 and isinstance(r.exception, UnknownNameError)


def test_export_writes_safetensors_and_card(gp_run, tmp_path):
    out = tmp_path / "w.safetensors"
    r = invoke("export", gp_run, out)
    assert r.exit_code == 0, r.output
    card = out.with_suffix(".md").read_text()
    assert "steps: 3 of 3" in card and '"name": "gp"' in card
    x, y = torch.rand(1, 10, 1), torch.randn(1, 6)
    a, b = pfnkit.load_checkpoint(gp_run), pfnkit.load_checkpoint(out)
    assert torch.equal(a(x, y), b(x, y))
    assert "must end in .safetensors" in one_error_line(invoke("export", gp_run, tmp_path / "w.pt"))


def test_evaluate_on_bundled_sklearn_data(tiny_checkpoints):
    r = invoke(
        "evaluate",
        "--dataset",
        "iris",
        "--checkpoint",
        tiny_checkpoints["classification"],
        "--folds",
        2,
        "--n-estimators",
        1,
    )
    assert r.exit_code == 0, r.output
    assert "ROC AUC" in r.output and "2-fold CV" in r.output
    r = invoke(
        "evaluate",
        "--dataset",
        "diabetes",
        "--checkpoint",
        tiny_checkpoints["regression"],
        "--folds",
        2,
        "--n-estimators",
        1,
    )
    assert r.exit_code == 0 and "RMSE" in r.output, r.output
    assert "Known: breast_cancer" in one_error_line(invoke("evaluate", "--dataset", "mnist"))


@pytest.mark.parametrize(
    "ffn, options",
    [
        ("moe", ["n_experts=4", "top_k=2"]),
        ("fff", ["depth=2", "master_leaf=true"]),
        ("lowrank", ["rank=4"]),
        ("blockdiag", ["n_blocks=2"]),
        ("topk", ["k=8"]),
        ("glu", []),
    ],
)
def test_every_block_trains_through_the_cli(tmp_path, ffn, options):
    args = [a for o in options for a in ("--ffn-option", o)]
    r = invoke(
        "train-prior",
        "--prior",
        "gp",
        "--steps",
        2,
        "--out",
        tmp_path / ffn,
        "--ffn",
        ffn,
        *args,
        *TINY,
    )
    assert r.exit_code == 0, r.output
    model = pfnkit.load_checkpoint(tmp_path / ffn)
    assert model.config.ffn == ffn
    assert len(model.config.ffn_options) == len(options)


def test_bad_ffn_option_is_one_clear_line(tmp_path):
    msg = one_error_line(
        invoke(
            "train-prior",
            "--prior",
            "gp",
            "--ffn",
            "moe",
            "--ffn-option",
            "n_expert=4",
            "--out",
            tmp_path / "x",
            *TINY,
        )
    )
    assert "Unknown option 'n_expert'" in msg and "n_experts: int = 8" in msg
    msg = one_error_line(
        invoke(
            "train-prior", "--prior", "gp", "--ffn-option", "oops", "--out", tmp_path / "y", *TINY
        )
    )
    assert "key=value" in msg


# ------------------------------------------------------------------ evaluate on a CSV file

FAST = ["--folds", 2, "--n-estimators", 2]


def error_after_notes(result):
    """The one error line, after any 'Note:' / 'Task:' lines evaluate printed first."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("Error:"), result.output
    assert all(ln.startswith(("Note:", "Task:")) for ln in lines[:-1]), result.output
    return lines[-1]


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def clf_csv(tmp_path):
    """20 rows: a numeric column with a NaN, a string column with an empty cell, text target;
    rows 3 and 7 have no target."""
    lines = ["size,colour,label"]
    for i in range(20):
        size = "" if i == 5 else f"{(i % 10) / 3:.2f}"
        colour = "" if i == 2 else ("red" if i % 3 else "blue")
        label = "" if i in (3, 7) else ("big" if i % 10 >= 5 else "small")
        lines.append(f"{size},{colour},{label}")
    return write_csv(tmp_path / "clf.csv", "\n".join(lines) + "\n")


def test_evaluate_csv_classification_with_text_and_nan(clf_csv):
    r = invoke("evaluate", clf_csv, "--target", "label", *FAST)
    assert r.exit_code == 0, r.output
    assert "Task: classification (target 'label' holds text)" in r.output
    assert "clf.csv (target 'label', 18 rows, 2 features), 2-fold CV: ROC AUC" in r.output
    assert "accuracy" in r.output and "log loss" in r.output and "per fold" in r.output


def test_evaluate_csv_drops_rows_without_target_with_a_note(clf_csv):
    r = invoke("evaluate", clf_csv, "--target", "label", *FAST)
    assert r.exit_code == 0, r.output
    assert "Note: dropped 2 of 20 rows whose target 'label' is missing" in r.output
    r = invoke("evaluate", clf_csv, "--target", "size", "--task", "regression", *FAST)
    assert r.exit_code == 0, r.output
    assert "dropped 1 of 20 rows" in r.output and "19 rows, 2 features" in r.output


def test_evaluate_csv_regression_and_auto_task(tmp_path):
    rows = [f"{i / 7:.3f},{i % 4},{(i / 7) ** 2 + 0.1 * (i % 4):.4f},{i % 3}" for i in range(24)]
    csv = write_csv(tmp_path / "reg.csv", "x,k,price,grade\n" + "\n".join(rows) + "\n")
    r = invoke("evaluate", csv, "--target", "price", *FAST)
    assert r.exit_code == 0, r.output
    assert "Task: regression (target 'price' holds 24 distinct numbers" in r.output
    assert "2-fold CV: RMSE" in r.output and "NLL" in r.output
    # a numeric target with few distinct integers is a class label
    r = invoke("evaluate", csv, "--target", "grade", *FAST)
    assert r.exit_code == 0, r.output
    assert "Task: classification (target 'grade' holds 3 distinct integers" in r.output
    assert "ROC AUC" in r.output


def test_evaluate_csv_unknown_target_lists_columns(clf_csv):
    msg = one_error_line(invoke("evaluate", clf_csv, "--target", "lable"))
    assert "--target 'lable' is not a column of clf.csv" in msg
    assert "'size', 'colour', 'label'" in msg and "Did you mean 'label'?" in msg


def test_evaluate_csv_and_dataset_together_is_refused(clf_csv):
    msg = one_error_line(invoke("evaluate", clf_csv, "--target", "label", "--dataset", "iris"))
    assert "not both" in msg


def test_evaluate_non_utf8_csv(tmp_path):
    csv = tmp_path / "latin.csv"
    csv.write_bytes("name,value\ncaf\xe9,1\nbar,2\n".encode("latin-1"))
    msg = one_error_line(invoke("evaluate", csv, "--target", "value"))
    assert "is not UTF-8 text (byte 0xe9)" in msg and "Save it as UTF-8" in msg


@pytest.mark.parametrize(
    "text, args, expected",
    [
        ("", ["--target", "a"], "is empty"),
        ("a;b\n1;2\n3;4\n", ["--target", "a"], "has one column ('a;b')"),
        ("a,b\n1,x\n2,y\n3,x\n", ["--target", "b"], "--folds 5 needs at least 5 rows"),
        ("a,b\n1,x\n2,y\n", [], "--target is required with a CSV file"),
        ("a,b\n1,x\n2,y\n", ["--target", "b", "--task", "regression", "--folds", 2], "such as 'x'"),
        ("a,b\n1,x\n2,y\n", ["--target", "b", "--task", "clf"], "Unknown task 'clf'"),
        ("a,b\n1,x\n2,x\n", ["--target", "b", "--folds", 2], "at least 2 classes"),
    ],
)
def test_evaluate_csv_errors_are_one_line(tmp_path, text, args, expected):
    csv = write_csv(tmp_path / "data.csv", text)
    assert expected in error_after_notes(invoke("evaluate", csv, *args))


def test_evaluate_target_without_csv_is_refused():
    assert "names a column of a CSV file" in one_error_line(invoke("evaluate", "--target", "y"))


def test_evaluate_passes_context_only_when_given(clf_csv, monkeypatch):
    from sklearn.utils._param_validation import StrOptions

    seen = []

    class WithContext(pfnkit.PFNClassifier):
        _parameter_constraints = {
            **pfnkit.PFNClassifier._parameter_constraints,
            "context": [StrOptions({"auto", "knn"})],
        }

        def __init__(self, context="auto", **kwargs):
            super().__init__(**kwargs)
            self.context = context

        def fit(self, X, y):
            seen.append(self.context)
            return super().fit(X, y)

    monkeypatch.setattr(pfnkit, "PFNClassifier", WithContext)
    r = invoke("evaluate", clf_csv, "--target", "label", "--context", "knn", *FAST)
    assert r.exit_code == 0, r.output
    r = invoke("evaluate", clf_csv, "--target", "label", *FAST)
    assert r.exit_code == 0, r.output
    assert seen == ["knn", "knn", "auto", "auto"]
    # the estimator validates the value; the CLI shows its error as one line
    msg = error_after_notes(invoke("evaluate", clf_csv, "--target", "label", "--context", "nn"))
    assert "The 'context' parameter of WithContext must be a str among" in msg


def test_evaluate_estimator_value_error_is_one_line(tmp_path):
    # one fold's training rows hold a single class: the estimator refuses it with ValueError
    csv = write_csv(tmp_path / "d.csv", "a,b\n1,x\n2,x\n3,x\n4,y\n")
    msg = error_after_notes(invoke("evaluate", csv, "--target", "b", *FAST))
    assert "PFNClassifier failed on fold" in msg and "at least 2 classes" in msg


def test_evaluate_csv_without_pandas_says_how_to_install(clf_csv, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    assert "pip install pandas" in one_error_line(invoke("evaluate", clf_csv, "--target", "y"))


# ---------------------------------------------------------------- issue 12: training


@pytest.mark.parametrize("lr", ["inf", "1e30"])
def test_diverging_resume_exits_non_zero_and_keeps_checkpoint(gp_run, lr):
    before = torch.load(gp_run / "checkpoint.pt", weights_only=True)
    r = invoke("train-prior", "--resume", gp_run, "--steps", 6, "--lr", lr, "--quiet")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    # the "Resuming ..." banner comes first; then one error line
    msg = " ".join(r.output.split("Error:", 1)[1].split())
    if lr == "inf":
        assert "'lr' training parameter must be a finite number" in msg
    else:
        assert "diverged" in msg and "--lr" in msg and "--resume" in msg
    after = torch.load(gp_run / "checkpoint.pt", weights_only=True)
    assert after["step"] == before["step"] == 3
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("metrics", "fast", "'metrics'"),
        ("model_config", [1], "'model_config'"),
        ("format_version", "1", "malformed format_version"),
        ("model_config", {"d_model": -4}, "invalid model config"),
    ],
)
def test_info_agrees_with_the_loader(gp_run, tmp_path, key, value, expected):
    data = torch.load(gp_run / "checkpoint.pt", weights_only=True)
    data[key] = value
    torch.save(data, tmp_path / "odd.pt")
    with pytest.raises(pfnkit.exceptions.CheckpointError):
        pfnkit.load_checkpoint(tmp_path / "odd.pt")
    assert expected in one_error_line(invoke("info", tmp_path / "odd.pt"))


def test_threads_must_be_positive(tmp_path):
    msg = one_error_line(
        invoke("train-prior", "--prior", "gp", "--threads", 0, "--out", tmp_path / "x")
    )
    assert "--threads" in msg and ">= 1" in msg and "Got 0" in msg


def test_out_naming_a_file_is_refused(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    msg = one_error_line(invoke("train-prior", "--prior", "gp", "--steps", 1, "--out", f, *TINY))
    assert "is a file" in msg and "--out" in msg
    assert f.read_text() == "keep me"


def test_resume_accepts_the_checkpoint_file(gp_run):
    r = invoke("train-prior", "--resume", gp_run / "checkpoint.pt", "--steps", 4, "--quiet")
    assert r.exit_code == 0, r.output
    assert torch.load(gp_run / "checkpoint.pt", weights_only=True)["step"] == 4


def test_resume_from_another_pt_file_says_what_to_do(gp_run, tmp_path):
    other = tmp_path / "copy.pt"
    other.write_bytes((gp_run / "checkpoint.pt").read_bytes())
    msg = one_error_line(invoke("train-prior", "--resume", other, "--steps", 4, "--quiet"))
    assert "run directory" in msg and "checkpoint.pt" in msg


def test_recipe_and_prior_together_are_refused(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[prior]\nname = "gp"\n')
    msg = one_error_line(invoke("train-prior", recipe, "--prior", "bnn", "--out", tmp_path / "x"))
    assert "--prior" in msg and "not both" in msg
    msg = one_error_line(invoke("train-prior", "gp", "--prior", "bnn", "--out", tmp_path / "x"))
    assert "not both" in msg


def test_recipe_text_in_numeric_fields_is_parsed(tmp_path):
    from pfnkit.train.recipe import load_recipe, make_run

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[prior]\nname = "gp"\nlengthscale = "0.5"\nmin_features = "1"\n'
        '[model]\nd_model = "32"\ndropout = "0.1"\nnormalize_x = "true"\n'
        '[train]\nlr = "3e-4"\nsteps = "2e3"\nmax_context = "20"\n'
    )
    prior, model, train = make_run(load_recipe(recipe))
    assert train.lr == 3e-4 and train.steps == 2000 and train.max_context == 20
    assert model.d_model == 32 and model.dropout == 0.1 and model.normalize_x is True
    assert prior.lengthscale == 0.5 and prior.min_features == 1


@pytest.mark.parametrize(
    "table, line, expected",
    [
        ("train", 'lr = "fast"', "'lr' field in [train] must be a float. Got 'fast'"),
        ("train", "steps = 2.5", "'steps' field in [train] must be an int. Got 2.5"),
        ("train", "lr = [1, 2]", "'lr' field in [train] must be a float"),
        ("model", "ffn_options = 3", "'ffn_options' field in [model] must be a table"),
        ("model", 'ffn_options = "top_k=2"', "'ffn_options' field in [model] must be a table"),
        ("model", 'normalize_x = "maybe"', "'normalize_x' field in [model] must be a bool"),
        ("train", 'precision = "fp8"', "'precision' field in [train] must be one of"),
    ],
)
def test_recipe_field_of_the_wrong_type_is_one_line(tmp_path, table, line, expected):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[prior]\nname = "gp"\n[{table}]\n{line}\n')
    assert expected in one_error_line(invoke("train-prior", recipe, "--out", tmp_path / "x"))


def test_non_utf8_recipe_is_one_line(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_bytes('[prior]\nname = "gp" # caf\u00e9\n'.encode("latin-1"))
    msg = one_error_line(invoke("train-prior", recipe, "--out", tmp_path / "x"))
    assert "not UTF-8" in msg and str(recipe) in msg


def test_on_nonfinite_option(tmp_path):
    out = tmp_path / "skip"
    r = invoke(
        "train-prior", "--prior", "gp", "--steps", 2, "--out", out, "--on-nonfinite", "skip", *TINY
    )
    assert r.exit_code == 0, r.output
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (
        saved["train_config"]["on_nonfinite"] == "skip" and saved["metrics"]["skipped_steps"] == 0
    )
    msg = one_error_line(
        invoke("train-prior", "--prior", "gp", "--out", tmp_path / "y", "--on-nonfinite", "maybe")
    )
    assert "'on_nonfinite'" in msg and "'stop', 'skip'. Got 'maybe'" in msg


def test_init_from_starts_a_new_run_from_the_weights(gp_run, tmp_path):
    out = tmp_path / "warm"
    r = invoke(
        "train-prior", "--init-from", gp_run, "--out", out, "--steps", 2,
        "--batch-size", 6, "--rows", 24, "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    # the checkpoint's prior and network, the new batch size, a step count of its own
    assert state["prior"]["name"] == "gp" and state["model_config"]["d_model"] == 32
    assert state["train_config"]["batch_size"] == 6 and state["step"] == 2
    assert state["init_from"]["step"] == 3
    r = invoke("export", out, tmp_path / "warm.safetensors")
    assert r.exit_code == 0, r.output
    assert "initialised from: gp (3 steps" in (tmp_path / "warm.md").read_text()
    r = invoke("info", tmp_path / "warm.safetensors")
    assert r.exit_code == 0, r.output
    assert "initialised  from gp (3 steps, 12 datasets of prior 'gp')" in r.output


def test_init_from_refuses_a_new_shape_or_resume(gp_run, tmp_path):
    msg = one_error_line(
        invoke("train-prior", "--init-from", gp_run, "--out", tmp_path / "w", "--d-model", 64)
    )
    assert "holds a network with d_model=32" in msg
    assert "A warm start keeps the network's shape" in msg
    msg = one_error_line(invoke("train-prior", "--init-from", gp_run, "--resume", gp_run))
    assert "give one of them" in msg
    recipe = tmp_path / "clf.toml"
    recipe.write_text('[prior]\nname = "bnn"\ntask = "classification"\n')
    msg = one_error_line(
        invoke("train-prior", recipe, "--init-from", gp_run, "--out", tmp_path / "w2")
    )
    assert "holds a regression network" in msg and "classification prior" in msg


def test_init_from_on_another_prior_of_the_same_kind(gp_run, tmp_path):
    r = invoke(
        "train-prior", "bnn", "--init-from", gp_run, "--out", tmp_path / "w3", "--steps", 2,
        "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    state = torch.load(tmp_path / "w3" / "checkpoint.pt", weights_only=True)
    assert state["prior"]["name"] == "bnn" and state["init_from"]["prior"] == "gp"
