# Reports: eval records -> metrics CSV -> LaTeX/markdown tables and figures. These rules read
# only the small eval outputs, so the tables rebuild in seconds without any weights.


rule collect:
    input:
        records=table_records,
        teachers=table_teacher_records,
    output:
        "results/metrics/{table}.csv",
    params:
        spec=table_spec,
        table="{table}",
        published="config/published_cifar100.csv",
    log:
        "logs/collect/{table}.log",
    script:
        "../workflow_scripts/collect.py"


rule render_table:
    input:
        "results/metrics/{table}.csv",
    output:
        tex=report(
            "results/tables/{table}.tex", category="Tables", caption="report/table.rst"
        ),
        md="results/tables/{table}.md",
    params:
        spec=table_spec,
    log:
        "logs/render_table/{table}.log",
    script:
        "../workflow_scripts/render_table.py"


rule plot:
    input:
        metrics="results/metrics/{table}.csv",
        logs=table_logs,
        teacher_logs=table_teacher_logs,
    output:
        bars=report(
            "results/figures/{table}_bars.png",
            category="Figures",
            caption="report/bars.rst",
        ),
        curves=report(
            "results/figures/{table}_curves.png",
            category="Figures",
            caption="report/curves.rst",
        ),
    params:
        spec=table_spec,
    log:
        "logs/plot/{table}.log",
    script:
        "../workflow_scripts/plot.py"


rule summary:
    input:
        expand("results/metrics/{table}.csv", table=sorted(PLAN.tables)),
    output:
        "results/metrics.json",
    log:
        "logs/summary.log",
    script:
        "../workflow_scripts/summary.py"


rule tables:
    input:
        table_targets(),
