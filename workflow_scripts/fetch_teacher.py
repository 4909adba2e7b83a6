"""Rule fetch_teachers: the published checkpoint of one teacher, sha256-verified."""

from kdsrc.jobs import job
from kdsrc.teachers import fetch_teacher

sm = snakemake  # noqa: F821  (injected by Snakemake)

with job(sm.log[0], gpu=False):
    archive = sm.params.archive
    fetch_teacher(model=sm.wildcards.teacher, url=archive["url"], archive_file=archive["file"],
                  member=sm.params.spec["member"], out_model=sm.output.model,
                  out_source=sm.output.source, cache_dir=sm.params.cache_dir,
                  pins_file=sm.params.pins, log=print)
