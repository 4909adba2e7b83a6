"""kdsrc: the knowledge-distillation library behind the reproducibility pipeline.

Importable without Snakemake. Entry points: ``kdsrc.models.build_model``,
``kdsrc.data.load_dataset``, ``kdsrc.engine.train``, ``kdsrc.distillers.build_distiller``
and the ``kdsrc`` console script (``kdsrc.cli``).
"""

__version__ = "0.1.0"
