import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import reduce_pool_layer

run(lambda: reduce_pool_layer(snakemake.input[0], snakemake.params.reducer, snakemake.output[0]))
