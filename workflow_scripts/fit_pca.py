import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import fit_pca

run(lambda: fit_pca(snakemake.input.sample, snakemake.input.images, snakemake.params.reducer, snakemake.output[0],
                    threads=snakemake.threads))
