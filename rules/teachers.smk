# Teachers: download the published checkpoint (sha256-verified) or pretrain with `vanilla`,
# evaluate against the published accuracy, optionally precompute the exact teacher cache.


rule fetch_teachers:
    output:
        model="results/teachers/{dataset}/{teacher}/model.pt",
        source="results/teachers/{dataset}/{teacher}/source.json",
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
        model="results/teachers/{dataset}/{teacher}/model.pt",
        source="results/teachers/{dataset}/{teacher}/source.json",
        log_csv="results/eval/teachers/{dataset}/{teacher}.csv",
    wildcard_constraints:
        teacher=PRETRAIN_TEACHERS,
    params:
        config=teacher_pretrain_config,
        run_dir="results/teachers/{dataset}/{teacher}/pretrain",
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


rule evaluate_teacher:
    input:
        model="results/teachers/{dataset}/{teacher}/model.pt",
    output:
        "results/eval/teachers/{dataset}/{teacher}.json",
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
        model="results/teachers/{dataset}/{teacher}/model.pt",
    output:
        directory("results/cache/{dataset}/{teacher}"),
    params:
        data_root=PLAN.data_root,
        download=PLAN.download,
        jobs_per_gpu=JOBS_PER_GPU,
    resources:
        gpu=1,
    threads: 1
    log:
        "logs/teacher_cache/{dataset}/{teacher}.log",
    benchmark:
        "logs/benchmarks/teacher_cache/{dataset}/{teacher}.tsv"
    script:
        "../workflow_scripts/teacher_cache.py"


rule teachers:
    input:
        teacher_targets(),
