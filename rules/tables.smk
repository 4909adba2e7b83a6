# Reports: eval records -> metrics CSV -> LaTeX/markdown tables and figures. These rules read
# only the small eval outputs, so the tables rebuild in seconds without any weights.
# collect, render_table and summary run inside the Snakemake process (`run:` bodies from
# kdsrc.report.rule_jobs, in threads thanks to `force-use-threads` in the workflow profiles):
# each is milliseconds of work next to the ~0.7 s a separate interpreter costs to start. Without
# that setting Snakemake spawns one subprocess per `run:` job (slower, same result). plot draws
# figures, real CPU work: a script, so the tables' figures draw in parallel processes.

localrules:
    collect,
    render_table,
    plot,
    summary,
    tables,


rule collect:
    input:
        records=table_records,
        teachers=table_teacher_records,
        published=paths.PUBLISHED,
    output:
        paths.TABLE_METRICS,
    params:
        spec=table_spec,
        table="{table}",
    log:
        "logs/collect/{table}.log",
    run:
        from kdsrc.report.rule_jobs import collect_job

        collect_job(input.records, input.teachers, output[0], spec=params.spec,
                    table=params.table, published=input.published, log=log[0])


rule render_table:
    input:
        paths.TABLE_METRICS,
    output:
        tex=report(
            paths.TABLE_TEX, category="Tables", caption="report/table.rst"
        ),
        md=paths.TABLE_MD,
    params:
        spec=table_spec,
    log:
        "logs/render_table/{table}.log",
    run:
        from kdsrc.report.rule_jobs import render_table_job

        render_table_job(input[0], spec=params.spec, tex=output.tex, md=output.md, log=log[0])


rule plot:
    input:
        metrics=paths.TABLE_METRICS,
        logs=table_logs,
        teacher_logs=table_teacher_logs,
    output:
        bars=report(
            paths.FIGURE_BARS,
            category="Figures",
            caption="report/bars.rst",
        ),
        curves=report(
            paths.FIGURE_CURVES,
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
        expand(paths.TABLE_METRICS, table=sorted(PLAN.tables)),
    output:
        paths.METRICS_JSON,
    log:
        "logs/summary.log",
    run:
        from kdsrc.report.rule_jobs import summary_job

        summary_job(input, output[0], log=log[0])


rule tables:
    input:
        table_targets(),
