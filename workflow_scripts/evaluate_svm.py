import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import score_cell

meta = {
    "experiment": snakemake.wildcards.experiment,
    "backbone": snakemake.wildcards.backbone,
    "featureset": snakemake.wildcards.featureset,
}
run(
    lambda: score_cell(
        snakemake.input[0], snakemake.wildcards.adapter, snakemake.params.svm, meta, snakemake.output[0]
    )
)
