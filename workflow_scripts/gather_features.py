import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import gather_shards

keys = snakemake.params.layer_keys
shards = list(snakemake.input.shards)
run(
    lambda: gather_shards(
        snakemake.input.images,
        snakemake.input.record,
        snakemake.params.extract,
        [dict(zip(keys, shards[i:i + len(keys)])) for i in range(0, len(shards), len(keys))],
        dict(zip(keys, snakemake.output)),
    )
)
