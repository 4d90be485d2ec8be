import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import prepare_weights

run(
    lambda: prepare_weights(
        snakemake.params.backbone,
        snakemake.input[0] if snakemake.input else None,
        snakemake.output.pth,
        snakemake.output.record,
    )
)
