import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import evaluate_svm

meta = {
    "experiment": snakemake.wildcards.experiment,
    "backbone": snakemake.wildcards.backbone,
    "featureset": snakemake.wildcards.featureset,
}
features = {k: v for k, v in snakemake.input.items() if k != "global_pair"}  # read through "none"
run(
    lambda: evaluate_svm(
        features,
        snakemake.params.adapters,
        snakemake.params.svm,
        meta,
        snakemake.output.scores,
        predictions=snakemake.output.predictions,
        selection=snakemake.params.selection,
        label_shift=snakemake.params.label_shift,
    )
)
