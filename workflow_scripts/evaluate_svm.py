import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import score_featureset

meta = {
    "experiment": snakemake.wildcards.experiment,
    "backbone": snakemake.wildcards.backbone,
    "featureset": snakemake.wildcards.featureset,
}
run(
    lambda: score_featureset(
        dict(snakemake.input.items()), snakemake.params.adapters, snakemake.params.svm, meta, snakemake.output[0]
    )
)
