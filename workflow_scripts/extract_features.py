import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import extract_layer

run(
    lambda: extract_layer(
        snakemake.input.images,
        snakemake.input.weights,
        snakemake.input.record,
        snakemake.wildcards.layer,
        snakemake.params.extract,
        snakemake.output[0],
        threads=snakemake.threads,
    )
)
