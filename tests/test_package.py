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
