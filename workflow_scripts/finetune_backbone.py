import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import finetune_backbone

run(
    lambda: finetune_backbone(
        snakemake.input.images,
        snakemake.input.weights,
        snakemake.input.record,
        snakemake.params.finetune,
        snakemake.output,
        threads=snakemake.threads,
        global_layer=snakemake.params.global_layer,
        target_images=snakemake.input.get("target_images"),
    )
)
