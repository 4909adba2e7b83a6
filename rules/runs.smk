# Distillation runs: one job per (dataset, teacher, student, method, seed), each on its own GPU
# slot (kdsrc.gpu); `--resources gpu=N` bounds how many run at once.


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


rule runs:
    input:
        run_targets(),
