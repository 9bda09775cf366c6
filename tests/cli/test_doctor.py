"""recon doctor: the report (JSON) and the table."""

import json

from recon.cli import doctor


def test_doctor_json_reports_warp_cpu_kernel(recon_cli):
    result = recon_cli("doctor", "--json", "--fast")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # nothing but JSON on stdout (no Warp banner)
    assert report["torch"]["ok"] is True
    assert isinstance(report["torch"]["cuda_available"], bool)
    assert report["warp"]["ok"] is True, report["warp"]
    assert report["warp"]["cpu_kernel"]["ok"] is True, report["warp"]["cpu_kernel"]
    assert report["warp"]["cpu_kernel"]["device"] == "cpu"
    if report["torch"]["cuda_available"]:
        assert report["warp"]["cuda_kernel"]["ok"] is True, report["warp"]["cuda_kernel"]
    assert set(report["optional"]) == set(doctor.OPTIONAL_COMPONENTS)
    assert report["optional"]["trimesh"]["present"] is True  # a required dependency of recon
    assert report["cpu"]["count"] >= 1
    assert set(report["lpips_weights"]) == {"available", "reason"}


def test_component_check_reports_missing_and_broken(tmp_path, monkeypatch):
    (tmp_path / "recon_doctor_broken_mod.py").write_text(
        "raise OSError('libGL.so.1: cannot open shared object')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    missing = doctor._check_component("recon_doctor_absent_mod", "recon-doctor-absent-dist", fast=False)
    assert missing == {"present": False, "version": None, "imported": False}
    broken = doctor._check_component("recon_doctor_broken_mod", "recon-doctor-broken-dist", fast=False)
    assert broken["present"] is False and "libGL.so.1" in broken["error"]
    fast = doctor._check_component("recon_doctor_broken_mod", "recon-doctor-broken-dist", fast=True)
    assert fast["present"] is True and fast["imported"] is False


def test_table_rows_cover_every_component():
    report = {
        "recon": {"version": "0", "path": "/r"},
        "python": {"version": "3", "executable": "/py"},
        "platform": {"system": "Linux", "release": "6", "machine": "x86_64"},
        "cpu": {"count": 2, "available": 2},
        "torch": {"ok": True, "version": "2", "cuda_available": False, "cuda_version": None, "devices": []},
        "warp": {
            "ok": True,
            "version": "1",
            "kernel_cache_dir": "/c",
            "cpu_kernel": {"ok": False, "device": "cpu", "error": "LLVM failed"},
            "cuda_kernel": None,
        },
        "optional": {
            "open3d": {"present": False, "version": "0.20", "imported": False, "error": "OSError: libGL"}
        },
        "lpips_weights": {"available": False, "reason": "no weights"},
        "chromium": None,
    }
    rows = {name: (status, detail) for name, status, detail in doctor._rows(report)}
    assert rows["warp cpu kernel"] == ("FAILED", "LLVM failed")
    assert rows["warp cuda kernel"][0] == "-"
    assert rows["open3d"] == ("FAILED", "OSError: libGL")
    assert rows["chromium"] == ("missing", "not found")
    assert rows["torch"][0] == "ok"


def test_table_prints_brackets_literally(monkeypatch, capsys):
    # Details such as "pip install 'recon[lpips]'" must not be eaten as rich markup.
    monkeypatch.setattr(
        doctor, "_rows", lambda report: [("lpips weights", "missing", "pip install 'recon[lpips]'")]
    )
    doctor._print_table({})
    assert "recon[lpips]" in capsys.readouterr().out
