import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import summarize

run(lambda: print(summarize(snakemake.input, snakemake.output.csv, snakemake.output.tables), file=sys.__stdout__))
