# The KD reproducibility pipeline: teacher -> distillation -> evaluation -> tables.
#   snakemake --cores all --config plan=quick         # embedded dataset, CPU, minutes
#   snakemake --cores all --resources gpu=4           # the paper plan on 4 GPUs
# Targets: teachers, runs, tables (tables + figures), all (= tables). See README.
from snakemake.utils import min_version

min_version("9.19")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/teachers.smk"
include: "rules/runs.smk"
include: "rules/tables.smk"


rule all:
    default_target: True
    input:
        rules.tables.input,
