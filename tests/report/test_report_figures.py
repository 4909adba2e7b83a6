"""Figures: training curves (mean ± std band over seeds) and one bar chart per table."""

from __future__ import annotations

import struct

import pytest
from report_testutil import EVAL, PUBLISHED, SPECS

from kdsrc import report
from kdsrc.errors import KdsrcError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"
    return width, height


def _log(path, seed: int, epochs: int = 6) -> None:
    lines = ["epoch,lr,train_loss,train_top1,test_top1,test_top5,test_loss,epoch_s"]
    for e in range(1, epochs + 1):
        lines.append(f"{e},0.05,{3.0 / e + 0.1 * seed:.4f},{10 * e:.2f},{8 * e + seed:.2f},"
                     f"{20 + 10 * e:.2f},{2.5 / e:.4f},1.5")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_training_curves_two_seeds(tmp_path):
    kd = [tmp_path / "kd" / f"seed{s}.csv" for s in (0, 1)]
    for s, p in enumerate(kd):
        _log(p, s)
    crd = tmp_path / "crd" / "seed0.csv"
    _log(crd, 3, epochs=4)
    out = report.plot_training_curves({"kd": kd, "crd": crd}, tmp_path / "fig" / "curves.png",
                                      title="resnet32x4 -> resnet8x4")
    assert out == tmp_path / "fig" / "curves.png"
    _assert_png(out)
    # (csv path, label) pairs, as the plot rule passes them: a repeated label is one method
    # over several seeds
    pairs = [(kd[0], "kd"), (str(kd[1]), "kd"), (crd, "crd")]
    out2 = report.plot_training_curves(pairs, tmp_path / "c2.png", title="resnet32x4 -> resnet8x4")
    assert out2.read_bytes() == out.read_bytes()
    _assert_png(report.plot_training_curves(pairs, tmp_path / "c3.png", metrics=["test_top1"]))
    # same inputs, same bytes
    again = report.plot_training_curves({"kd": kd, "crd": crd}, tmp_path / "again.png",
                                        title="resnet32x4 -> resnet8x4")
    assert again.read_bytes() == out.read_bytes()


def test_training_curves_without_logs(tmp_path):
    _assert_png(report.plot_training_curves([], tmp_path / "none.png"))


def test_training_curves_bad_log(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,train_loss\n1,2.0\n")
    with pytest.raises(KdsrcError, match=r"bad\.csv.*'test_top1'"):
        report.plot_training_curves({"x": bad}, tmp_path / "o.png")
    with pytest.raises(KdsrcError, match=r"nope\.csv.*not found"):
        report.plot_training_curves([(tmp_path / "nope.csv", "x")], tmp_path / "o.png")
    with pytest.raises(KdsrcError, match="expected .csv path, label. pairs"):
        report.plot_training_curves([str(bad)], tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_table_bars(tmp_path, name):
    df = report.collect([EVAL], SPECS[name], name, published=PUBLISHED)
    _assert_png(report.plot_table_bars(df, SPECS[name], tmp_path / f"{name}.png"))


def test_table_bars_without_any_record(tmp_path):
    spec = {"kind": "grid", "pairs": [["a", "b"]], "methods": ["kd"]}
    df = report.collect([], spec, "E")
    assert df["n_seeds"].tolist() == [0]
    _assert_png(report.plot_table_bars(df, spec, tmp_path / "e.png"))


def test_training_curves_with_many_runs_keep_their_axes(tmp_path):
    """A paper table has ~60 curves: the legend goes below in columns and the axes keep a
    usable size (matplotlib warns when constrained layout collapses them)."""
    import warnings

    logs = []
    for i in range(60):
        p = tmp_path / f"m{i}" / "seed0.csv"
        _log(p, i % 3)
        logs.append((p, f"resnet32x4->resnet8x4 method_{i}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = report.plot_training_curves(logs, tmp_path / "many.png", title="T1")
    w, h = _assert_png(out)
    assert h > 3.6 * 120 * 1.5  # taller than the default figure: room for the legend rows


def test_curve_mean_and_std_over_seeds(tmp_path):
    """Per epoch: mean and sample std over the seeds that logged it; a seed that stopped early
    or left a cell empty only drops out of those epochs."""
    from kdsrc.report.figures import _curve_stats, _read_log

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("epoch,test_top1\n1,10\n2,20\n3,30\n")
    b.write_text("epoch,test_top1\n1,14\n2,\n")
    xs, mean, std = _curve_stats([_read_log(a, ["test_top1"]), _read_log(b, ["test_top1"])],
                                 "test_top1")
    assert xs.tolist() == [1, 2, 3]
    assert mean.tolist() == [12.0, 20.0, 30.0]
    assert std[0] == pytest.approx(2 ** 0.5 * 2) and std[1] == 0.0 and std[2] == 0.0
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,test_top1\n1,ten\n")
    with pytest.raises(KdsrcError, match=r"bad\.csv.*'test_top1'"):
        _read_log(bad, ["test_top1"])


def test_figures_drawn_from_threads_match_sequential(tmp_path):
    """The plot bodies may run in Snakemake's threads: figures drawn concurrently are the same
    bytes as figures drawn one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    logs = []
    for i in range(6):
        p = tmp_path / f"m{i}" / "seed0.csv"
        _log(p, i % 3)
        logs.append((p, f"method_{i}"))
    jobs = [(logs[: k + 1], tmp_path / f"seq{k}.png") for k in range(6)]
    for curves, out in jobs:
        report.plot_training_curves(curves, out)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda j: report.plot_training_curves(
            j[0], j[1].with_name(j[1].name.replace("seq", "thr"))), jobs))
    for (_, seq), thr in zip(jobs, outs):
        assert thr.read_bytes() == seq.read_bytes()
