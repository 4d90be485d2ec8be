import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import fit_tca

run(lambda: fit_tca(snakemake.input.fused, snakemake.params.tca, snakemake.output[0]))
