"""Rule fetch_init: the pretrained weights a fine-tuned teacher starts from, sha256-verified."""

from kdsrc.dataset_facts import DATASET_FACTS
from kdsrc.jobs import job
from kdsrc.teachers import fetch_init_file

sm = snakemake  # noqa: F821  (injected by Snakemake)

with job(sm.log[0], gpu=False):
    init = sm.params.spec["init"]
    fetch_init_file(model=sm.wildcards.teacher, url=init["url"], file=init["file"],
                    out_init=sm.output.init, out_source=sm.output.source,
                    cache_dir=sm.params.cache_dir, pins_file=sm.params.pins,
                    num_classes=DATASET_FACTS[sm.wildcards.dataset].classes, log=print)
