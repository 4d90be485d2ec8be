import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import prepare_images

run(
    lambda: prepare_images(
        snakemake.wildcards.domain,
        snakemake.params.images,
        snakemake.output.manifest,
        snakemake.output.images,
        memory_mb=snakemake.resources.mem_mb,
    )
)
