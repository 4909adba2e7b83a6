"""Bad inputs end in a KdsrcError/ConfigError that names the file or the key."""

from __future__ import annotations

import json

import pytest
from report_testutil import EVAL, PUBLISHED, SPECS

from kdsrc import report
from kdsrc.errors import ConfigError, KdsrcError


def _write(path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def _record(**over):
    rec = {"dataset": "cifar100", "teacher": "resnet56", "student": "resnet20", "method": "kd",
           "seed": 0, "top1_best": 70.0, "top1_last": 69.5, "top5_best": 91.0, "top5_last": 90.8,
           "epochs": 240}
    rec.update(over)
    return rec


def test_record_missing_top1_best(tmp_path):
    rec = _record()
    del rec["top1_best"]
    path = _write(tmp_path / "runs" / "seed0.json", rec)
    with pytest.raises(KdsrcError, match=r"seed0\.json: run eval record misses field 'top1_best'"):
        report.load_records([path])
    with pytest.raises(KdsrcError, match=r"seed0\.json.*'top1_best'"):
        report.collect([EVAL, tmp_path], SPECS["T1"], "T1")  # found inside a folder too
    with pytest.raises(KdsrcError, match=r"record #0: .*'top1_best'"):
        report.load_records([rec])


def test_record_not_json(tmp_path):
    path = _write(tmp_path / "broken.json", '{"dataset": "cifar100", ')
    with pytest.raises(KdsrcError, match=r"broken\.json: not valid JSON \(.*line 1"):
        report.load_records([path])
    with pytest.raises(KdsrcError, match=r"missing\.json: cannot read"):
        report.load_records([tmp_path / "missing.json"])
    with pytest.raises(KdsrcError, match=r"list\.json: an eval record must be a JSON object"):
        report.load_records([_write(tmp_path / "list.json", [1, 2])])


@pytest.mark.parametrize("field, value, needle", [
    ("top1_best", "70.0", "'top1_best' must be a finite number"),
    ("top1_last", None, "'top1_last' must be a finite number"),
    ("seed", 0.5, "'seed' must be an integer"),
    ("method", "", "'method' must be a non-empty string"),
])
def test_record_bad_types(tmp_path, field, value, needle):
    path = _write(tmp_path / "r.json", _record(**{field: value}))
    with pytest.raises(KdsrcError, match=needle):
        report.load_records(path)


def test_teacher_record_fields(tmp_path):
    path = _write(tmp_path / "teachers" / "resnet56.json", {"dataset": "cifar100", "teacher": "resnet56", "top1": 72.0})
    with pytest.raises(KdsrcError, match=r"resnet56\.json: teacher eval record misses field 'top5'"):
        report.load_records(path)


def test_duplicate_records(tmp_path):
    a = _write(tmp_path / "a.json", _record())
    b = _write(tmp_path / "b.json", _record(top1_best=71.0))
    spec = {"kind": "grid", "pairs": [["resnet56", "resnet20"]], "methods": ["kd"]}
    with pytest.raises(KdsrcError, match=r"two eval records .* seed 0: .*a\.json and .*b\.json"):
        report.collect([a, b], spec, "T")


def test_mixed_epochs_in_one_cell(tmp_path):
    a = _write(tmp_path / "a.json", _record())
    b = _write(tmp_path / "b.json", _record(seed=1, epochs=2))
    spec = {"kind": "grid", "pairs": [["resnet56", "resnet20"]], "methods": ["kd"]}
    with pytest.raises(KdsrcError, match=r"different numbers of epochs: .*a\.json \(240\), .*b\.json \(2\)"):
        report.collect([a, b], spec, "T")


@pytest.mark.parametrize("spec, needle", [
    ({"kind": "heatmap", "pairs": []}, "table T9: kind: unknown kind 'heatmap'; valid kinds: ablation, grid, plugin, teachers"),
    ({"methods": ["kd"]}, "table T9: kind: missing required key"),
    ({"kind": "grid", "methods": ["kd"]}, "table T9: pairs: missing required key for a grid table"),
    ({"kind": "plugin", "pairs": [["a", "b"]]}, "table T9: bases: missing required key"),
    ({"kind": "ablation", "methods": ["kd"]}, "table T9: pair: missing required key"),
    ({"kind": "teachers"}, "table T9: teachers: missing required key"),
    ({"kind": "grid", "pairs": [], "methods": ["kd"]}, "table T9: pairs: expected a non-empty list"),
    ({"kind": "grid", "pairs": [["a", "b", "c"]], "methods": ["kd"]}, r"table T9: pairs\[0\]: expected \[teacher, student\]"),
    ({"kind": "grid", "pairs": [["a", "b"]], "methods": ["kd", "kd"]}, "table T9: methods: duplicate entries kd"),
    ({"kind": "grid", "pairs": ["same"], "methods": ["kd"]}, r"table T9: pairs\[0\]: expected \[teacher, student\], got 'same': a pair group name\?"),
    ({"kind": "grid", "pairs": [["a", "b"]], "methods": ["kd"], "metric": "top2"}, "table T9: metric: unknown metric 'top2'"),
    ({"kind": "grid", "pairs": [["a", "b"]], "methods": ["kd"], "compare": "crd"}, "table T9: compare: 'crd' is not one of"),
    ({"kind": "grid", "pairs": [["a", "b"]], "methods": ["kd"], "pair": ["a", "b"]}, "table T9: pair: unknown key for a grid table"),
    ({"kind": "grid", "pairs": [["a", "b"]], "methods": ["kd"], "teacher_column": "yes"}, "table T9: teacher_column: expected true or false"),
    ({"kind": "grid", "pairs": [["a", "b"]], "methods": ["kd"], "label": "tab:x y"}, "table T9: label:"),
    ({"kind": "ablation", "pair": ["a", "b"], "methods": ["kd"], "metrics": ["top1_best", "acc"]}, r"table T9: metrics\[1\]: unknown metric 'acc'"),
    ({"kind": "plugin", "pairs": [["a", "b"]], "bases": {"kd": "kd"}}, "table T9: bases: a method appears twice: kd"),
    ("grid", "table T9: a table spec must be a mapping"),
])
def test_bad_table_specs(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        report.collect([EVAL], spec, "T9")
    with pytest.raises(ConfigError, match=needle):
        report.validate_spec(spec, "T9")


def test_spec_errors_before_reading_records(tmp_path):
    """A bad spec is reported even when the records are also bad (the spec names the key)."""
    path = _write(tmp_path / "broken.json", "{")
    with pytest.raises(ConfigError, match="table T1: pairs: missing required key"):
        report.collect([path], {"kind": "grid", "methods": ["kd"]}, "T1")


def test_validated_spec_is_a_valid_spec():
    for name, spec in SPECS.items():
        norm = report.validate_spec(spec, name)
        assert report.validate_spec(norm, name) == norm


def test_bad_published_csv(tmp_path):
    p = tmp_path / "pub.csv"
    p.write_text("teacher,student,top1\nresnet56,resnet20,70\n")
    with pytest.raises(KdsrcError, match=r"pub\.csv: published-numbers CSV misses columns 'method', 'source'"):
        report.load_published(p)
    p.write_text("teacher,student,method,top1,source\nresnet56,resnet20,kd,high,x\n")
    with pytest.raises(KdsrcError, match=r"pub\.csv: line 2: top1 must be a number"):
        report.load_published(p)
    with pytest.raises(KdsrcError, match=r"absent\.csv: published-numbers file not found"):
        report.collect([EVAL], SPECS["T1"], "T1", published=tmp_path / "absent.csv")


def test_published_csv_reference_rows():
    pub = report.load_published(PUBLISHED)
    assert pub.run("resnet32x4", "resnet8x4", "kd") == 73.33
    assert pub.run("resnet32x4", "resnet8x4", "vanilla") == 72.5
    assert pub.run("resnet32x4", "resnet8x4", "dkd") == 76.32
    assert pub.run("resnet32x4", "resnet8x4", "angularkd") is None
    assert pub.teacher("wrn_40_2") == 75.61 and pub.teacher("resnet8") is None


def test_render_needs_one_table(tmp_path):
    import pandas as pd
    a = report.collect([EVAL], SPECS["T1"], "T1")
    b = report.collect([EVAL], SPECS["T5"], "T5")
    both = pd.concat([a, b], ignore_index=True)
    with pytest.raises(KdsrcError, match="holds 2 tables"):
        report.render_latex(both, SPECS["T1"])
    assert report.render_latex(both, SPECS["T5"], table_name="T5") == report.render_latex(b, SPECS["T5"])
    with pytest.raises(KdsrcError, match=r"bad\.csv: not a metrics CSV"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        report.read_metrics_csv(tmp_path / "bad.csv")


def test_published_numbers_only_for_their_dataset(tmp_path, run_records):
    digits = [dict(r, dataset="digits") for r in run_records]
    spec = {"kind": "grid", "pairs": [["resnet32x4", "resnet8x4"]], "methods": ["kd"], "compare": "kd"}
    df = report.collect(digits, spec, "T", published=PUBLISHED)  # published_cifar100.csv
    assert df["published"].isna().all()
    assert report.collect(run_records, spec, "T", published=PUBLISHED)["published"].tolist() == [73.33]
    # a file without a dataset in its name applies to any dataset, unless told which
    other = tmp_path / "numbers.csv"
    other.write_bytes(PUBLISHED.read_bytes())
    assert report.collect(digits, spec, "T", published=other)["published"].tolist() == [73.33]
    pub = report.load_published(other, dataset="cifar100")
    assert report.collect(digits, spec, "T", published=pub)["published"].isna().all()
    # a dataset column decides per row
    with_ds = tmp_path / "mixed.csv"
    with_ds.write_text("dataset,teacher,student,method,top1,source\n"
                       "digits,resnet32x4,resnet8x4,kd,98.5,x\ncifar100,resnet32x4,resnet8x4,kd,73.33,y\n")
    assert report.collect(digits, spec, "T", published=with_ds)["published"].tolist() == [98.5]
    assert report.collect(run_records, spec, "T", published=with_ds)["published"].tolist() == [73.33]
