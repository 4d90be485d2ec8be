import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import fit_adapter

run(lambda: fit_adapter(snakemake.input.fused, snakemake.params.adapter, snakemake.output[0]))
