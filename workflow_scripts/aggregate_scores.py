import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import aggregate_scores

run(lambda: aggregate_scores(
    snakemake.input.scores, snakemake.output.csv, snakemake.output.tables,
    manifests={"source": snakemake.input.source_manifest, "target": snakemake.input.target_manifest},
    center=snakemake.params.center, selections=snakemake.input.selections,
    global_layer=snakemake.params.global_layer, pca_models=snakemake.input.get("pca", []),
    capped=snakemake.params.capped))
