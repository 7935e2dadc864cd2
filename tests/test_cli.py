import subprocess
import sys


def eltmake(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "eltmake", *args], capture_output=True, text=True, cwd=cwd
    )


def test_version():
    proc = eltmake("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("eltmake ")


def test_help_lists_the_commands():
    proc = eltmake("--help")
    assert proc.returncode == 0
    for cmd in ("build", "status", "graph", "watch", "install", "state", "runs", "touch", "forget"):
        assert cmd in proc.stdout


def test_console_script_is_installed():
    from pathlib import Path

    exe = Path(sys.executable).parent / "eltmake"
    assert exe.exists(), "pip install . must put an `eltmake` command beside python"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "eltmake" in proc.stdout


def test_bad_jobs_is_a_usage_error(tmp_path):
    (tmp_path / "eltmake.toml").write_text("[targets.a]\nrun = 'true'\n")
    for bad in ("zero", "0", "-3"):
        proc = eltmake("build", "-j", bad, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "-j" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_command_is_a_usage_error(tmp_path):
    proc = eltmake("biuld", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_plugin_commands_after_dash_c(tmp_path):
    (tmp_path / "eltmake.toml").write_text(
        '[extractors.tap-x]\nexecutable = "tap-x"\nconfig = { token = "s3cret", n = 1 }\n'
    )
    proc = eltmake("-C", str(tmp_path), "config", "tap-x", "--debug")
    assert proc.returncode == 0, proc.stderr
    assert '"n": 1' in proc.stdout and "s3cret" not in proc.stdout
