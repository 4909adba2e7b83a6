"""Rule evaluate_teacher: test top-1/top-5 of a teacher, next to its published number."""

from kdsrc.engine import atomic_write_json, evaluate_checkpoint
from kdsrc.jobs import job
from kdsrc.plan import load_plan
from kdsrc.report.published import load_published

sm = snakemake  # noqa: F821  (injected by Snakemake)
# a teacher is evaluated as it was trained: a trained teacher at its own recipe's image size,
# upsampling and normalisation, a downloaded one at the plan's; read here rather than passed as
# a param, which would re-evaluate every existing teacher
plan = load_plan(sm.config["plan"], cache_dir=".snakemake/kdsrc-plans")
teacher = sm.wildcards.teacher
solver = (plan.teacher_config(teacher)["solver"] if teacher in plan.trained_teachers()
          else plan.data.get("solver") or {})
looks = {k: solver[k] for k in ("image_size", "crop_pct", "normalize", "upsample")
         if solver.get(k) is not None}

with job(sm.log[0], threads=sm.threads, jobs_per_gpu=sm.params.jobs_per_gpu) as device:
    res = evaluate_checkpoint(sm.wildcards.teacher, sm.input.model, sm.wildcards.dataset,
                              data_root=sm.params.data_root, download=sm.params.download,
                              device=device, solver=looks)
    published = load_published(sm.input.published).teacher(sm.wildcards.teacher,
                                                            sm.wildcards.dataset)
    res.update(dataset=sm.wildcards.dataset, teacher=sm.wildcards.teacher,
               source=sm.params.spec["source"], published_top1=published,
               delta=None if published is None else round(res["top1"] - published, 4))
    print(f"{sm.wildcards.teacher}: top1 {res['top1']:.2f} (published {published})")
    atomic_write_json(res, sm.output[0])
