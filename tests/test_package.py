import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, pfnkit; "
        "heavy = [m for m in ('optuna', 'typer', 'rich', 'sklearn') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_console_script_runs_and_reports_errors():
    r = subprocess.run(
        [sys.executable, "-m", "pfnkit.cli", "train-prior", "--prior", "nope"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "Unknown prior 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "pfnkit.cli", "--debug", "train-prior", "--prior", "nope"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_wheel_ships_every_bundled_checkpoint_and_card(tmp_path):
    import zipfile
    from pathlib import Path

    import pytest

    pytest.importorskip("setuptools")  # the build backend (pyproject.toml)
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("pfnkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = sorted((root / "pfnkit" / "checkpoints").glob("*.safetensors"))
    assert bundled, "no bundled checkpoints"
    for weights in bundled:
        for path in (weights, weights.with_suffix(".md")):
            assert f"pfnkit/checkpoints/{path.name}" in names
