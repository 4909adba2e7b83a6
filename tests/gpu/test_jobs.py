"""kdsrc.jobs.job: the context every workflow script runs in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdsrc.jobs import job


def test_report_jobs_do_not_import_torch(tmp_path, child_env):
    """collect/render_table/plot/summary run under job(gpu=False): importing torch there would
    cost each of them ~1.5 s of a ~2 s job."""
    log = tmp_path / "logs" / "collect.log"
    code = ("import sys; from kdsrc.jobs import job\n"
            f"with job({str(log)!r}, gpu=False) as device:\n"
            "    print('device', device)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=child_env)
    assert out.stdout.strip() == "False"
    assert log.read_text() == "device cpu\n"


def test_the_traceback_of_a_failing_job_lands_in_its_log(tmp_path):
    log = tmp_path / "job.log"
    before = sys.stdout, sys.stderr
    with pytest.raises(ZeroDivisionError):
        with job(str(log), gpu=False):
            print("working")
            1 / 0
    text = log.read_text()
    assert text.startswith("working\n") and "ZeroDivisionError" in text
    assert (sys.stdout, sys.stderr) == before  # restored, whatever they were
