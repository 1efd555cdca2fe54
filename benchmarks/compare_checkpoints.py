"""Two (or more) classification checkpoints at their defaults on real tables of a given size.

Data: the classification tables of ``<repo>/../shared/data/tabular_more/`` and the KEEL dev
tables with at least 1,000 rows (``benchmarks/_large_data_sets.py``; absent folders are
skipped with a note). Per table: a stratified test set of ``--test-rows`` (at most half the
table), then training sets of ``--train-rows`` rows, prefixes of one shuffled order (so
nested; sizes larger than what is left are skipped). Every checkpoint gets
``PFNClassifier(checkpoint=..., random_state=0)`` with every other parameter at its
default (so ``context="auto"`` follows each checkpoint's own context limit), on the same
split in the same run.

Prints ROC AUC / log loss / fit + predict seconds per table and size, then per checkpoint
and size the mean ROC AUC, mean log loss and median seconds. ``--categorical-encoding``
with several values (``ordinal,cv``) runs each checkpoint under each, as its own column;
so do ``--append-original false,true`` and ``--average-before-softmax true,false``.

    python benchmarks/compare_checkpoints.py OLD.safetensors NEW.safetensors
    python benchmarks/compare_checkpoints.py default runs/x.safetensors --train-rows 1000
    python benchmarks/compare_checkpoints.py default --categorical-encoding ordinal,cv
    python benchmarks/compare_checkpoints.py default --append-original false,true
    python benchmarks/compare_checkpoints.py default --average-before-softmax true,false
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from context_length import (  # noqa: E402
    add_table_options,
    fit_and_score,
    held_out_splits,
    real_classification_tables,
)


def bool_list(p: argparse.ArgumentParser, flag: str, value: str) -> list[bool]:
    """A comma list of true/false for a boolean PFNClassifier parameter."""
    words = [v.strip().lower() for v in value.split(",")]
    if any(v not in ("true", "false") for v in words):
        p.error(f"{flag} takes true and/or false (comma-separated); got {value!r}")
    return [v == "true" for v in words]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="classification checkpoints ('default' too)")
    p.add_argument("--train-rows", default="1000,3000", help="training set sizes")
    p.add_argument(
        "--categorical-encoding",
        default="cv",
        help="comma list of PFNClassifier categorical_encoding values (default: the default)",
    )
    p.add_argument(
        "--append-original",
        default="false",
        help="comma list of PFNClassifier append_original values, true/false (default: false)",
    )
    p.add_argument(
        "--average-before-softmax",
        default="true",
        help="comma list of PFNClassifier average_before_softmax values (default: true)",
    )
    add_table_options(p)
    args = p.parse_args(argv)
    appends = bool_list(p, "--append-original", args.append_original)
    averages = bool_list(p, "--average-before-softmax", args.average_before_softmax)

    import torch

    from pfnkit import PFNClassifier

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    sizes = [int(s) for s in args.train_rows.split(",")]
    stems = [Path(c).stem if c != "default" else c for c in args.checkpoints]
    if len(set(stems)) < len(stems):
        stems = list(args.checkpoints)
    encodings = args.categorical_encoding.split(",")
    columns = [
        (s, c, e, a, g)
        for s, c in zip(stems, args.checkpoints, strict=True)
        for e in encodings
        for a in appends
        for g in averages
    ]
    names = [
        " ".join(
            [s]
            + ([e] if len(encodings) > 1 else [])
            + ([f"append_original={a}"] if len(appends) > 1 else [])
            + ([f"average_before_softmax={g}"] if len(averages) > 1 else [])
        )
        for s, _, e, a, g in columns
    ]
    tables = real_classification_tables(args.data_root, args.datasets)
    print("| table | rows | " + " | ".join(f"{n} AUC / log loss / s" for n in names) + " |")
    print("|:---|---:|" + "---:|" * len(names))
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for table, X_rest, X_test, y_rest, y_test in held_out_splits(tables, args.test_rows):
        for n in sizes:
            if n > len(y_rest):
                continue
            cells = []
            for name, (_, checkpoint, encoding, append, average) in zip(
                names, columns, strict=True
            ):
                est = PFNClassifier(
                    checkpoint=checkpoint,
                    random_state=0,
                    categorical_encoding=encoding,
                    append_original=append,
                    average_before_softmax=average,
                )
                auc, ll, seconds = fit_and_score(est, X_rest.iloc[:n], y_rest[:n], X_test, y_test)
                results.setdefault((name, n), []).append((auc, ll, seconds))
                cells.append(f"{auc:.4f} / {ll:.3f} / {seconds:.1f}")
            print(f"| {table} | {n} | " + " | ".join(cells) + " |", flush=True)
    print("\n| checkpoint | training rows | tables | mean ROC AUC | mean log loss | median s |")
    print("|:---|---:|---:|---:|---:|---:|")
    for n in sizes:
        for name in names:
            runs = np.array(results.get((name, n), []))
            if len(runs):
                print(
                    f"| {name} | {n} | {len(runs)} | {runs[:, 0].mean():.4f} | "
                    f"{runs[:, 1].mean():.4f} | {np.median(runs[:, 2]):.1f} |"
                )


if __name__ == "__main__":
    main()
