"""Rule teacher_cache: the teacher's outputs on the variants of its cache scheme (the output
folder's name: ``exact``, every crop/flip variant; ``views-K``, K fixed views per image;
``autoaugment-K``, K stored augmented copies of the training set, made here)."""

from kdsrc.cache import build_teacher_cache
from kdsrc.cache.layout import scheme_views, stored_views
from kdsrc.cache.view_images import draw_views
from kdsrc.data import load_dataset
from kdsrc.engine import Progress
from kdsrc.jobs import job
from kdsrc.models import load_teacher
from kdsrc.models.upsample import upsample_inputs
from kdsrc.plan import load_plan

sm = snakemake  # noqa: F821  (injected by Snakemake)
scheme = sm.wildcards.scheme
# a teacher trained at an upsampled size sees its cache's images as it sees a run's; read from
# the plan here rather than passed as a param, which would rebuild every existing cache
upsample = load_plan(sm.config["plan"], cache_dir=".snakemake/kdsrc-plans").teacher_upsample(
    sm.wildcards.teacher)

with job(sm.log[0], threads=sm.threads, jobs_per_gpu=sm.params.jobs_per_gpu) as device:
    progress = Progress()
    data = load_dataset(sm.wildcards.dataset, root=sm.params.data_root,
                        download=sm.params.download)
    teacher = upsample_inputs(load_teacher(sm.wildcards.teacher, sm.input.model,
                                           num_classes=data.num_classes), upsample)
    k = stored_views(scheme)
    build_teacher_cache(teacher, data, sm.output[0], device=device,
                        teacher_name=sm.wildcards.teacher,
                        views=None if k else scheme_views(scheme),
                        view_images=draw_views(data, k, progress) if k else None,
                        progress=progress)
