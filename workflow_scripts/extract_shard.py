import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import extract_shard

run(
    lambda: extract_shard(
        snakemake.input.images,
        snakemake.input.weights,
        snakemake.input.record,
        snakemake.params.extract,
        dict(zip(snakemake.params.layer_keys, snakemake.output)),
        int(snakemake.wildcards.shard),
        snakemake.params.shard_size,
        threads=snakemake.threads,
        pca_models=snakemake.input.get("pca", []),
        # how the job holds the loadings, not what it computes: from the config, so no rerun on a switch
        pca_in_pass=snakemake.config["extract"]["pca_in_pass"],
    )
)
