"""Rule fetch_teachers: the published checkpoint of one teacher, sha256-verified: a member of the
plan's teacher archive, or a file of its own (``url`` + ``file`` in the teacher's entry)."""

from kdsrc.dataset_facts import DATASET_FACTS
from kdsrc.jobs import job
from kdsrc.teachers import fetch_teacher, fetch_teacher_file

sm = snakemake  # noqa: F821  (injected by Snakemake)
# the dataset's classes, not a rule param: a new param would rerun every fetched teacher
num_classes = DATASET_FACTS[sm.wildcards.dataset].classes

with job(sm.log[0], gpu=False):
    spec = sm.params.spec
    if "url" in spec:
        fetch_teacher_file(model=sm.wildcards.teacher, url=spec["url"], file=spec["file"],
                           out_model=sm.output.model, out_source=sm.output.source,
                           cache_dir=sm.params.cache_dir, pins_file=sm.params.pins,
                           num_classes=num_classes, log=print)
    else:
        archive = sm.params.archive
        fetch_teacher(model=sm.wildcards.teacher, url=archive["url"],
                      archive_file=archive["file"], member=spec["member"],
                      out_model=sm.output.model, out_source=sm.output.source,
                      cache_dir=sm.params.cache_dir, pins_file=sm.params.pins,
                      num_classes=num_classes, log=print)
