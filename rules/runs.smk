# Distillation runs: one job per (dataset, teacher, student, method, seed), each on its own GPU
# slot (kdsrc.gpu); `--resources gpu=N` bounds how many run at once. With runs_per_gpu > 1, the
# runs of a teacher train in groups (distill_group_<n>, below).


rule pretrain_views:
    input:
        teacher=paths.TEACHER_MODEL,
    output:
        paths.VIEWS,
    params:
        config=views_config,
        data_root=PLAN.data_root,
        download=PLAN.download,
        jobs_per_gpu=JOBS_PER_GPU,
    resources:
        gpu=1,
    threads: 1
    log:
        "logs/pretrain_views/{dataset}/{teacher}/{method}/seed{seed}.log",
    script:
        "../workflow_scripts/pretrain_views.py"


rule distill:
    input:
        unpack(distill_inputs),
    output:
        final=paths.RUN_FINAL,
        eval=paths.RUN_EVAL,
        log_csv=paths.RUN_LOG,
    params:
        config=distill_config,
        ckpt_dir=distill_ckpt_dir,
        data_root=PLAN.data_root,
        download=PLAN.download,
        jobs_per_gpu=JOBS_PER_GPU,
    resources:
        gpu=1,
    threads: 1
    log:
        "logs/distill/{dataset}/{teacher}/{student}/{method}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/distill/{dataset}/{teacher}/{student}/{method}/seed{seed}.tsv"
    script:
        "../workflow_scripts/distill.py"


# --config runs_per_gpu=K (K > 1): the runs of a teacher in groups of K, each group one GPU
# process whose steps interleave on separate CUDA streams (kdsrc.engine.group). One rule per group,
# named distill_group_<n>; its outputs are exactly its members' distill outputs, spelled out
# without wildcards, so Snakemake builds those files with it rather than with `distill`.
for _n, _group in enumerate(PLAN.run_groups(RUNS_PER_GPU)):

    rule:
        name:
            f"distill_group_{_n}"
        input:
            group_inputs(_group),
        output:
            group_outputs(_group),
        params:
            members=group_members(_group),
            data_root=PLAN.data_root,
            download=PLAN.download,
            jobs_per_gpu=JOBS_PER_GPU,
        resources:
            **{"gpu": 1, **distill_requests()},
        threads: 1
        log:
            f"logs/distill_group/{_n}.log",
        script:
            "../workflow_scripts/distill_group.py"


rule runs:
    input:
        run_targets(),
