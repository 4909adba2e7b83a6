"""Rule teacher_cache: the teacher's outputs on the variants of its cache scheme (the output
folder's name: ``exact``, every crop/flip variant; ``views-K``, K fixed views per image)."""

from kdsrc.cache import build_teacher_cache
from kdsrc.cache.layout import scheme_views
from kdsrc.data import load_dataset
from kdsrc.engine import Progress
from kdsrc.jobs import job
from kdsrc.models import load_teacher

sm = snakemake  # noqa: F821  (injected by Snakemake)

with job(sm.log[0], threads=sm.threads, jobs_per_gpu=sm.params.jobs_per_gpu) as device:
    data = load_dataset(sm.wildcards.dataset, root=sm.params.data_root,
                        download=sm.params.download)
    teacher = load_teacher(sm.wildcards.teacher, sm.input.model, num_classes=data.num_classes)
    build_teacher_cache(teacher, data, sm.output[0], device=device,
                        teacher_name=sm.wildcards.teacher,
                        views=scheme_views(sm.wildcards.scheme), progress=Progress())
