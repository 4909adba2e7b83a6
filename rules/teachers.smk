# Teachers: download the published checkpoint (sha256-verified), pretrain with `vanilla`, or
# fine-tune from pretrained weights (downloaded, sha256-verified, or pretrained here first);
# evaluate against the published accuracy, optionally precompute the exact teacher cache.


rule fetch_teachers:
    output:
        model=paths.TEACHER_MODEL,
        source=paths.TEACHER_SOURCE,
    wildcard_constraints:
        teacher=DOWNLOAD_TEACHERS,
    params:
        spec=teacher_source,
        archive=PLAN.data.get("teacher_archive", {}),
        pins="config/teacher_hashes.yaml",
        cache_dir=f"{PLAN.data_root}/downloads",
    log:
        "logs/fetch_teachers/{dataset}/{teacher}.log",
    script:
        "../workflow_scripts/fetch_teacher.py"


rule pretrain_teacher:
    output:
        model=paths.TEACHER_MODEL,
        source=paths.TEACHER_SOURCE,
        log_csv=paths.TEACHER_LOG,
    wildcard_constraints:
        teacher=PRETRAIN_TEACHERS,
    params:
        config=teacher_pretrain_config,
        run_dir=paths.TEACHER_PRETRAIN_DIR,
        data_root=PLAN.data_root,
        download=PLAN.download,
        jobs_per_gpu=JOBS_PER_GPU,
    resources:
        gpu=1,
    # usually alone (every distill job waits for it): both cores of a small CPU box
    threads: 2
    log:
        "logs/pretrain_teacher/{dataset}/{teacher}.log",
    benchmark:
        "logs/benchmarks/pretrain_teacher/{dataset}/{teacher}.tsv"
    script:
        "../workflow_scripts/pretrain_teacher.py"


rule fetch_init:
    output:
        init=paths.TEACHER_INIT,
        source=paths.TEACHER_INIT_SOURCE,
    wildcard_constraints:
        teacher=INIT_URL_TEACHERS,
    params:
        spec=teacher_source,
        pins="config/teacher_hashes.yaml",
        cache_dir=f"{PLAN.data_root}/downloads",
    log:
        "logs/fetch_init/{dataset}/{teacher}.log",
    script:
        "../workflow_scripts/fetch_init.py"


rule pretrain_init:
    output:
        init=paths.TEACHER_INIT,
        source=paths.TEACHER_INIT_SOURCE,
        log_csv=paths.TEACHER_INIT_LOG,
    wildcard_constraints:
        teacher=INIT_PRETRAIN_TEACHERS,
    params:
        config=init_pretrain_config,
        run_dir=paths.TEACHER_INIT_DIR,
        data_root=PLAN.data_root,
        download=PLAN.download,
        jobs_per_gpu=JOBS_PER_GPU,
    resources:
        gpu=1,
    threads: 2
    log:
        "logs/pretrain_init/{dataset}/{teacher}.log",
    script:
        "../workflow_scripts/pretrain_init.py"


rule finetune_teacher:
    input:
        init=paths.TEACHER_INIT,
        init_source=paths.TEACHER_INIT_SOURCE,
    output:
        model=paths.TEACHER_MODEL,
        source=paths.TEACHER_SOURCE,
        log_csv=paths.TEACHER_LOG,
    wildcard_constraints:
        teacher=FINETUNE_TEACHERS,
    params:
        config=teacher_pretrain_config,
        run_dir=paths.TEACHER_FINETUNE_DIR,
        data_root=PLAN.data_root,
        download=PLAN.download,
        jobs_per_gpu=JOBS_PER_GPU,
    resources:
        gpu=1,
    threads: 2
    log:
        "logs/finetune_teacher/{dataset}/{teacher}.log",
    benchmark:
        "logs/benchmarks/finetune_teacher/{dataset}/{teacher}.tsv"
    script:
        "../workflow_scripts/finetune_teacher.py"


rule evaluate_teacher:
    input:
        model=paths.TEACHER_MODEL,
        published=paths.PUBLISHED,
    output:
        paths.TEACHER_EVAL,
    params:
        spec=teacher_source,
        data_root=PLAN.data_root,
        download=PLAN.download,
        jobs_per_gpu=JOBS_PER_GPU,
    resources:
        gpu=1,
    threads: 1
    log:
        "logs/evaluate_teacher/{dataset}/{teacher}.log",
    script:
        "../workflow_scripts/evaluate_teacher.py"


rule teacher_cache:
    input:
        model=paths.TEACHER_MODEL,
    output:
        directory(paths.TEACHER_CACHE),
    params:
        data_root=PLAN.data_root,
        download=PLAN.download,
        jobs_per_gpu=JOBS_PER_GPU,
    resources:
        gpu=1,
    threads: 1
    log:
        "logs/teacher_cache/{dataset}/{teacher}/{scheme}.log",
    benchmark:
        "logs/benchmarks/teacher_cache/{dataset}/{teacher}/{scheme}.tsv"
    script:
        "../workflow_scripts/teacher_cache.py"


rule teachers:
    input:
        teacher_targets(),
