import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import select_configuration

run(
    lambda: select_configuration(
        snakemake.input.scores,
        snakemake.input.predictions,
        snakemake.input.source_manifest,
        snakemake.input.target_manifest,
        snakemake.params.select,
        snakemake.output,
        target_images=snakemake.input.target_images,
    )
)
