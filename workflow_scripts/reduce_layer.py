import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import reduce_layer

run(
    lambda: reduce_layer(
        snakemake.input.source,
        snakemake.input.target,
        snakemake.params.reducer,
        snakemake.output[0],
        snakemake.input.get("source_manifest"),
        snakemake.input.get("target_manifest"),
    )
)
